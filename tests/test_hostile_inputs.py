"""Fuzz suite: every loader, fed damaged and hostile files, either loads or raises the project's
own error naming the file, within a time bound and a memory bound that the test enforces.

Loaders: checkpoints (our .safetensors: the shipped model; official .pkl: the shared fixture),
datasets (zip and folder), the viewer state (JSON and PNG, through the command line's --state
boundary) and camera JSON files (training.dataset_tool). Inputs: the real files truncated at many
offsets, with random byte flips (fixed seeds), and crafted structures: shared references, deep
nesting, huge declared sizes and indices.

Bounds: each case runs with the address space limited to what the process uses plus
MEMORY_BOUND (RLIMIT_AS) and an alarm after TIME_BOUND_S. They are hang / blow-up detectors
(the hostile cases used to take exponential time or ask for hundreds of GB), not speed tests:
a case normally takes milliseconds to a second.
"""
from __future__ import annotations

import contextlib
import io
import json
import pickle
import random
import resource
import signal
import struct
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from model import pkl_import
from training import dataset_tool
from training.dataset import DatasetError, ImageFolderDataset

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "portrait.safetensors"
TIME_BOUND_S = 20
MEMORY_BOUND = 1 << 30           # extra address space a case may take
CHECKPOINT_ERRORS = (model.CheckpointError, pkl_import.PklImportError)


class _Hang(BaseException):
    """Raised by the alarm: a case ran past TIME_BOUND_S (BaseException: no loader may catch it)."""


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


