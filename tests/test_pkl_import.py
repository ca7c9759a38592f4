"""Tests for model/pkl_import.py: official EG3D snapshots read as data, never executed."""
import copy
import dataclasses
import json
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import DiscriminatorConfig, GeneratorConfig
from model.pkl_import import (
    OfficialModule,
    OfficialObject,
    PklImportError,
    UnsafePickleError,
    discriminator_config_from_official,
    generator_config_from_official,
    read_network,
    read_snapshot,
    restricted_load,
    restricted_loads,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "eg3d_official"
PKL = FIXTURES / "tiny128.pkl"

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"official EG3D fixtures not found at {FIXTURES}")


@pytest.fixture(scope="module")
def snapshot():
    if not FIXTURES.is_dir():
        pytest.skip(f"official EG3D fixtures not found at {FIXTURES}")
    return read_snapshot(PKL)


@pytest.fixture(scope="module")
def options():
    if not FIXTURES.is_dir():
        pytest.skip(f"official EG3D fixtures not found at {FIXTURES}")
    return json.loads((FIXTURES / "tiny128_options.json").read_text())


# ------------------------------------------------------------------------------------------------
# Structure of the parsed fixture.

@needs_fixtures
@pytest.mark.parametrize("net", ["G", "G_ema", "D"])
def test_state_dict_names_shapes_dtypes_match_official(snapshot, net):
    expected = json.loads((FIXTURES / "tiny128_state_dict_shapes.json").read_text())[net]
    module = snapshot[net]
    got = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in module.state_dict.items()}
    assert list(got) == list(expected)          # same names in the same (state_dict) order
    assert got == expected
    assert all(type(v) is torch.Tensor and not v.requires_grad for v in module.state_dict.values())


@needs_fixtures
def test_buffers_and_tensor_attributes(snapshot, options):
    manifest = json.loads((FIXTURES / "tiny128_pickle_manifest.json").read_text())
    for net in ("G", "G_ema", "D"):
        expected = [("" if e["path"] == "<root>" else e["path"] + ".") + b
                    for e in manifest["modules"][net] for b in e["buffers"]]
        assert sorted(snapshot[net].buffer_names) == sorted(expected)
    w_avg = torch.tensor(options["w_avg"], dtype=torch.float32)
    label_std = torch.tensor(options["dataset_label_std"], dtype=torch.float32)
    for net in ("G", "G_ema"):
        sd = snapshot[net].state_dict
        assert torch.equal(sd["backbone.mapping.w_avg"], w_avg)
        assert torch.equal(sd["dataset_label_std"], label_std)
        axes = snapshot[net].tensor_attrs["renderer.plane_axes"]
        assert axes.shape == (3, 3, 3) and axes.dtype == torch.float32
        # each axis matrix is a permutation matrix
        assert torch.equal(axes.sum(1), torch.ones(3, 3)) and torch.equal(axes.sum(2), torch.ones(3, 3))
        assert "renderer.plane_axes" not in sd
    assert not any(k.endswith("w_avg") for k in snapshot["D"].state_dict)   # D's mapping has none


@needs_fixtures
def test_g_ema_is_perturbed_copy_of_g(snapshot):
    g, g_ema = snapshot["G"], snapshot["G_ema"]
    assert list(g.state_dict) == list(g_ema.state_dict)
    buffers = set(g.buffer_names)
    params = [k for k in g.state_dict if k not in buffers]
    assert buffers and params
    for key in buffers:
        assert torch.equal(g.state_dict[key], g_ema.state_dict[key]), key
    diffs = [(g.state_dict[k] - g_ema.state_dict[k]).abs().max().item() for k in params]
    assert all(d > 0 for d in diffs)              # every parameter got 1e-3 * randn
    assert max(diffs) < 1e-2


