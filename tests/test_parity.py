"""Numerical parity with the official EG3D implementation (fixtures in ../shared)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import model

TOL = 1e-4     # max absolute error, float32 on CPU


@pytest.fixture(scope="module")
def nets(fixture_dir):
    G = model.load(fixture_dir / "tiny128.pkl")             # G_ema by default
    D = model.load(fixture_dir / "tiny128.pkl", net="D")
    return G, D


@pytest.fixture(scope="module")
def outputs(nets, reference):
    G, D = nets
    z, cond_c, cam_c = (torch.from_numpy(reference[k]) for k in ("z", "cond_c", "cam_c"))
    with torch.no_grad():
        ws = G.mapping(z, cond_c, truncation_psi=1)
        planes = G.planes(ws, noise_mode="const")
        out = G.render(planes, ws, cam_c, deterministic=True, return_samples=True,
                       path="reference")
        logits = D({"image": out["image"], "image_raw": out["image_raw"]}, cam_c)
        return dict(
            ws=ws, ws_trunc=G.mapping(z, cond_c, truncation_psi=0.7, truncation_cutoff=None),
            planes=planes, out=out, logits=logits,
            probe=G.sample_density(planes, torch.from_numpy(reference["probe_points"])),
            probe_wide=G.sample_density(planes, torch.from_numpy(reference["probe_points_wide"])))


def assert_close(actual, expected, name):
    actual = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual.astype(np.float64) - expected).max()
    assert err < TOL, f"{name}: max abs error {err:.3g} >= {TOL}"


def test_imported_config_matches_the_snapshot(nets):
    G, D = nets
    cfg = G.cfg
    assert (cfg.z_dim, cfg.w_dim, cfg.c_dim, cfg.img_resolution) == (512, 512, 25, 128)
    assert cfg.superres.module == "SuperresolutionHybrid2X"
    assert cfg.neural_rendering_resolution == 64
    assert cfg.rendering.plane_axes == "official" and cfg.rendering.official_compat
    assert (cfg.backbone.channel_base, cfg.backbone.channel_max, cfg.mapping.num_layers) == (1024, 64, 2)
    assert G.num_ws == 14
    assert D.cfg.mbstd_group_size == 4 and D.cfg.conv_clamp == 256


@pytest.mark.parametrize("key", ["ws", "ws_trunc"])
def test_mapping(outputs, reference, key):
    assert_close(outputs[key], reference[key], key)


def test_planes(outputs, reference):
    planes = outputs["planes"]
    assert planes.shape == (2, 3, 32, 256, 256)
    p64 = planes.double()
    stats = torch.stack([p64.mean(dim=(-1, -2)), p64.std(dim=(-1, -2), unbiased=False)], dim=-1)
    assert_close(stats, reference["planes_stats"], "planes_stats")
    assert_close(planes[:, :, :, ::8, ::8], reference["planes_slice"], "planes_slice")


def test_decoder_probes(outputs, reference):
    assert_close(outputs["probe"]["sigma"], reference["probe_sigma"], "probe_sigma")
    assert_close(outputs["probe"]["rgb"], reference["probe_rgb"], "probe_rgb")
    # Many of the wide points lie outside the box: the zero-padding path.
    assert_close(outputs["probe_wide"]["sigma"], reference["probe_sigma_wide"], "probe_sigma_wide")
    assert_close(outputs["probe_wide"]["rgb"], reference["probe_rgb_wide"], "probe_rgb_wide")


def test_rays(reference):
    c2w, intrinsics = model.camera.split_label(torch.from_numpy(reference["cam_c"]))
    origins, directions = model.camera.generate_rays(c2w, intrinsics, 64)
    assert_close(origins[:, :1], reference["ray_origins"], "ray_origins")
    assert_close(directions, reference["ray_directions"], "ray_directions")


def test_sampling(outputs, reference):
    idx = torch.from_numpy(reference["sampling_ray_index"])
    out = outputs["out"]
    assert_close(out["depths_coarse"][:, idx, :, 0], reference["depths_coarse_subset"], "depths_coarse")
    assert_close(out["weights_coarse"][:, idx, :, 0], reference["coarse_weights_subset"], "coarse_weights")
    assert_close(out["depths_fine"][:, idx, :, 0], reference["depths_fine_subset"], "depths_fine")
    # Official quirk: fine samples stop at the second-to-last coarse midpoint (3.26649 here).
    assert out["depths_fine"].max() <= (3.3 + 3.3 - 1.05 / 47) / 2 + 1e-6


@pytest.mark.parametrize("key", ["feature_image", "image_raw", "image_depth", "image"])
def test_images(outputs, reference, key):
    assert_close(outputs["out"][key], reference[key], key)


def test_image_raw_carries_the_in_place_sr_change(outputs, reference):
    """Official quirk 1: the first 2X SR block adds its ToRGB into image_raw."""
    out = outputs["out"]
    diff = (out["image_raw"] - out["feature_image"][:, :3]).abs().max().item()
    expected = np.abs(reference["image_raw"] - reference["feature_image"][:, :3]).max()
    assert diff == pytest.approx(expected, abs=1e-4) and diff > 1.0


def test_discriminator(nets, outputs, reference):
    G, D = nets
    assert_close(outputs["logits"], reference["d_logits"], "d_logits")
    with torch.no_grad():
        logits = D({"image": torch.from_numpy(reference["image"]),
                    "image_raw": torch.from_numpy(reference["image_raw"])}, torch.from_numpy(reference["cam_c"]))
    assert_close(logits, reference["d_logits"], "d_logits (reference inputs)")


def test_camera_helpers(reference):
    poses = torch.cat([model.camera.look_at_pose(p[0], p[1], p[2], tuple(p[3:6]))
                       for p in reference["pose_inputs"]])
    assert_close(poses, reference["pose_cam2world"], "pose_cam2world")
    for fov, expected in zip(reference["intrinsics_fov_deg"], reference["intrinsics"]):
        assert_close(model.camera.fov_to_intrinsics(float(fov)), expected, f"intrinsics({fov})")
    label = model.camera.orbit_label(np.pi / 2, np.pi / 2)
    assert_close(label.expand(2, -1), reference["cond_c"], "cond_c")


def test_clean_mode_differs_only_where_documented(nets, reference):
    """With the compatibility switch off, image_raw is the composited colour (no in-place SR
    change) and importance samples may reach the far end of the ray; planes are unchanged."""
    import copy
    G, _ = nets
    cfg = copy.deepcopy(G.cfg)
    cfg.rendering.official_compat = False
    clean = model.build_generator(cfg).eval()
    clean.load_state_dict(G.state_dict())
    z, cond_c, cam_c = (torch.from_numpy(reference[k]) for k in ("z", "cond_c", "cam_c"))
    with torch.no_grad():
        ws = clean.mapping(z, cond_c)
        out = clean.render(clean.planes(ws, noise_mode="const"), ws, cam_c, deterministic=True,
                           return_samples=True, path="reference")
    torch.testing.assert_close(out["image_raw"], out["feature_image"][:, :3])
    assert out["depths_fine"].max().item() > 3.29