@contextlib.contextmanager
def bounded(seconds: float = TIME_BOUND_S):
    """Run the block under the memory and time bounds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + MEMORY_BOUND
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def alarm(signum, frame):
        raise _Hang(f"ran longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def run_case(load, path: Path, errors, name: str = None) -> str:
    """'loaded' or 'refused'; anything else (another exception type, a message that does not name
    the file or is not one line, a memory error reported as a refusal, a hang) fails the test."""
    start = time.perf_counter()
    try:
        with bounded():
            load(path)
        outcome = "loaded"
    except errors as exc:
        text = str(exc)
        assert (name or str(path)) in text, f"{path}: the error does not name the file: {text}"
        assert "\n" not in text.strip(), f"{path}: error is not one line: {text!r}"
        assert "MemoryError" not in text, f"{path}: the memory bound was hit: {text}"
        outcome = "refused"
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"{path}: took {elapsed:.1f} s"
    return outcome


def test_the_bounds_catch_a_blow_up_and_a_hang():
    """The harness itself can fail: an allocation beyond the bound and an endless loop."""
    with pytest.raises((MemoryError, RuntimeError)):
        with bounded():
            torch.ones(MEMORY_BOUND // 2, dtype=torch.float64)       # 4 GB > the bound
    with pytest.raises(_Hang):
        with bounded(seconds=0.2):
            while True:
                pass
    torch.ones(1 << 20)                                                # and the limits are lifted


def truncations(size: int, count: int, seed: int):
    """Cut points: the first bytes one by one, then spread over the file (fixed seed)."""
    rng = random.Random(seed)
    cuts = list(range(0, min(size, 24)))
    cuts += sorted(rng.sample(range(24, size), min(count, size - 24)))
    return cuts


def flipped(data: bytes, seed: int, flips: int = 1, region: int = None) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(region or len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load_checkpoint(path):
    return model.load(path)


# ------------------------------------------------------------------------------------------------
# Our safetensors: the shipped model


def _safetensors_header_size(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def test_shipped_model_truncated_and_flipped(tmp_path):
    data = SHIPPED.read_bytes()
    header = _safetensors_header_size(data)
    outcomes = []
    for cut in truncations(len(data), 40, seed=1):
        path = write(tmp_path, f"cut{cut}.safetensors", data[:cut])
        outcomes.append(run_case(load_checkpoint, path, CHECKPOINT_ERRORS))
    assert set(outcomes) == {"refused"}                  # a cut file never loads
    for seed in range(24):                               # flips in the header (JSON, config, offsets)
        path = write(tmp_path, f"hflip{seed}.safetensors", flipped(data, seed, 1 + seed % 3, region=header))
        outcomes.append(run_case(load_checkpoint, path, CHECKPOINT_ERRORS))
    for seed in range(4):                                # flips in the weights: still a loadable file
        path = write(tmp_path, f"wflip{seed}.safetensors", data[:header] + flipped(data[header:], seed, 8))
        assert run_case(load_checkpoint, path, CHECKPOINT_ERRORS) == "loaded"


def _with_config(data: bytes, edit) -> bytes:
    """The shipped file with its G_ema config JSON edited (header rewritten, tensors kept)."""
    from safetensors.torch import load, save
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8:8 + n])["__metadata__"]
    cfg = json.loads(meta["config.G_ema"])
    edit(cfg)
    meta["config.G_ema"] = cfg if isinstance(cfg, str) else json.dumps(cfg)
    return save(load(data), metadata=meta)


@pytest.mark.parametrize("name, edit", [
    ("w_dim", lambda c: c.update(w_dim=200_000)),
    ("z_dim", lambda c: c.update(z_dim=10 ** 12)),
    ("negative", lambda c: c.update(c_dim=-5)),
    ("resolution", lambda c: c.update(img_resolution=1 << 20)),
    ("channels", lambda c: c["backbone"].update(channel_max=4096, channel_base=1 << 24)),
    ("sr_widths", lambda c: c["superres"].update(channels=[1_000_000, 1_000_000])),
    ("samples", lambda c: c["rendering"].update(depth_resolution=10 ** 9)),
    ("type", lambda c: c.update(w_dim="512")),
    ("nan", lambda c: c.update(c_scale=float("nan"))),
    ("huge_float", lambda c: c["rendering"].update(box_warp=1e308)),
])
def test_absurd_configs_are_refused_before_building(tmp_path, name, edit):
    path = write(tmp_path, f"{name}.safetensors", _with_config(SHIPPED.read_bytes(), edit))
    start = time.perf_counter()
    assert run_case(load_checkpoint, path, CHECKPOINT_ERRORS) == "refused"
    assert time.perf_counter() - start < TIME_BOUND_S


def test_crafted_safetensors_headers(tmp_path):
    data = SHIPPED.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    deep = "[" * 100_000 + "]" * 100_000
    cases = {"huge_length": struct.pack("<Q", 1 << 60) + data[8:]}
    meta = dict(header["__metadata__"], **{"config.G_ema": deep})
    body = json.dumps(dict(header, __metadata__=meta)).encode()
    cases["deep_config"] = struct.pack("<Q", len(body)) + body + data[8 + n:]
    big = dict(header)
    key = next(k for k in big if k != "__metadata__")
    big[key] = dict(big[key], shape=[1 << 40, 1 << 20])
    body = json.dumps(big).encode()
    cases["huge_tensor"] = struct.pack("<Q", len(body)) + body + data[8 + n:]
    for name, nets in (("no_nets", None), ("bad_nets", "[G_ema"), ("int_nets", "5"), ("odd_nets", '["x"]')):
        meta = {k: v for k, v in header["__metadata__"].items() if k != "nets"}
        if nets is not None:
            meta["nets"] = nets
        body = json.dumps(dict(header, __metadata__=meta)).encode()
        cases[name] = struct.pack("<Q", len(body)) + body + data[8 + n:]
    for name, content in cases.items():
        assert run_case(load_checkpoint, write(tmp_path, f"{name}.safetensors", content),
                        CHECKPOINT_ERRORS) == "refused", name


# ------------------------------------------------------------------------------------------------
# Fitted scenes (model.scene: what the viewer and the exports open besides generators)


def test_scene_files_truncated_flipped_and_absurd(tmp_path):
    from model import scene
    cfg = scene.SSOConfig(field=scene.FieldConfig(plane_resolution=8, plane_channels=4, decoder_hidden=16,
                                                  decoder_fourier=2))
    torch.manual_seed(0)
    good = tmp_path / "scene.safetensors"
    scene.save_checkpoint(good, scene.build_field(cfg.field), cfg, step=1)
    load = lambda p: scene.load_scene(p)
    assert run_case(load, good, scene.SSOError) == "loaded"
    data = good.read_bytes()
    header = _safetensors_header_size(data)
    for cut in truncations(len(data), 20, seed=7):
        assert run_case(load, write(tmp_path, f"cut{cut}.safetensors", data[:cut]), scene.SSOError) == "refused"
    for seed in range(20):
        run_case(load, write(tmp_path, f"flip{seed}.safetensors", flipped(data, seed, 1 + seed % 3, region=header)),
                 scene.SSOError)
    from safetensors.torch import load as st_load, save as st_save
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8:8 + n])["__metadata__"]
    for name, field in [("plane_resolution", 1 << 20), ("plane_channels", 10 ** 9), ("voxel_resolution", -3),
                        ("decoder_fourier_scale", float("inf")), ("repr", "octree")]:
        config = json.loads(meta["config"])
        config["field"][name] = field
        content = st_save(st_load(data), metadata=dict(meta, config=json.dumps(config)))
        assert run_case(load, write(tmp_path, f"{name}.safetensors", content), scene.SSOError) == "refused", name


# ------------------------------------------------------------------------------------------------
# Official pickles: the shared fixture and crafted snapshots


def test_official_pickle_truncated_and_flipped(tmp_path, fixture_dir):
    data = (fixture_dir / "tiny128.pkl").read_bytes()
    for cut in truncations(len(data), 12, seed=2):
        path = write(tmp_path, f"cut{cut}.pkl", data[:cut])
        assert run_case(load_checkpoint, path, CHECKPOINT_ERRORS) == "refused"
    # flips where the structure is (opcodes, keys, init kwargs): the first 64 KiB
    for seed in range(6):
        path = write(tmp_path, f"flip{seed}.pkl", flipped(data, seed, 2, region=1 << 16))
        run_case(load_checkpoint, path, CHECKPOINT_ERRORS)


@contextlib.contextmanager
def official_globals():
    """Stand-ins registered under the official module name, so `pickle.dumps` writes the same
    global reference as a real snapshot (`torch_utils.persistence._reconstruct_persistent_obj`)."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called: the files are only written here")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    root, sub = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    sub._reconstruct_persistent_obj = _reconstruct_persistent_obj
    root.persistence = sub
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": root, "torch_utils.persistence": sub})
    try:
        yield _reconstruct_persistent_obj
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Persistent:
    """Pickles as an official persistent object with the given class name and state."""

    def __init__(self, fn, class_name, state):
        self.fn, self.class_name, self.state = fn, class_name, state

    def __reduce__(self):
        return self.fn, (dict(type="class", version=6, module_src="", class_name=self.class_name,
                              state=self.state),)