@needs_fixtures
def test_init_kwargs_attrs_and_top_level(snapshot, options):
    g, d = snapshot["G_ema"], snapshot["D"]
    assert g.class_name == "TriPlaneGenerator" and d.class_name == "DualDiscriminator"
    assert g.class_path == "training.triplane.TriPlaneGenerator"
    assert g.init_args == [] and d.init_args == []
    assert g.init_kwargs == options["G_init_kwargs"]
    assert d.init_kwargs == options["D_init_kwargs"]
    # EasyDicts became plain dicts
    for value in (g.init_kwargs["mapping_kwargs"], g.init_kwargs["sr_kwargs"], d.init_kwargs["block_kwargs"]):
        assert type(value) is dict
    assert g.attrs["neural_rendering_resolution"] == 64
    assert g.attrs["rendering_kwargs"] == options["rendering_kwargs"]
    assert g.attrs["_last_planes"] is None
    assert snapshot["training_set_kwargs"] == options["training_set_kwargs"]
    assert list(snapshot["training_set_kwargs"]) == list(options["training_set_kwargs"])
    assert snapshot["augment_pipe"] is None
    assert g.module_classes["superresolution"] == "SuperresolutionHybrid2X"
    assert g.module_classes["decoder"] == "OSGDecoder"
    assert g.module_classes["decoder.net"] == "Sequential"
    assert g.module_classes["decoder.net.1"] == "Softplus"
    assert g.module_classes["renderer.ray_marcher"] == "MipRayMarcher2"


@needs_fixtures
def test_read_network_and_raw_load(snapshot):
    d = read_network(PKL, "D")
    assert isinstance(d, OfficialModule) and d.class_name == "DualDiscriminator"
    raw = restricted_load(PKL)
    assert set(raw) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    assert isinstance(raw["G"], OfficialObject)
    # the placeholder source was carried in the pickle but is not kept anywhere
    assert "module_src" not in raw["G"].state


# ------------------------------------------------------------------------------------------------
# Config rebuilding.

@needs_fixtures
def test_generator_config_matches_official_options(snapshot, options):
    kw = options["G_init_kwargs"]
    rk = kw["rendering_kwargs"]
    cfg = generator_config_from_official(snapshot["G_ema"])
    assert isinstance(cfg, GeneratorConfig)
    assert (cfg.z_dim, cfg.w_dim, cfg.c_dim) == (kw["z_dim"], kw["w_dim"], kw["c_dim"])
    assert (cfg.img_resolution, cfg.img_channels) == (kw["img_resolution"], kw["img_channels"])
    assert cfg.neural_rendering_resolution == options["neural_rendering_resolution"] == 64
    assert cfg.mapping.num_layers == kw["mapping_kwargs"]["num_layers"] == 2
    assert (cfg.mapping.lr_multiplier, cfg.mapping.w_avg_beta) == (0.01, 0.998)
    assert cfg.mapping.embed_features is None and cfg.mapping.layer_features is None
    bb = cfg.backbone
    assert (bb.resolution, bb.num_planes, bb.plane_channels) == (256, 3, 32)
    assert (bb.channel_base, bb.channel_max) == (kw["channel_base"], kw["channel_max"]) == (1024, 64)
    assert bb.num_fp16_res == kw["num_fp16_res"] == 0
    assert bb.conv_clamp is None and kw["conv_clamp"] is None
    assert bb.fused_modconv == kw["fused_modconv_default"] == "inference_only"
    assert (cfg.decoder.hidden_dim, cfg.decoder.output_features) == (64, 32)
    assert cfg.decoder.lr_multiplier == rk["decoder_lr_mul"] and type(cfg.decoder.lr_multiplier) is float
    r = cfg.rendering
    assert (r.ray_start, r.ray_end) == (rk["ray_start"], rk["ray_end"])
    assert (r.depth_resolution, r.depth_resolution_importance) == (48, 48)
    assert r.disparity_space_sampling is False and r.clamp_mode == "softplus"
    assert r.white_back is False and r.density_noise == 0
    assert r.box_warp == 1 and type(r.box_warp) is int
    assert r.avg_camera_radius == 2.7
    assert r.avg_camera_pivot == [0, 0, 0.2] and type(r.avg_camera_pivot) is list
    assert [type(v) for v in r.avg_camera_pivot] == [int, int, float]
    assert r.plane_axes == "official" and r.official_compat is True
    sr = cfg.superres
    assert sr.module == "SuperresolutionHybrid2X"
    assert sr.num_fp16_res == kw["sr_num_fp16_res"] == 4
    assert sr.antialias is True and sr.noise_mode == "none" and sr.w_dim == 512
    assert cfg.c_gen_conditioning_zero is False
    assert cfg.c_scale == 1.0 and type(cfg.c_scale) is float
    reg = cfg.regularization
    assert (reg.gpc_reg_prob, reg.density_reg, reg.density_reg_p_dist, reg.reg_type) == (0.5, 0.25, 0.004, "l1")
    assert GeneratorConfig.from_json(cfg.to_json()) == cfg
    assert generator_config_from_official(snapshot["G"]) == cfg


