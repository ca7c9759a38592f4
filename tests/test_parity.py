"""Numerical parity with the official EG3D implementation (fixtures in ../shared).

Every test runs on both official fixtures: `tiny128` (128 px, SuperresolutionHybrid2X, 64 px
neural render) and `small512` (512 px, SuperresolutionHybrid8XDC, 128 px neural render, the
architecture of the released FFHQ/AFHQ 512 models).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import model

TOL = 1e-4     # max absolute error, float32 on CPU

# Per fixture: output / neural resolution, SR module, mapping depth, backbone widths.
CONFIGS = {
    "tiny128": dict(img=128, nrr=64, sr="SuperresolutionHybrid2X", map_depth=2, cbase=1024),
    "small512": dict(img=512, nrr=128, sr="SuperresolutionHybrid8XDC", map_depth=1, cbase=4096),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def name(request):
    return request.param


@pytest.fixture(scope="module")
def reference(fixture_dir, name):
    with np.load(fixture_dir / f"{name}_reference.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def nets(fixture_dir, name):
    G = model.load(fixture_dir / f"{name}.pkl")             # G_ema by default
    D = model.load(fixture_dir / f"{name}.pkl", net="D")
    return G, D


def feature_image_key(reference):
    """small512 stores the feature image at every 4th pixel only."""
    return ("feature_image", (slice(None),) * 4) if "feature_image" in reference else \
        ("feature_image_s4", (slice(None), slice(None), slice(None, None, 4), slice(None, None, 4)))


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


def test_imported_config_matches_the_snapshot(nets, name):
    G, D = nets
    cfg, expected = G.cfg, CONFIGS[name]
    assert (cfg.z_dim, cfg.w_dim, cfg.c_dim, cfg.img_resolution) == (512, 512, 25, expected["img"])
    assert cfg.superres.module == expected["sr"]
    # small512's constructor default is 64 but the stored attribute (128) wins.
    assert cfg.neural_rendering_resolution == expected["nrr"]
    assert cfg.rendering.plane_axes == "official" and cfg.rendering.official_compat
    assert (cfg.backbone.channel_base, cfg.backbone.channel_max, cfg.mapping.num_layers) == \
        (expected["cbase"], 64, expected["map_depth"])
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


def test_rays(reference, name):
    c2w, intrinsics = model.camera.split_label(torch.from_numpy(reference["cam_c"]))
    origins, directions = model.camera.generate_rays(c2w, intrinsics, CONFIGS[name]["nrr"])
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


@pytest.mark.parametrize("key", ["image_raw", "image_depth", "image"])
def test_images(outputs, reference, key):
    assert_close(outputs["out"][key], reference[key], key)


def test_feature_image(outputs, reference):
    key, stride = feature_image_key(reference)
    assert_close(outputs["out"]["feature_image"][stride], reference[key], key)


def test_image_raw_in_place_sr_change_only_where_official(outputs, reference, name):
    """Official quirk 1: the no-upsampling first block of the 2X SR adds its ToRGB into
    image_raw; the 8XDC's first block upsamples first, so image_raw stays the composite."""
    out = outputs["out"]
    diff = (out["image_raw"] - out["feature_image"][:, :3]).abs().max().item()
    if name == "tiny128":
        expected = np.abs(reference["image_raw"] - reference["feature_image"][:, :3]).max()
        assert diff == pytest.approx(expected, abs=1e-4) and diff > 1.0
    else:
        assert diff == 0.0


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
