"""The overwrite rule and the atomic writer (model.output), per command that writes.

A writer replaces only what it recognisably wrote itself (or an empty folder); anything else is
refused with a message naming the path unless --overwrite, and an output holding the input is
refused even then. Every data-loss case checks that an unrelated file survives. Also: the atomic
writer's failure modes (read-only folder, a folder at the output path, full disk) and the command
lines' one-line errors and exit codes for bad numbers.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from model import output
from training import dataset_tool, synthetic

NOTE = b"my own notes, not written by the tool\n"


def unrelated(folder: Path, name: str = "notes.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(NOTE)
    return path


def survives(path: Path) -> bool:
    return path.is_file() and path.read_bytes() == NOTE


def no_temp_litter(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------
# datasets: training.synthetic and training.dataset_tool


def test_synthetic_refuses_a_foreign_folder_and_file(tmp_path, capsys):
    dest = tmp_path / "data"
    note = unrelated(dest)
    rc = synthetic.main(["--dest", str(dest), "--count", "2", "--resolution", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and survives(note)
    assert err.startswith("error: ") and str(dest) in err and "--overwrite" in err and err.count("\n") == 1
    zdest = tmp_path / "data.zip"
    zdest.write_bytes(NOTE)
    assert synthetic.main(["--dest", str(zdest), "--count", "2", "--resolution", "8", "--no-progress"]) == 2
    assert survives(zdest)
    assert no_temp_litter(tmp_path)


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_synthetic_replaces_its_own_dataset_but_not_one_with_additions(tmp_path, suffix):
    dest = tmp_path / f"data{suffix}"
    synthetic.generate_dataset(dest, count=2, resolution=8, progress=False, supersample=1)
    assert dataset_tool.is_own_dataset(dest)
    synthetic.generate_dataset(dest, count=3, resolution=8, progress=False, supersample=1)   # own: replaced
    assert len(dataset_tool.ImageFolderDataset(dest)) == 3
    if suffix == "":
        note = unrelated(dest)                          # the user added a file: no longer ours
        with pytest.raises(output.OutputRefused, match=str(dest)):
            synthetic.generate_dataset(dest, count=2, resolution=8, progress=False, supersample=1)
        assert survives(note)
        synthetic.generate_dataset(dest, count=2, resolution=8, progress=False, supersample=1, overwrite=True)
        assert not note.exists() and len(dataset_tool.ImageFolderDataset(dest)) == 2


def _source(tmp_path: Path, count: int = 2):
    """A folder of images and a camera file for dataset_tool."""
    src = tmp_path / "photos"
    src.mkdir()
    from PIL import Image
    label = np.eye(4).reshape(-1).tolist() + [4.26, 0, 0.5, 0, 4.26, 0.5, 0, 0, 1]
    cams = {}
    for i in range(count):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(src / f"img{i}.png")
        cams[f"img{i}.png"] = label
    cam_file = tmp_path / "cams.json"
    cam_file.write_text(json.dumps(cams))
    return src, cam_file


def test_dataset_tool_refuses_foreign_dest_and_never_deletes_the_source(tmp_path, capsys):
    src, cams = _source(tmp_path)
    before = sorted(p.name for p in src.iterdir())
    dest = tmp_path / "out"
    note = unrelated(dest)
    args = ["--source", str(src), "--cameras", str(cams), "--dest"]
    assert dataset_tool.main(args + [str(dest)]) == 2 and survives(note)
    assert str(dest) in capsys.readouterr().err
    # the parent of the source, even with --overwrite: refused, the photos stay
    for dest in (tmp_path, src):
        assert dataset_tool.main(args + [str(dest), "--overwrite"]) == 2
        assert "input" in capsys.readouterr().err
        assert sorted(p.name for p in src.iterdir()) == before and cams.is_file()
    # --overwrite on a foreign folder that does not hold the inputs: replaced, as asked
    other = tmp_path / "other"
    unrelated(other)
    assert dataset_tool.main(args + [str(other), "--overwrite"]) == 0
    assert not (other / "notes.txt").exists() and dataset_tool.is_own_dataset(other)
    assert dataset_tool.main(args + [str(other)]) == 0                # our own: replaced without asking
    assert no_temp_litter(tmp_path)


def test_dataset_writer_empty_folder_is_fine(tmp_path):
    src, cams = _source(tmp_path)
    (tmp_path / "empty").mkdir()
    assert dataset_tool.convert_dataset(src, cams, tmp_path / "empty") == 2


# ------------------------------------------------------------------------------------------------
# exports and meshes (visualizer.py)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model.save(path, model.build_generator(model.presets.generator_config("tiny")))
    return path


def cli(args, capsys):
    from app import cli as C
    rc = C.main(args)
    captured = capsys.readouterr()
    return rc, captured.err


def test_image_export_refuses_a_foreign_png_and_replaces_its_own(tmp_path, tiny_ckpt, capsys):
    base = ["images", "--network", str(tiny_ckpt), "--render", "raw", "--quiet"]
    own = tmp_path / "a.png"
    assert cli(base + ["--out", str(own)], capsys)[0] == 0
    assert cli(base + ["--out", str(own), "--seeds", "3"], capsys)[0] == 0      # ours: replaced
    foreign = tmp_path / "b.png"
    foreign.write_bytes(NOTE)
    rc, err = cli(base + ["--out", str(foreign)], capsys)
    assert rc == 2 and survives(foreign) and str(foreign) in err and err.count("\n") == 1
    assert cli(base + ["--out", str(foreign), "--overwrite"], capsys)[0] == 0 and not survives(foreign)
    # an input (here the --state image) is never replaced, even with --overwrite
    before = own.read_bytes()
    rc, err = cli(base + ["--out", str(own), "--state", str(own), "--overwrite"], capsys)
    assert rc == 2 and "input" in err and own.read_bytes() == before
    folder = tmp_path / "stills"
    note = unrelated(folder, "seed0000.png")
    rc, err = cli(base + ["--out", str(folder), "--seeds", "0-1"], capsys)
    assert rc == 2 and survives(note) and not (folder / "seed0001.png").exists()   # refused before rendering
    assert no_temp_litter(tmp_path) and no_temp_litter(folder)


def test_images_out_with_a_foreign_suffix_makes_no_folder(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "x.jpg"
    rc, err = cli(["images", "--network", str(tiny_ckpt), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and not out.exists() and "x.jpg" in err


def test_video_and_frames_refuse_foreign_outputs(tmp_path, tiny_ckpt, capsys):
    base = ["turntable", "--network", str(tiny_ckpt), "--render", "raw", "--frames", "2", "--quiet"]
    video = tmp_path / "t.mp4"
    video.write_bytes(NOTE)
    rc, err = cli(base + ["--out", str(video)], capsys)
    assert rc == 2 and survives(video)
    frames = tmp_path / "frames"
    note = unrelated(frames)
    rc, err = cli(base + ["--out", str(frames), "--png-frames"], capsys)
    assert rc == 2 and survives(note)
    own = tmp_path / "own.mp4"
    assert cli(base + ["--out", str(own)], capsys)[0] == 0
    assert output.has_signature(own, output.SIGNATURE)
    assert cli(base + ["--out", str(own), "--seeds", "2"], capsys)[0] == 0     # ours: replaced
    # an existing folder named like a video: refused up front, no temp file left behind
    folder = tmp_path / "dir.mp4"
    note = unrelated(folder)
    rc, err = cli(base + ["--out", str(folder)], capsys)
    assert rc == 2 and survives(note) and "dir.mp4" in err
    assert no_temp_litter(tmp_path)


def test_mesh_refuses_foreign_files_and_absurd_resolutions(tmp_path, tiny_ckpt, capsys, monkeypatch):
    base = ["mesh", "--network", str(tiny_ckpt), "--res", "16", "--level", "0", "--trim", "0", "--quiet"]
    ply = tmp_path / "m.ply"
    ply.write_bytes(NOTE)
    rc, err = cli(base + ["--out", str(ply)], capsys)
    assert rc == 2 and survives(ply)
    mrc = tmp_path / "n.mrc"
    mrc.write_bytes(NOTE)
    rc, err = cli(base + ["--out", str(tmp_path / "n.ply"), "--formats", "mrc"], capsys)
    assert rc == 2 and survives(mrc) and not (tmp_path / "n.ply").exists()
    from app import mesh as M
    monkeypatch.setattr(M, "available_memory", lambda: 16 << 30)
    rc, err = cli(base[:3] + ["--res", "2048", "--out", str(tmp_path / "big.ply")], capsys)
    assert rc == 2 and "2048" in err and "GiB" in err and "--res" in err
    assert M.estimate_memory(2048, ["ply"]) > 32 * 10 ** 9


# ------------------------------------------------------------------------------------------------
# convert and metrics


def test_convert_refuses_foreign_dest_and_the_source(tmp_path, fixture_dir, capsys):
    from model import convert
    src = fixture_dir / "tiny128.pkl"
    dest = tmp_path / "G.safetensors"
    dest.write_bytes(NOTE)
    assert convert.main([str(src), str(dest)]) == 2 and survives(dest)
    assert str(dest) in capsys.readouterr().err
    assert convert.main([str(src), str(src), "--overwrite"]) == 2 and src.stat().st_size > 1000
    own = tmp_path / "own.safetensors"
    assert convert.main([str(src), str(own)]) == 0
    assert convert.main([str(src), str(own), "--fp16"]) == 0           # ours: replaced


def test_metrics_json_out_appends_to_its_own_log_only(tmp_path):
    from training import metrics
    log = tmp_path / "m.jsonl"
    metrics.append_metrics_log(str(log), [json.dumps({"metric": "swd", "value": 1})])
    metrics.append_metrics_log(str(log), [json.dumps({"metric": "swd", "value": 2})])
    assert [json.loads(l)["value"] for l in log.read_text().splitlines()] == [1, 2]
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(NOTE)
    with pytest.raises(output.OutputRefused, match="notes.txt"):
        metrics.append_metrics_log(str(foreign), [json.dumps({"metric": "swd"})])
    assert survives(foreign)


# ------------------------------------------------------------------------------------------------
# the atomic writer's failures


def test_atomic_write_on_a_read_only_folder_reports_the_real_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(output.tempfile, "mkstemp", refuse)
    with pytest.raises(output.WriteFailed, match=r"out\.bin: cannot write in .*Read-only file system"):
        output.atomic_write(tmp_path / "out.bin", lambda tmp: None)


def test_atomic_write_to_a_folder_leaves_no_litter(tmp_path):
    folder = tmp_path / "out.png"
    note = unrelated(folder)
    with pytest.raises(output.OutputRefused, match="is a folder"):
        output.atomic_write(folder, lambda tmp: Path(tmp).write_bytes(b"x"))
    assert survives(note) and no_temp_litter(tmp_path)


def test_full_disk_is_a_project_error_and_leaves_nothing(tmp_path, tiny_generator, monkeypatch):
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                          "message: \"No space left on device\" })")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    target = tmp_path / "G.safetensors"
    with pytest.raises(output.WriteFailed, match=r"G\.safetensors: could not write.*No space left"):
        model.save(target, tiny_generator)
    assert not target.exists() and no_temp_litter(tmp_path)

    def enospc(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(output.WriteFailed, match="No space left"):
        output.atomic_write(tmp_path / "x.txt", enospc)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# numbers and errors at the command line


@pytest.mark.parametrize("args, option", [
    (["turntable", "--trunc", "nan"], "--trunc"),
    (["turntable", "--yaw", "inf"], "--yaw"),
    (["images", "--pivot", "nan,0,0"], "--pivot"),
    (["turntable", "--crf", "1000"], "--crf"),
    (["turntable", "--preset", "bogus"], "--preset"),
    (["turntable", "--frames", "1000000000"], "--frames"),
    (["images", "--size", "100000"], "--size"),
    (["mesh", "--res", "100000"], "--res"),
    (["turntable", "--fps", "0"], "--fps"),
])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, args, option):
    from app import cli as C
    with pytest.raises(SystemExit) as info:
        C.main(args + ["--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"error: argument {option}") and err.count("\n") == 1


@pytest.mark.parametrize("extra, needle", [
    (["--bitrate", "xyz"], "bitrate"),
    (["--grid", "3x3", "--seeds", "0,1"], "3x3"),
    (["--state", "."], "--state"),
    (["--state", "README"], "--state"),
])
def test_runtime_checked_options_are_one_line_errors(tmp_path, tiny_ckpt, capsys, monkeypatch, extra, needle):
    (tmp_path / "README").write_text("not a state")
    monkeypatch.chdir(tmp_path)
    rc, err = cli(["turntable", "--network", str(tiny_ckpt), "--frames", "2", "--quiet",
                   "--out", str(tmp_path / "t.mp4")] + extra, capsys)
    assert rc == 2 and err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "t.mp4").exists()


def test_debug_shows_the_traceback(tmp_path, tiny_ckpt):
    from app import cli as C
    from app.export import ExportError
    with pytest.raises(ExportError):
        C.main(["turntable", "--network", str(tiny_ckpt), "--bitrate", "xyz", "--debug", "--out",
                str(tmp_path / "t.mp4")])


def test_sso_refuses_a_folder_it_did_not_fit_into(tmp_path, capsys):
    from training import sso
    notes = unrelated(tmp_path / "mine", "config.json")          # the name the fit would write
    code = sso.main(["--data", str(tmp_path / "absent.zip"), "--outdir", str(notes.parent)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(notes.parent) in err[0] and "--overwrite" in err[0]
    assert survives(notes)
    data = tmp_path / "scene"
    data.mkdir()
    assert sso.main(["--data", str(data), "--outdir", str(tmp_path), "--overwrite"]) == 2   # holds --data
    assert "would replace the input" in capsys.readouterr().err


def test_invert_out_never_replaces_the_image_or_a_foreign_file(tmp_path, capsys):
    from app import invert_cli
    from PIL import Image
    image = tmp_path / "face.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    before = image.read_bytes()
    notes = unrelated(tmp_path, "result.safetensors")
    for out, extra, words in ((image, ["--overwrite"], "would replace the input"),
                              (notes, [], "--overwrite")):
        code = invert_cli.main([str(image), "--out", str(out), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and str(out) in err[0] and words in err[0], err
    assert image.read_bytes() == before and survives(notes)