@needs_fixtures
def test_discriminator_config_matches_official_options(snapshot, options):
    kw = options["D_init_kwargs"]
    cfg = discriminator_config_from_official(snapshot["D"])
    assert isinstance(cfg, DiscriminatorConfig)
    assert (cfg.c_dim, cfg.img_resolution, cfg.img_channels) == (25, 128, 3)
    assert cfg.architecture == "resnet"
    assert (cfg.channel_base, cfg.channel_max) == (kw["channel_base"], kw["channel_max"])
    assert cfg.num_fp16_res == 4 and cfg.conv_clamp == 256
    assert cfg.cmap_dim is None and cfg.disc_c_noise == 0.0
    assert cfg.mbstd_group_size == kw["epilogue_kwargs"]["mbstd_group_size"] == 4
    assert cfg.mbstd_num_channels == 1            # official default (absent from the kwargs)
    assert cfg.mapping_layers == 8                # official default (mapping_kwargs is empty)
    assert cfg.freeze_layers == 0
    assert DiscriminatorConfig.from_json(cfg.to_json()) == cfg


def _edit(module: OfficialModule, edit=None, attrs_edit=None, args=None) -> OfficialModule:
    kwargs, attrs = copy.deepcopy(module.init_kwargs), copy.deepcopy(module.attrs)
    if edit:
        edit(kwargs)
    if attrs_edit:
        attrs_edit(attrs)
    return dataclasses.replace(module, init_kwargs=kwargs, attrs=attrs,
                               init_args=module.init_args if args is None else args)


@needs_fixtures
def test_generator_config_official_defaults(snapshot):
    g = snapshot["G_ema"]
    cfg = generator_config_from_official(_edit(g, lambda k: k["rendering_kwargs"].pop("c_scale")))
    assert cfg.c_scale == 0                         # official: rendering_kwargs.get('c_scale', 0)
    cfg = generator_config_from_official(_edit(g, lambda k: k["rendering_kwargs"].pop("sr_antialias")))
    assert cfg.superres.antialias is True
    cfg = generator_config_from_official(_edit(g, attrs_edit=lambda a: a.pop("neural_rendering_resolution")))
    assert cfg.neural_rendering_resolution == 64

    def auto(k):
        k["rendering_kwargs"].update(ray_start="auto", ray_end="auto", white_back=True, density_noise=0.5)
    cfg = generator_config_from_official(_edit(g, auto))
    assert (cfg.rendering.ray_start, cfg.rendering.ray_end) == ("auto", "auto")
    assert cfg.rendering.white_back is True and cfg.rendering.density_noise == 0.5

    # positional constructor arguments are folded in by the official signature
    def drop_positional(k):
        for name in ("z_dim", "c_dim", "w_dim"):
            k.pop(name)
    moved = _edit(g, drop_positional, args=[512, 25, 512])
    assert generator_config_from_official(moved) == generator_config_from_official(g)