def _module_state(**extra):
    return dict({"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_args": (), "_init_kwargs": {}}, **extra)


def _shared_list(depth: int = 40):
    x = []
    for _ in range(depth):
        x = [x, x]
    return x


def _crafted_pickles(fn) -> dict:
    """name -> bytes of a hostile snapshot (each a few KB at most)."""
    snap = lambda G: pickle.dumps(dict(G=G, D=None, G_ema=G, training_set_kwargs={}, augment_pipe=None), 4)
    gen = lambda **state: _Persistent(fn, "TriPlaneGenerator", _module_state(**state))
    leaf = _Persistent(fn, "FullyConnectedLayer", _module_state())
    shared_modules = leaf
    for _ in range(40):                                 # a module graph of 2^40 paths
        shared_modules = _Persistent(fn, "SynthesisLayer", _module_state(_modules={"a": shared_modules,
                                                                                    "b": shared_modules}))
    nested = leaf
    for _ in range(pkl_import.MAX_DEPTH + 10):
        nested = _Persistent(fn, "SynthesisLayer", _module_state(_modules={"m": nested}))
    deep = b"\x80\x04" + b"(" * 200_000 + b"l" * 200_000 + b"."
    return {
        "shared_attr": snap(gen(attr=_shared_list())),
        "shared_kwargs": snap(gen(_init_kwargs={"rendering_kwargs": _shared_list()})),
        "shared_training_set": pickle.dumps(dict(G=None, D=None, G_ema=None, augment_pipe=None,
                                                 training_set_kwargs=_shared_list()), 4),
        "shared_modules": snap(gen(_modules={"backbone": shared_modules})),
        "deep_modules": snap(gen(_modules={"backbone": nested})),
        "deep_lists": deep,
        "deep_in_state": snap(gen(attr=json.loads("[" * 500 + "]" * 500))),
        "memo_index": b"\x80\x04N" + b"r" + struct.pack("<I", 0x7FFFFFFF) + b"}q\x00.",
        "huge_frame": b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"N.",
        "huge_bytes": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc.",
        "huge_long": b"\x80\x04\x8b" + struct.pack("<i", 1 << 30) + b"\x01.",
        "huge_tensor_view": _stride_zero_tensor_snapshot(snap, gen),
    }


