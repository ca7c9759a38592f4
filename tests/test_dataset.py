"""EG3D dataset reading (training/dataset.py) and writing (training/dataset_tool.py)."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from model.camera import look_at, orbit_label, split_label
from training.dataset import DatasetError, ImageFolderDataset, mirror_label
from training import dataset_tool

RES = 8


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _images(n=3, res=RES, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(res, res, 3), dtype=np.uint8) for _ in range(n)]


def _labels(n=3):
    yaw = torch.linspace(1.2, 2.0, n)
    return orbit_label(yaw, torch.full((n,), 1.4), pivot=(0.1, 0.05, 0.2)).numpy().astype(np.float64)


def _write(tmp_path, kind, files: dict, name="ds"):
    """files: relative name -> bytes. kind: 'zip' or 'dir'. Returns the dataset path."""
    if kind == "zip":
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            for rel, data in files.items():
                z.writestr(rel, data)
    else:
        path = tmp_path / name
        for rel, data in files.items():
            p = path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return str(path)


def _good_files(n=3, res=RES):
    images, labels = _images(n, res), _labels(n)
    names = [f"sub/img{i}.png" for i in range(n)]
    files = {name: _png(img) for name, img in zip(names, images)}
    files["dataset.json"] = json.dumps({"labels": [[nm, lb.tolist()] for nm, lb in zip(names, labels)]}).encode()
    return files, names, images, labels


@pytest.mark.parametrize("kind", ["zip", "dir"])
def test_round_trip(tmp_path, kind):
    files, names, images, labels = _good_files()
    ds = ImageFolderDataset(_write(tmp_path, kind, files))
    assert len(ds) == 3 and ds.resolution == RES and ds.num_channels == 3 and ds.label_dim == 25
    assert ds.name == "ds" and ds.image_fnames == names
    for i in range(3):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (3, RES, RES)
        np.testing.assert_array_equal(image, images[i].transpose(2, 0, 1))
        assert label.dtype == np.float32 and label.shape == (25,)
        np.testing.assert_array_equal(label, labels[i].astype(np.float32))
        np.testing.assert_array_equal(ds.get_label(i), label)
    np.testing.assert_array_equal(ds.labels, labels.astype(np.float32))
    ds2 = pickle.loads(pickle.dumps(ds))                       # what DataLoader workers receive
    np.testing.assert_array_equal(ds2[1][0], ds[1][0])


def test_deflated_zip_and_max_size(tmp_path):
    files, names, images, labels = _good_files(5)
    path = tmp_path / "deflated.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for rel, data in files.items():
            z.writestr(rel, data)
    ds = ImageFolderDataset(str(path), max_size=3, random_seed=1)
    assert len(ds) == 3
    for i in range(3):
        raw = ds.get_details(i)["raw_idx"]
        np.testing.assert_array_equal(ds[i][0], images[raw].transpose(2, 0, 1))


def test_dataloader_workers(tmp_path):
    files, _, images, labels = _good_files(4)
    ds = ImageFolderDataset(_write(tmp_path, "zip", files))
    ds[0]                                                       # main process has the zip open
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    got = torch.cat([img for img, _ in loader])
    assert torch.equal(got, torch.from_numpy(np.stack([im.transpose(2, 0, 1) for im in images])))


def _project(label: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Normalised image coordinates [N, 2] of world points under a 25-d label."""
    cam2world, intrinsics = label[:16].reshape(4, 4).astype(np.float64), label[16:].reshape(3, 3)
    world2cam = np.linalg.inv(cam2world)
    cam = (world2cam[:3, :3] @ points.T + world2cam[:3, 3:]).T
    uv = (intrinsics @ cam.T).T
    return uv[:, :2] / uv[:, 2:]


