"""Face photos: landmarks, FFHQ-style alignment, head pose -> EG3D camera, face datasets.

The photo is scikit-image's `astronaut` (a real, near-frontal portrait shipped with the package).
MediaPipe is an optional extra (requirements-faces.txt) that CI installs; the pose maths is also
checked without it on synthetic landmarks of the canonical face.
"""
from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from model import camera as cam
from model import faces


def require_face_tools():
    """MediaPipe + OpenCV (requirements-faces.txt, installed by .ci/run): a failure in CI, a skip
    in a user's clone without the extra."""
    try:
        import cv2  # noqa: F401
        import mediapipe  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI run without the face extra ({exc}); .ci/run installs requirements-faces.txt")
        pytest.skip("install requirements-faces.txt (MediaPipe 0.10.x) for the face tests")


def _project_canonical(yaw: float, pitch: float, size: int = 512) -> np.ndarray:
    """Pixel positions [478, 2] (only the canonical points filled) of the canonical head seen by
    the EG3D look-at camera at yaw / pitch radians from frontal, looking at the head's origin."""
    label = cam.orbit_label(cam.FRONTAL + yaw, cam.FRONTAL + pitch, 2.7, [0, 0, 0])
    cam2world, K = cam.split_label(label)
    world2cam = torch.linalg.inv(cam2world[0]).double()
    pts = np.zeros((478, 2))
    for name, xyz in faces.CANONICAL_FACE.items():
        p = torch.tensor([*(np.array(xyz) / 1000.0), 1.0], dtype=torch.float64)   # mm -> metres-ish units
        x, y, z = (world2cam @ p)[:3].tolist()
        focal = float(K[0, 0, 0]) * size
        pts[faces.MESH[name]] = (focal * x / z + size / 2, focal * y / z + size / 2)
    return pts


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (0.3, 0.0), (-0.25, 0.1), (0.2, -0.15)])
def test_head_pose_recovers_the_camera_of_projected_canonical_landmarks(yaw, pitch):
    require_face_tools()
    got_yaw, got_pitch = faces.head_pose(_project_canonical(yaw, pitch), 512)
    assert got_yaw == pytest.approx(yaw, abs=0.02)
    assert got_pitch == pytest.approx(pitch, abs=0.02)


def test_alignment_quad_is_the_ffhq_square():
    pts = np.zeros((478, 2))
    pts[faces.MESH["right_iris"]] = (100, 100)
    pts[faces.MESH["left_iris"]] = (160, 100)
    pts[faces.MESH["mouth_right"]] = (110, 170)
    pts[faces.MESH["mouth_left"]] = (150, 170)
    quad = faces.alignment_quad(pts)
    side = np.hypot(*(quad[3] - quad[0]))
    assert side == pytest.approx(2 * max(60 * 2.0, 70 * 1.8))      # max(2 |e2e| 2.0, 2 |e2m| 1.8)
    centre = quad.mean(0)
    assert centre == pytest.approx((130, 100 + 0.1 * 70))
    assert quad[3][1] == pytest.approx(quad[0][1])                  # level: top edge horizontal


@pytest.fixture(scope="module")
def astronaut_face():
    require_face_tools()
    import skimage.data
    return faces.align(skimage.data.astronaut())


def test_astronaut_face_is_found_aligned_and_posed(astronaut_face):
    f = astronaut_face
    assert f.crop.shape == (512, 512, 3) and f.crop.dtype == np.uint8
    assert abs(f.eye_angle) < 2.0                        # eyes level in the crop
    assert abs(f.yaw) < 20.0 and abs(f.pitch) < 20.0     # near-frontal photo
    # the eyes sit where FFHQ puts them: upper half, centred horizontally
    eyes = (f.landmarks[faces.MESH["left_iris"]] + f.landmarks[faces.MESH["right_iris"]]) / 2
    assert 200 < eyes[0] < 312 and 150 < eyes[1] < 260
    # the crop shows the face: mean colour differs from a flat border
    assert f.crop[200:300, 200:300].std() > 10


def test_astronaut_label_loads_as_an_eg3d_camera(astronaut_face, tmp_path):
    label = torch.tensor(astronaut_face.label, dtype=torch.float32)[None]
    cam2world, K = cam.split_label(label)
    assert torch.allclose(cam2world[0, :3, :3] @ cam2world[0, :3, :3].T, torch.eye(3), atol=1e-5)
    yaw, pitch, radius = cam.yaw_pitch_radius(cam2world)
    assert math.degrees(float(yaw) - cam.FRONTAL) == pytest.approx(astronaut_face.yaw, abs=1e-3)
    assert float(radius) == pytest.approx(cam.DEFAULT_RADIUS, abs=1e-4)
    assert float(K[0, 0, 0]) == pytest.approx(4.2634, abs=1e-3)
    # and through the dataset reader
    from training.dataset import ImageFolderDataset
    (tmp_path / "d").mkdir()
    PIL.Image.fromarray(astronaut_face.crop).save(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": [["a.png", astronaut_face.label.tolist()]]}))
    ds = ImageFolderDataset(tmp_path / "d")
    assert np.allclose(ds.get_label(0), astronaut_face.label, atol=1e-6)


def test_no_face_is_a_clear_error():
    require_face_tools()
    with pytest.raises(faces.FaceError, match="no face"):
        faces.align(np.full((256, 256, 3), 127, np.uint8))


def test_dataset_tool_builds_a_face_dataset(tmp_path):
    require_face_tools()
    import skimage.data
    from training import dataset_tool
    photos = tmp_path / "photos"
    photos.mkdir()
    PIL.Image.fromarray(skimage.data.astronaut()).save(photos / "astronaut.jpg")
    PIL.Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(photos / "wall.png")
    dest = tmp_path / "faces.zip"
    assert dataset_tool.main(["--faces", str(photos), "--dest", str(dest), "--resolution", "128"]) == 0
    with zipfile.ZipFile(dest) as z:
        assert sorted(z.namelist()) == ["astronaut.png", "dataset.json"]
        labels = json.loads(z.read("dataset.json"))["labels"]
    from training.dataset import ImageFolderDataset
    ds = ImageFolderDataset(dest)
    assert len(ds) == 1 and ds.resolution == 128 and len(labels[0][1]) == 25


def test_invert_camera_auto_runs_the_face_path(astronaut_face, tmp_path, one_thread):
    """`visualizer.py invert --camera auto` on the photo: the stored camera is the face's label
    and the target is the aligned crop (the shipped model is not a face model: 1 step only)."""
    import skimage.data
    import model
    from app import cli
    photo = tmp_path / "astronaut.png"
    PIL.Image.fromarray(skimage.data.astronaut()).save(photo)
    out = tmp_path / "p.safetensors"
    assert cli.main(["invert", str(photo), "--camera", "auto", "--steps", "1", "--quiet", "--out", str(out)]) == 0
    loaded = model.load_projection(out)
    assert np.allclose(loaded.initial_camera[0].numpy(), astronaut_face.label, atol=1e-5)
    crop = PIL.Image.fromarray(astronaut_face.crop).resize((64, 64), PIL.Image.LANCZOS)
    expected = torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(loaded.target[0], expected, atol=1e-5)