def _stride_zero_tensor_snapshot(snap, gen) -> bytes:
    """A parameter declared [2^20, 2^20] with stride 0 over one stored element."""
    data = snap(gen(_parameters={"w": torch.zeros(1)}))
    # the tensor's size and stride tuples in the pickle: (1,) and (1,) -> (2^20, 2^20) and (0, 0)
    return data.replace(b"K\x01\x85", b"J\x00\x00\x10\x00J\x00\x00\x10\x00\x86", 1) \
               .replace(b"K\x01\x85", b"K\x00K\x00\x86", 1)


def test_crafted_pickles(tmp_path):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))          # pickling the deep module chain recurses
    try:
        with official_globals() as fn:
            cases = _crafted_pickles(fn)
    finally:
        sys.setrecursionlimit(limit)
    for name, data in cases.items():
        assert len(data) < 1 << 20, name
        path = write(tmp_path, f"{name}.pkl", data)
        assert run_case(load_checkpoint, path, CHECKPOINT_ERRORS) == "refused", name


def test_shared_reference_pickle_fails_fast(tmp_path):
    """The issue's example: x = [x, x] forty times inside a network's state, a few hundred bytes."""
    with official_globals() as fn:
        data = pickle.dumps(dict(G=None, D=None, augment_pipe=None, training_set_kwargs={},
                                 G_ema=_Persistent(fn, "TriPlaneGenerator", _module_state(x=_shared_list()))), 4)
    assert len(data) < 1000
    path = write(tmp_path, "shared.pkl", data)
    with pytest.raises(pkl_import.PklImportError, match=r"shared\.pkl.*expands far beyond"):
        with bounded():
            model.load(path)


# ------------------------------------------------------------------------------------------------
# Datasets (zip and folder)


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory) -> Path:
    from training.synthetic import generate_dataset
    dest = tmp_path_factory.mktemp("ds") / "ds.zip"
    generate_dataset(dest, count=4, resolution=16, progress=False, supersample=1)
    return dest


def load_dataset(path):
    ds = ImageFolderDataset(path, validate="full")
    for i in range(len(ds)):
        ds[i]
    ds.close()


