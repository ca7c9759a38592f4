"""The synthetic ground-truth dataset generator (training/synthetic.py)."""
import math
import os
import zipfile

import numpy as np
import pytest
import torch

from model.camera import generate_rays, split_label, yaw_pitch_radius
from training import synthetic
from training.dataset import ImageFolderDataset
from training.synthetic import generate_dataset, load_ground_truth, load_gt_arrays, load_gt_object

RES = 32


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    """64 portrait images with full pose-attribute bias (shared by several tests)."""
    path = tmp_path_factory.mktemp("synth") / "portrait.zip"
    generate_dataset(path, 64, RES, cameras="portrait", seed=3, pose_attribute_bias=1.0, progress=False)
    return str(path)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """64 '360' images, unbiased, written as a folder."""
    path = tmp_path_factory.mktemp("synth") / "ring"
    generate_dataset(path, 64, RES, cameras="360", seed=5, pose_attribute_bias=0.0, progress=False)
    return str(path)


def _zip_members(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_deterministic_by_seed(tmp_path):
    a, b, c = (tmp_path / f"{n}.zip" for n in "abc")
    generate_dataset(a, 6, 16, seed=11, pose_attribute_bias=0.5, progress=False)
    generate_dataset(b, 6, 16, seed=11, pose_attribute_bias=0.5, progress=False)
    generate_dataset(c, 6, 16, seed=12, pose_attribute_bias=0.5, progress=False)
    assert a.read_bytes() == b.read_bytes()                       # bitwise identical archives
    d = tmp_path / "d.zip"
    generate_dataset(d, 6, 16, seed=11, pose_attribute_bias=0.5, progress=False, workers=2)
    assert d.read_bytes() == a.read_bytes()                       # independent of the process count
    ma, mc = _zip_members(a), _zip_members(c)
    assert ma.keys() == mc.keys()
    pngs = [n for n in ma if n.endswith(".png")]
    assert len(pngs) == 6 and all(ma[n] != mc[n] for n in pngs)
    assert ma["dataset.json"] != mc["dataset.json"]
    la = ImageFolderDataset(str(a)).labels
    np.testing.assert_array_equal(la, ImageFolderDataset(str(b)).labels)
    assert not np.array_equal(la, ImageFolderDataset(str(c)).labels)


def test_opens_with_image_folder_dataset(portrait, ring):
    for path in (portrait, ring):
        ds = ImageFolderDataset(path, resolution=RES, xflip=True)
        assert len(ds) == 128 and ds.label_dim == 25 and ds.num_channels == 3
        image, label = ds[0]
        assert image.shape == (3, RES, RES) and image.dtype == np.uint8 and label.shape == (25,)
        gt = load_ground_truth(path)
        assert [r["image"] for r in gt["images"]] == ds.image_fnames


def test_depth_back_projects_onto_the_surface(portrait, ring):
    for path, ray_range in ((portrait, (2.25, 3.3)), (ring, (0.1, 2.6))):
        ds = ImageFolderDataset(path)
        gt = load_ground_truth(path)
        for i in range(0, 64, 8):
            record = gt["images"][i]
            depth, mask = load_gt_arrays(path, record)
            assert depth.dtype == np.float32 and depth.shape == (RES, RES)
            assert np.array_equal(mask > 0, depth > 0)
            cam2world, intrinsics = split_label(torch.from_numpy(ds.get_label(i))[None])
            origins, dirs = generate_rays(cam2world, intrinsics, RES)
            fg = np.nonzero(mask.reshape(-1))[0]
            bg = np.nonzero(mask.reshape(-1) == 0)[0]
            d = depth.reshape(-1)
            points = origins[0, fg].double().numpy() + d[fg, None] * dirs[0, fg].double().numpy()
            assert np.all(np.abs(points) <= synthetic.OBJECT_HALF + 1e-4)       # inside the EG3D box
            assert ray_range[0] < d[fg].min() and d[fg].max() < ray_range[1]
            obj = load_gt_object(path, record)
            assert np.abs(obj.sdf(points)).max() < 1e-4                      # on the surface
            # a little before the hit is outside, a little after is inside
            step = 2e-3 * dirs[0, fg].double().numpy()
            assert np.all(obj.sdf(points - step) > 0)
            assert np.mean(obj.sdf(points + step) < 0) > 0.95
            # background rays never reach the object: sample them densely inside the box
            ts = np.linspace(ray_range[0], ray_range[1], 200)
            far = origins[0, bg[::7]].double().numpy()[:, None] + ts[None, :, None] * dirs[0, bg[::7]].double().numpy()[:, None]
            assert obj.sdf(far).min() > 0


def test_mask_coverage(portrait, ring):
    for path, lo, hi in ((portrait, 0.2, 0.8), (ring, 0.05, 0.6)):
        cov = np.array([r["coverage"] for r in load_ground_truth(path)["images"]])
        assert lo < cov.mean() < hi, cov.mean()
        assert cov.min() > 0.02 and cov.max() < 0.95
    # image pixels outside the mask are mostly the background colour
    ds = ImageFolderDataset(ring)
    image = ds[0][0]
    _, mask = load_gt_arrays(ring, load_ground_truth(ring)["images"][0])
    outside = image[:, mask == 0]
    assert np.mean(outside == 255) > 0.9


def _yaws(path):
    labels = torch.from_numpy(ImageFolderDataset(path).labels)
    cam2world, intrinsics = split_label(labels)
    yaw, pitch, radius = yaw_pitch_radius(cam2world)
    return yaw.numpy(), pitch.numpy(), radius.numpy(), intrinsics.numpy()


def test_camera_distributions(portrait, ring):
    yaw, pitch, radius, intr = _yaws(portrait)
    assert np.all(np.abs(yaw - math.pi / 2) <= 0.5 + 1e-4) and 0.12 < yaw.std() < 0.35
    assert np.all(np.abs(pitch - math.pi / 2) <= 0.25 + 1e-4) and pitch.std() < yaw.std()
    np.testing.assert_allclose(radius, 2.7, atol=1e-5)
    np.testing.assert_allclose(intr[:, 0, 0], 4.2634, atol=1e-3)
    gt = load_ground_truth(portrait)
    np.testing.assert_allclose(yaw, [r["yaw"] for r in gt["images"]], atol=1e-4)

    yaw, pitch, radius, intr = _yaws(ring)
    assert yaw.min() < -2.5 and yaw.max() > 2.5                                # the full circle
    assert np.histogram(yaw, bins=4, range=(-math.pi, math.pi))[0].min() >= 5
    lo, hi = (math.pi / 2 * (1 - math.sin(e)) for e in (0.9, -0.15))
    assert np.all((pitch > lo - 1e-4) & (pitch < hi + 1e-4)) and pitch.min() < 0.7 and pitch.std() > 0.2
    np.testing.assert_allclose(radius, 1.3, atol=1e-5)
    np.testing.assert_allclose(intr[:, 0, 0], synthetic.FOCAL_SHAPENET, atol=1e-5)


def test_pose_attribute_bias(portrait, ring):
    # bias 1 (portrait fixture): attribute strongly follows yaw; bias 0 (ring fixture and a
    # portrait set): uncorrelated
    def corr(path):
        gt = load_ground_truth(path)["images"]
        yaw = _yaws(path)[0]
        offset = np.remainder(yaw - math.pi / 2 + math.pi, 2 * math.pi) - math.pi
        return np.corrcoef(offset, [r["attribute"] for r in gt])[0, 1]

    assert corr(portrait) > 0.9
    assert abs(corr(ring)) < 0.3
    rng_yaws = [synthetic.sample_camera(np.random.default_rng([0, i, 0]), synthetic.CAMERA_DISTRIBUTIONS["portrait"])[0]
                for i in range(64)]
    attrs = [synthetic.make_sample(i, 8, "portrait", seed=0, pose_attribute_bias=0.0, supersample=1).attribute
             for i in range(64)]
    assert abs(np.corrcoef(rng_yaws, attrs)[0, 1]) < 0.3
    # the attribute is a visible feature: snout size grows with the attribute
    sizes = []
    for a in (0.05, 0.95):
        obj = synthetic.sample_object(np.random.default_rng(1), "portrait", a)
        sizes.append(max(p.size[0] for p in obj.primitives if p.part == "snout"))
    assert sizes[1] > 2 * sizes[0]


def test_cli_and_interrupt(tmp_path, capsys, monkeypatch):
    dest = tmp_path / "cli.zip"
    rc = synthetic.main(["--dest", str(dest), "--count", "3", "--resolution", "16", "--cameras", "360",
                         "--seed", "1", "--bias", "0.3", "--no-progress"])
    assert rc == 0 and dest.exists()
    assert "images/s" in capsys.readouterr().out
    assert load_ground_truth(dest)["pose_attribute_bias"] == 0.3

    calls = {"n": 0}
    real = synthetic.make_sample

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_sample", interrupted)
    for name in ("int.zip", "int_dir"):
        calls["n"] = 0
        rc = synthetic.main(["--dest", str(tmp_path / name), "--count", "5", "--resolution", "16", "--no-progress"])
        assert rc == 130 and not (tmp_path / name).exists()
    assert sorted(os.listdir(tmp_path)) == ["cli.zip"]                         # no temporary leftovers


def test_pixel_rays_match_model_camera():
    from model.camera import orbit_label
    cam2world, intrinsics = split_label(orbit_label(torch.tensor([1.3]), torch.tensor([1.7]), fov_degrees=30.0))
    intrinsics = intrinsics.clone()
    intrinsics[:, 0, 1] = 0.05                                                # skew
    intrinsics[:, 0, 2] = 0.47
    origin, dirs = synthetic.pixel_rays(cam2world[0], intrinsics[0], 12)
    o_ref, d_ref = generate_rays(cam2world, intrinsics, 12)
    np.testing.assert_allclose(origin, o_ref[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(dirs, d_ref[0].numpy(), atol=2e-6)


def test_ground_truth_record_object_is_lazy(portrait):
    gt = load_ground_truth(portrait)
    record = gt["images"][2]
    assert "object" not in record                                         # not stored in the JSON
    obj = synthetic.ProceduralObject.from_dict(record["object"])          # fetched from gt/*.npz
    assert obj.to_dict() == load_gt_object(portrait, record).to_dict()
    assert obj.attribute == pytest.approx(record["attribute"])
    with pytest.raises(KeyError):
        record["nope"]