@needs_fixtures
@pytest.mark.parametrize("edit, option", [
    (lambda k: k["rendering_kwargs"].update(superresolution_module="training.superresolution.SuperresolutionHybrid16X"),
     "superresolution_module"),
    (lambda k: k["rendering_kwargs"].update(superresolution_module="evil.module.SuperresolutionHybrid2X"),
     "superresolution_module"),
    (lambda k: k["rendering_kwargs"].update(superresolution_module="training.superresolution.SuperresolutionHybrid8XDC"),
     "superresolution_module"),                     # 512-px module on a 128-px generator
    (lambda k: k["rendering_kwargs"].update(clamp_mode="relu"), "clamp_mode"),
    (lambda k: k["rendering_kwargs"].update(ray_start="auto"), "ray_start"),
    (lambda k: k["rendering_kwargs"].update(superresolution_noise_mode="loud"), "superresolution_noise_mode"),
    (lambda k: k["rendering_kwargs"].update(some_new_option=1), "some_new_option"),
    (lambda k: k["rendering_kwargs"].pop("box_warp"), "box_warp"),
    (lambda k: k.update(fused_modconv_default="sometimes"), "fused_modconv_default"),
    (lambda k: k.update(architecture="orig"), "architecture"),
    (lambda k: k["sr_kwargs"].update(fused_modconv_default=False), "fused_modconv_default"),
    (lambda k: k["mapping_kwargs"].update(activation="relu"), "activation"),
    (lambda k: k["mapping_kwargs"].update(num_layers=3), "num_layers"),  # disagrees with the tensors
])
def test_generator_config_rejects_unsupported_options(snapshot, edit, option):
    with pytest.raises(ValueError, match=re.escape(option)):
        generator_config_from_official(_edit(snapshot["G_ema"], edit))


@needs_fixtures
@pytest.mark.parametrize("edit, option", [
    (lambda k: k.update(architecture="weird"), "architecture"),
    (lambda k: k["block_kwargs"].update(activation="relu"), "activation"),
    (lambda k: k["epilogue_kwargs"].update(mbstd_num_channels=-1), "mbstd_num_channels"),
    (lambda k: k["mapping_kwargs"].update(num_layers=2), "num_layers"),  # disagrees with the tensors
])
def test_discriminator_config_rejects_unsupported_options(snapshot, edit, option):
    with pytest.raises(ValueError, match=re.escape(option)):
        discriminator_config_from_official(_edit(snapshot["D"], edit))


@needs_fixtures
def test_wrong_network_class_for_config(snapshot):
    with pytest.raises(ValueError, match="TriPlaneGenerator"):
        generator_config_from_official(snapshot["D"])
    with pytest.raises(ValueError, match="DualDiscriminator"):
        discriminator_config_from_official(snapshot["G"])


# ------------------------------------------------------------------------------------------------
# Security: hand-crafted malicious pickles. Each would create MARKER if anything ran.

def _global(module: str, name: str) -> bytes:          # protocol-0/2 GLOBAL opcode
    return b"c" + f"{module}\n{name}\n".encode()


def _stack_global(module: str, name: str) -> bytes:    # protocol-4 STACK_GLOBAL form
    return b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name)) + b"\x93"