def _unzip(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(src) as z:
        z.extractall(dest)
    return dest


def _zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _png_header_bomb() -> bytes:
    """A PNG whose header declares 100000 x 100000 pixels (a few dozen bytes)."""
    import zlib
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def test_dataset_zip_truncated_and_flipped(tmp_path, dataset_zip):
    data = dataset_zip.read_bytes()
    assert run_case(load_dataset, dataset_zip, DatasetError) == "loaded"
    for cut in truncations(len(data), 30, seed=3):
        run_case(load_dataset, write(tmp_path, f"cut{cut}.zip", data[:cut]), DatasetError)
    for seed in range(30):
        run_case(load_dataset, write(tmp_path, f"flip{seed}.zip", flipped(data, seed, 1 + seed % 4)), DatasetError)


def test_dataset_folder_damaged(tmp_path, dataset_zip):
    for seed in range(8):
        folder = _unzip(dataset_zip, tmp_path / f"f{seed}")
        victims = sorted(p for p in folder.rglob("*") if p.is_file())
        victim = victims[seed % len(victims)]
        content = victim.read_bytes()
        victim.write_bytes(content[:len(content) // 2] if seed % 2 else flipped(content, seed, 3))
        run_case(load_dataset, folder, DatasetError)


def test_crafted_datasets(tmp_path, dataset_zip):
    with zipfile.ZipFile(dataset_zip) as z:
        members = {n: z.read(n) for n in z.namelist()}
    labels = json.loads(members["dataset.json"])["labels"]
    cases = {
        "deep_labels": dict(members, **{"dataset.json": b'{"labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}),
        "huge_label": dict(members, **{"dataset.json": json.dumps(
            {"labels": [[labels[0][0], [1e308] * 25]] + labels[1:]}).encode()}),
        "nan_label": dict(members, **{"dataset.json": json.dumps(
            {"labels": [[labels[0][0], [float("nan")] * 25]] + labels[1:]}).encode()}),
        "long_label": dict(members, **{"dataset.json": json.dumps(
            {"labels": [[labels[0][0], [0.0] * 1_000_000]] + labels[1:]}).encode()}),
        "png_bomb": dict(members, **{labels[0][0]: _png_header_bomb()}),
    }
    for name, content in cases.items():
        path = write(tmp_path, f"{name}.zip", _zip_bytes(content))
        assert run_case(load_dataset, path, DatasetError) == "refused", name
        folder = tmp_path / name
        for member, data in content.items():
            (folder / member).parent.mkdir(parents=True, exist_ok=True)
            (folder / member).write_bytes(data)
        assert run_case(load_dataset, folder, DatasetError) == "refused", name


# ------------------------------------------------------------------------------------------------
# Viewer state (JSON and PNG), through the command line's --state boundary


@pytest.fixture(scope="module")
def state_files(tmp_path_factory):
    from app import state as S
    folder = tmp_path_factory.mktemp("state")
    st = S.ViewerState(seed=7, trunc_psi=0.5, yaw=12.0)
    (folder / "view.json").write_text(st.to_json())
    from app.export import save_png
    save_png(np.zeros((16, 16, 3), np.uint8), folder / "view.png", {"seed": 7},
             extra_text={S.PNG_STATE_KEY: st.to_json(indent=None)})
    return folder


def load_state(path):
    from app.cli import _load_state_file
    _load_state_file(str(path))


def test_state_json_truncated_flipped_crafted(tmp_path, state_files):
    data = (state_files / "view.json").read_bytes()
    assert run_case(load_state, state_files / "view.json", ValueError) == "loaded"
    for cut in truncations(len(data), 20, seed=4):
        run_case(load_state, write(tmp_path, f"cut{cut}.json", data[:cut]), (ValueError, FileNotFoundError))
    for seed in range(30):
        run_case(load_state, write(tmp_path, f"flip{seed}.json", flipped(data, seed, 1 + seed % 3)), ValueError)
    crafted = {
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "deep_field": b'{"seed": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "huge_number": b'{"yaw": 1e308}',
        "huge_int": b'{"seed": ' + b"9" * 5000 + b"}",
        "nan": b'{"trunc_psi": NaN}',
        "huge_string": b'{"render_type": "' + b"x" * 5_000_000 + b'"}',
        "binary": bytes(range(256)) * 16,
    }
    for name, content in crafted.items():
        run_case(load_state, write(tmp_path, f"{name}.json", content), ValueError)


def test_state_png_truncated_and_flipped(tmp_path, state_files):
    data = (state_files / "view.png").read_bytes()
    assert run_case(load_state, state_files / "view.png", ValueError) == "loaded"
    for cut in truncations(len(data), 20, seed=5):
        run_case(load_state, write(tmp_path, f"cut{cut}.png", data[:cut]), (ValueError, FileNotFoundError))
    for seed in range(30):
        run_case(load_state, write(tmp_path, f"flip{seed}.png", flipped(data, seed, 1 + seed % 3)), ValueError)
    run_case(load_state, write(tmp_path, "bomb.png", _png_header_bomb()), ValueError)


# ------------------------------------------------------------------------------------------------
# Camera JSON files (training.dataset_tool)


def load_camera_file(path):
    cameras = dataset_tool.load_cameras(path)
    for key, value in cameras.items():
        dataset_tool.parse_camera(value, (64, 64), where=f"{path}: camera of {key!r}")


def test_camera_json_truncated_flipped_crafted(tmp_path, dataset_zip):
    with zipfile.ZipFile(dataset_zip) as z:
        labels = json.loads(z.read("dataset.json"))["labels"]
    cams = {name: {"cam2world": label[:16], "intrinsics": label[16:]} for name, label in labels}
    good = write(tmp_path, "cams.json", json.dumps(cams).encode())
    assert run_case(load_camera_file, good, DatasetError) == "loaded"
    data = good.read_bytes()
    for cut in truncations(len(data), 20, seed=6):
        run_case(load_camera_file, write(tmp_path, f"cut{cut}.json", data[:cut]), DatasetError)
    for seed in range(30):
        run_case(load_camera_file, write(tmp_path, f"flip{seed}.json", flipped(data, seed, 1 + seed % 3)),
                 DatasetError)
    crafted = {
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "deep_value": b'{"a.png": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "huge": json.dumps({"a.png": [1e308] * 25}).encode(),
        "nan": json.dumps({"a.png": [float("nan")] * 25}).encode(),
        "long": json.dumps({"a.png": [0.0] * 1_000_000}).encode(),
        "bad_labels": b'{"labels": [1, 2, 3]}',
        "not_object": b"[1, 2]",
    }
    for name, content in crafted.items():
        assert run_case(load_camera_file, write(tmp_path, f"{name}.json", content), DatasetError) == "refused", name