def test_xflip_mirrors_image_and_camera(tmp_path):
    files, _, images, labels = _good_files()
    ds = ImageFolderDataset(_write(tmp_path, "zip", files), xflip=True)
    assert len(ds) == 6
    pivot = np.array([0.1, 0.05, 0.2])
    mirror = np.array([-1.0, 1.0, 1.0])
    for i in range(3):
        img, lab = ds[i]
        fimg, flab = ds[3 + i]
        np.testing.assert_array_equal(fimg, img[:, :, ::-1])
        assert ds.get_details(3 + i)["xflip"]
        np.testing.assert_array_equal(ds.labels[3 + i], flab)
        pose, fpose = lab[:16].reshape(4, 4), flab[:16].reshape(4, 4)
        # the centre is reflected across x = 0
        np.testing.assert_allclose(fpose[:3, 3], pose[:3, 3] * mirror, atol=1e-6)
        # it looks at the mirrored pivot, with the same roll-free up: exactly look_at(S c, S pivot)
        ref = look_at(torch.tensor(fpose[None, :3, 3]), torch.tensor((pivot * mirror)[None], dtype=torch.float32))
        np.testing.assert_allclose(fpose, ref[0].numpy(), atol=1e-5)
        assert np.linalg.det(fpose[:3, :3]) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_array_equal(flab[16:], lab[16:])   # centred intrinsics unchanged
        # a world point seen at (u, v) is seen at (1 - u, v) mirrored
        pts = np.random.default_rng(i).uniform(-0.3, 0.3, size=(5, 3))
        uv, fuv = _project(lab, pts), _project(flab, pts * mirror)
        np.testing.assert_allclose(fuv[:, 0], 1 - uv[:, 0], atol=1e-5)
        np.testing.assert_allclose(fuv[:, 1], uv[:, 1], atol=1e-5)
    # mirroring twice is the identity
    np.testing.assert_allclose(mirror_label(mirror_label(labels)), labels.astype(np.float32), atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Invalid datasets: every error names the offending file


def _case_missing_label(files, labels):
    d = json.loads(files["dataset.json"])
    d["labels"] = [e for e in d["labels"] if e[0] != "sub/img1.png"]
    files["dataset.json"] = json.dumps(d).encode()
    return "sub/img1.png"


def _case_extra_label(files, labels):
    d = json.loads(files["dataset.json"])
    d["labels"].append(["sub/ghost.png", labels[0].tolist()])
    files["dataset.json"] = json.dumps(d).encode()
    return "sub/ghost.png"


def _case_wrong_length(files, labels):
    d = json.loads(files["dataset.json"])
    d["labels"][1][1] = d["labels"][1][1][:24]
    files["dataset.json"] = json.dumps(d).encode()
    return "sub/img1.png"


def _case_nan_label(files, labels):
    d = json.loads(files["dataset.json"])
    d["labels"][2][1][3] = float("nan")
    files["dataset.json"] = json.dumps(d).encode()            # writes a NaN literal
    return "sub/img2.png"


def _case_non_square(files, labels):
    files["sub/img1.png"] = _png(np.zeros((RES, RES + 2, 3), np.uint8))
    return "sub/img1.png"


def _case_mixed_sizes(files, labels):
    files["sub/img2.png"] = _png(np.zeros((2 * RES, 2 * RES, 3), np.uint8))
    return "sub/img2.png"


def _case_garbage_png(files, labels):
    files["sub/img1.png"] = b"this is not a png at all"
    return "sub/img1.png"


def _case_truncated_png(files, labels):
    data = _png(np.random.default_rng(0).integers(0, 256, (RES, RES, 3), dtype=np.uint8))
    files["sub/img1.png"] = data[: len(data) // 2]           # header intact, pixel data cut
    return "sub/img1.png"


def _case_missing_json(files, labels):
    del files["dataset.json"]
    return "dataset.json"


BAD_CASES = {f.__name__[6:]: f for f in (_case_missing_label, _case_extra_label, _case_wrong_length,
                                         _case_nan_label, _case_non_square, _case_mixed_sizes,
                                         _case_garbage_png, _case_truncated_png, _case_missing_json)}


@pytest.mark.parametrize("kind", ["zip", "dir"])
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_invalid_dataset_names_file(tmp_path, kind, case):
    files, _, _, labels = _good_files()
    offending = BAD_CASES[case](files, labels)
    path = _write(tmp_path, kind, files)
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(path)
    assert offending in str(info.value), str(info.value)


def test_resolution_mismatch_names_file(tmp_path):
    files, names, _, _ = _good_files()
    with pytest.raises(DatasetError, match="resolution") as info:
        ImageFolderDataset(_write(tmp_path, "zip", files), resolution=2 * RES)
    assert names[0] in str(info.value)
    assert ImageFolderDataset(_write(tmp_path, "dir", files), resolution=RES).resolution == RES


def test_header_validation_reports_corrupt_file_on_load(tmp_path):
    files, _, _, labels = _good_files()
    _case_truncated_png(files, labels)
    ds = ImageFolderDataset(_write(tmp_path, "zip", files), validate="header")
    with pytest.raises(DatasetError, match="sub/img1.png"):
        ds[1]


# ------------------------------------------------------------------------------------------------
# dataset_tool


def test_dataset_tool_convert_and_summary(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    images = _images(3, res=12)
    names = ["a/x.png", "y.jpg", "z.png"]
    for name, img in zip(names, images):
        PIL.Image.fromarray(img).save(src / name, quality=95)
    labels = _labels(3)
    pose, intr = split_label(torch.tensor(labels[1:2]))
    cameras = {
        "a/x.png": labels[0].tolist(),                                       # 25 floats
        "y.jpg": {"cam2world": pose[0].tolist(), "intrinsics": (intr[0] * torch.tensor([[12.0], [12.0], [1.0]])).tolist()},
        "z.png": {"cam2world": labels[2][:16].tolist(), "intrinsics": labels[2][16:].tolist()},
    }
    (tmp_path / "cams.json").write_text(json.dumps(cameras))
    for dest in ("out.zip", "out_dir"):
        rc = dataset_tool.main(["--source", str(src), "--cameras", str(tmp_path / "cams.json"),
                                "--dest", str(tmp_path / dest), "--resolution", "8"])
        assert rc == 0
        ds = ImageFolderDataset(str(tmp_path / dest))
        assert len(ds) == 3 and ds.resolution == 8
        assert ds.image_fnames == ["a/x.png", "y.png", "z.png"]
        np.testing.assert_allclose(ds.labels, labels.astype(np.float32), atol=1e-6)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    info = dataset_tool.summary(str(tmp_path / "out.zip"))
    out = capsys.readouterr().out
    assert "images      3" in out and "8x8" in out and "label dim   25" in out and "#" in out
    np.testing.assert_allclose(info["yaw"], np.linspace(1.2, 2.0, 3), atol=1e-4)
    assert dataset_tool.main(["--summary", str(tmp_path / "out_dir")]) == 0


def test_dataset_tool_errors_name_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, img in enumerate(_images(2)):
        PIL.Image.fromarray(img).save(src / f"im{i}.png")
    labels = _labels(2)
    cams = tmp_path / "cams.json"
    cams.write_text(json.dumps({"im0.png": labels[0].tolist()}))
    with pytest.raises(DatasetError, match="im1.png"):
        dataset_tool.convert_dataset(src, cams, tmp_path / "o.zip")
    cams.write_text(json.dumps({"im0.png": labels[0].tolist(), "im1.png": labels[1].tolist()[:20]}))
    with pytest.raises(DatasetError, match="im1.png"):
        dataset_tool.convert_dataset(src, cams, tmp_path / "o.zip")
    cams.write_text(json.dumps({"im0.png": labels[0].tolist(), "im1.png": labels[1].tolist(),
                                "nope.png": labels[1].tolist()}))
    with pytest.raises(DatasetError, match="nope.png"):
        dataset_tool.convert_dataset(src, cams, tmp_path / "o.zip")
    assert not (tmp_path / "o.zip").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