def _str(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _list(*items: str) -> bytes:
    return b"](" + b"".join(_str(i) for i in items) + b"e"


def _call(func: bytes, *args: bytes) -> bytes:           # func(*args) via MARK ... TUPLE REDUCE
    return func + b"(" + b"".join(args) + b"tR"


def _pickle(body: bytes, proto: int = 2) -> bytes:
    return bytes([0x80, proto]) + body + b"."


def _attacks(marker: Path):
    """(refused global, pickle bytes) pairs."""
    cmd = f"touch {marker}"
    touch = _list("touch", str(marker))
    return [
        ("os.system", _pickle(_call(_global("os", "system"), _str(cmd)))),
        ("os.system", b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR."),        # protocol 0, no header
        ("posix.system", _pickle(_call(_stack_global("posix", "system"), _str(cmd)), proto=4)),
        ("builtins.eval", _pickle(_call(_global("builtins", "eval"), _str(f"__import__('os').system({cmd!r})")))),
        ("builtins.exec", _pickle(_call(_global("builtins", "exec"), _str(f"import os; os.system({cmd!r})")))),
        ("subprocess.Popen", _pickle(_call(_global("subprocess", "Popen"), touch))),
        ("subprocess.check_call", _pickle(_call(_stack_global("subprocess", "check_call"), touch), proto=4)),
        ("importlib.import_module", _pickle(_call(_global("importlib", "import_module"), _str("os")))),
        ("torch.load", _pickle(_call(_global("torch", "load"), _str(str(marker))))),
        ("torch_utils.persistence._src_to_module",
         _pickle(_call(_global("torch_utils.persistence", "_src_to_module"), _str(f"import os; os.system({cmd!r})")))),
        # hidden as the value of 'G' inside an otherwise snapshot-like dict
        ("posix.system", _pickle(b"}(" + _str("G") + _call(_global("posix", "system"), _str(cmd)) + b"u")),
    ]


@pytest.mark.parametrize("index", range(len(_attacks(Path("m")))))
def test_malicious_globals_are_refused(tmp_path, index):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    name, data = _attacks(marker)[index]
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as info:
        read_snapshot(path)
    message = str(info.value)
    assert f"refusing to load {path}: it references the global '{name}'" in message
    assert "allow-list" in message
    assert not marker.exists()


class _Reduces:
    """A classic payload: pickling calls os.system (pickled as posix.system on Linux)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_reduce_payload_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    data = pickle.dumps({"G": _Reduces(marker)}, protocol=4)
    expected = r"refusing to load payload\.pkl: it references the global '(posix|os|nt)\.system'"
    with pytest.raises(UnsafePickleError, match=expected):
        restricted_loads(data, "payload.pkl")
    assert not marker.exists()


def _legacy_blob(main: bytes) -> bytes:
    """A legacy torch.save stream around `main` (the object pickle)."""
    p = lambda obj: pickle.dumps(obj, protocol=2)
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return p(0x1950A86A20F9469CFC6C) + p(1001) + p(info) + main + p([])


def _bytes_op(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def test_bad_global_inside_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    blob = _legacy_blob(_pickle(_call(_global("os", "system"), _str(f"touch {marker}"))))
    load_storage = _call(_global("torch.storage", "_load_from_bytes"), _bytes_op(blob))
    tensor = _call(_global("torch._utils", "_rebuild_tensor_v2"), load_storage,
                   b"K\x00", b"(K\x01t", b"(K\x01t", b"\x89", _call(_global("collections", "OrderedDict")))
    path = tmp_path / "nested.pkl"
    path.write_bytes(_pickle(b"}(" + _str("G") + tensor + b"u"))
    with pytest.raises(UnsafePickleError) as info:
        read_snapshot(path)
    message = str(info.value)
    assert "'os.system'" in message and str(path) in message and "storage blob" in message
    assert not marker.exists()


def test_corrupt_storage_blob_is_a_clear_error(tmp_path):
    path = tmp_path / "blob.pkl"
    path.write_bytes(_pickle(_call(_global("torch.storage", "_load_from_bytes"), _bytes_op(b"\x80\x02garbage"))))
    with pytest.raises(PklImportError, match=re.escape(str(path)) + ".*storage blob"):
        restricted_load(path)


def test_embedded_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "MARKER"
    meta = {"type": "class", "version": 6, "class_name": "TriPlaneGenerator",
            "module_src": f"import os\nos.system('touch {marker}')\nclass TriPlaneGenerator: pass\n",
            "state": {"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_args": (),
                      "_init_kwargs": {"z_dim": 8}, "z_dim": 8}}
    fragment = pickle.dumps(meta, protocol=2)[2:-1]
    data = _pickle(b"}(" + _str("G") + _call(_global("torch_utils.persistence", "_reconstruct_persistent_obj"),
                                              fragment) + b"u")
    path = tmp_path / "src.pkl"
    path.write_bytes(data)
    g = read_snapshot(path, nets=("G",))["G"]
    assert g.class_name == "TriPlaneGenerator" and g.init_kwargs == {"z_dim": 8}
    assert g.attrs == {"z_dim": 8}
    assert not marker.exists()


def test_real_torch_tensors_decode_exactly():
    """Tensors pickled by torch itself (legacy storage blobs) come back bit-exact, views included."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    values = {
        "view": base[:, 1:3],                          # non-zero offset, non-contiguous strides
        "param": torch.nn.Parameter(torch.randn(2, 3)),
        "half": torch.randn(5).half(),
        "bf16": torch.randn(4).bfloat16(),
        "bool": torch.tensor([True, False, True]),
        "long": torch.arange(7),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "size": torch.Size([2, 3]),
        "np": np.float64(0.125),                       # numpy 2 names it numpy._core.multiarray.scalar
    }
    out = restricted_loads(pickle.dumps(values, protocol=4), "tensors.pkl")
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            assert out[key].dtype == value.dtype and torch.equal(out[key], value.detach()), key
            assert type(out[key]) is torch.Tensor
    assert out["size"] == torch.Size([2, 3])
    assert out["np"] == 0.125 and isinstance(out["np"], np.float64)


def test_out_of_bounds_tensor_is_refused():
    data = pickle.dumps(torch.arange(4.0), protocol=4)
    # grow the declared size (1-D, 4 elements) beyond its storage: patch the size tuple K\x04 -> K\x09
    patched = data.replace(b"K\x04\x85", b"K\x09\x85", 1)
    assert patched != data
    with pytest.raises(PklImportError, match="past the end"):
        restricted_loads(patched, "oob.pkl")


# ------------------------------------------------------------------------------------------------
# Broken files.

def test_empty_file(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(PklImportError, match=re.escape(str(path)) + r" is empty"):
        read_snapshot(path)


@needs_fixtures
@pytest.mark.parametrize("keep", [1, 100, 5_000_000, -1])
def test_truncated_snapshot(tmp_path, keep):
    data = PKL.read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:keep])
    with pytest.raises(PklImportError, match=re.escape(str(path)) + r" is truncated"):
        read_snapshot(path)


@pytest.mark.parametrize("content, what", [
    (b"hello, this is not a pickle\n" * 10, "is not a pickle file"),
    (bytes(range(256)) * 4, "is not a pickle file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "is not a pickle file"),
    (b"PK\x03\x04" + b"\x00" * 64, "is a zip archive"),
    (b"\x80\x04\xff\xff\xff\xff", "is corrupt"),
])
def test_garbage_files(tmp_path, content, what):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(content)
    with pytest.raises(PklImportError, match=re.escape(str(path)) + " " + re.escape(what)):
        read_snapshot(path)


def test_wrong_top_level_and_missing_networks(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(PklImportError, match=re.escape(str(path)) + " is not an EG3D training snapshot"):
        read_snapshot(path)

    path = tmp_path / "nog.pkl"
    path.write_bytes(pickle.dumps({"training_set_kwargs": {}, "D": None, "G": 5}))
    with pytest.raises(PklImportError, match=re.escape(str(path)) + " has no network 'G_ema'"):
        read_network(path, "G_ema")
    with pytest.raises(PklImportError, match=re.escape(str(path)) + ".*'G' is a int, not an official network"):
        read_snapshot(path)

    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"model": {}, "optimizer": {}}))
    with pytest.raises(PklImportError, match="not an EG3D training snapshot"):
        read_snapshot(path)
