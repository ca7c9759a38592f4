"""Generator and discriminator behaviour across the EG3D family of configurations."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import model
from model import presets
from model.config import SR_MODULES, SuperResConfig


def small(cfg):
    """Shrink a preset's widths so a CPU forward is quick; the topology stays the same."""
    cfg = copy.deepcopy(cfg)
    cfg.z_dim = cfg.w_dim = cfg.superres.w_dim = 32
    cfg.backbone.resolution = 32
    cfg.backbone.channel_base, cfg.backbone.channel_max = 256, 16
    cfg.superres.channels = [16, 8]
    cfg.rendering.depth_resolution = cfg.rendering.depth_resolution_importance = 6
    return cfg


@pytest.mark.parametrize("module", sorted(SR_MODULES))
def test_every_official_sr_variant_produces_its_resolution(module):
    out_res = SR_MODULES[module]["official_resolution"]
    cfg = small(presets.generator_config("tiny"))
    cfg.img_resolution = out_res
    cfg.neural_rendering_resolution = 16
    cfg.superres = SuperResConfig(module=module, num_fp16_res=0, w_dim=32, channels=[8, 4])
    torch.manual_seed(0)
    G = model.build_generator(cfg).eval()
    z, c = torch.randn(1, 32), model.camera.orbit_label(math.pi / 2, math.pi / 2)
    with torch.no_grad():
        out = G(z, c, noise_mode="const")
    assert out["image"].shape == (1, 3, out_res, out_res)
    assert out["image_raw"].shape == (1, 3, 16, 16)
    assert torch.isfinite(out["image"]).all()


@pytest.mark.parametrize("module,widths", [("SuperresolutionHybrid8XDC", (256, 128)),
                                           ("SuperresolutionHybrid8X", (128, 64)),
                                           ("SuperresolutionHybrid2X", (128, 64))])
def test_official_sr_widths(module, widths):
    from model.superres import SuperResolution
    res = SR_MODULES[module]["official_resolution"]
    sr = SuperResolution(SuperResConfig(module=module), 32, res)
    assert sr.block0.conv1.weight.shape[0] == widths[0]
    assert sr.block1.conv1.weight.shape[0] == widths[1]
    assert sr.block1.torgb.weight.shape[0] == 3


def test_ffhq512_shapes_match_the_official_architecture():
    G = model.build_generator(presets.generator_config("ffhq512"))
    assert G.num_ws == 14
    assert G.backbone.synthesis.b256.torgb.weight.shape == (96, 128, 1, 1)
    assert G.backbone.synthesis.b4.const.shape == (512, 4, 4)
    assert G.superresolution.input_resolution == 128
    D = model.build_discriminator(presets.discriminator_config("ffhq512"))
    assert D.b512.fromrgb.weight.shape == (64, 6, 1, 1)   # 32768 // 512
    assert D.mapping.fc7.weight.shape == (512, 512)


def test_shapenet_config_ignores_the_conditioning_pose():
    cfg = small(presets.generator_config("shapenet128"))
    torch.manual_seed(0)
    G = model.build_generator(cfg).eval()
    z = torch.randn(2, 32)
    a = G.mapping(z, model.camera.orbit_label([0.0, 1.0], [1.0, 2.0], radius=1.7))
    b = G.mapping(z, model.camera.orbit_label([2.0, 3.0], [1.5, 1.2], radius=1.7))
    torch.testing.assert_close(a, b)
    assert cfg.rendering.white_back


def test_pose_conditioning_changes_ws_when_on(tiny_generator):
    z = torch.randn(1, tiny_generator.z_dim)
    a = tiny_generator.mapping(z, model.camera.orbit_label(math.pi / 2, math.pi / 2))
    b = tiny_generator.mapping(z, model.camera.orbit_label(math.pi / 2 + 0.4, math.pi / 2))
    assert (a - b).abs().max() > 1e-3


def test_truncation_cutoff_only_touches_the_first_layers(tiny_generator):
    G = tiny_generator
    G.backbone.mapping.w_avg.normal_()
    z, c = torch.randn(2, G.z_dim), model.camera.orbit_label(math.pi / 2, math.pi / 2).expand(2, -1)
    full = G.mapping(z, c)
    cut = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, 3:], full[:, 3:])
    torch.testing.assert_close(cut[:, :3], G.backbone.mapping.w_avg.lerp(full[:, :3], 0.5))


def test_render_stages_compose_to_forward(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), model.camera.orbit_label(1.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(z, c)
        staged = G.render(G.planes(ws, noise_mode="const"), ws, c, deterministic=True)
        direct = G(z, c, noise_mode="const", deterministic=True)
    for key in ("image", "image_raw", "image_depth", "feature_image", "image_alpha"):
        torch.testing.assert_close(staged[key], direct[key])
    r = G.neural_rendering_resolution
    assert staged["image_alpha"].shape == (1, 1, r, r)
    assert ((staged["image_alpha"] >= 0) & (staged["image_alpha"] <= 1 + 1e-6)).all()


def test_deterministic_mode_is_repeatable_and_random_mode_is_not(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), model.camera.orbit_label(1.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(z, c)
        planes = G.planes(ws, noise_mode="const")
        a = G.render(planes, ws, c, deterministic=True)["image_depth"]
        b = G.render(planes, ws, c, deterministic=True)["image_depth"]
        r = G.render(planes, ws, c)["image_depth"]
    torch.testing.assert_close(a, b)
    assert (a - r).abs().max() > 0


def test_sample_overrides_and_no_superresolution(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), model.camera.orbit_label(1.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(z, c)
        out = G.render(G.planes(ws), ws, c, neural_rendering_resolution=16, depth_resolution=4,
                       depth_resolution_importance=0, superresolution=False, return_samples=True)
    assert "image" not in out and out["image_raw"].shape == (1, 3, 16, 16)
    assert out["depths_coarse"].shape == (1, 256, 4, 1) and out["depths_fine"] is None


def test_gradients_reach_every_generator_parameter(tiny_generator):
    G = tiny_generator.train()
    z, c = torch.randn(2, G.z_dim), model.camera.orbit_label([1.2, 1.9], [1.5, 1.6])
    out = G(z, c)
    (out["image"].square().mean() + out["image_raw"].square().mean()).backward()
    no_grad = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # noise strengths of the SR are unused (its noise mode is 'none'); the backbone's are used.
    assert all(n.startswith("superresolution") and n.endswith("noise_strength") for n in no_grad), no_grad


def test_discriminator_sees_both_images_and_the_camera():
    torch.manual_seed(0)
    D = model.build_discriminator(presets.discriminator_config("tiny")).eval()
    img = {"image": torch.randn(2, 3, 64, 64), "image_raw": torch.randn(2, 3, 32, 32)}
    c = model.camera.orbit_label([1.2, 1.9], [1.5, 1.6])
    base = D(img, c)
    assert base.shape == (2, 1)
    changed_raw = D({"image": img["image"], "image_raw": img["image_raw"] + 1}, c)
    changed_cam = D(img, model.camera.orbit_label([0.2, 2.9], [1.0, 2.0]))
    assert (base - changed_raw).abs().max() > 1e-4 and (base - changed_cam).abs().max() > 1e-4


def test_discriminator_blur_options():
    torch.manual_seed(0)
    D = model.build_discriminator(presets.discriminator_config("tiny")).eval()
    img = {"image": torch.randn(2, 3, 64, 64), "image_raw": torch.randn(2, 3, 32, 32)}
    c = model.camera.orbit_label([1.2, 1.9], [1.5, 1.6])
    base = D(img, c)
    assert (D(img, c, blur_sigma=2.0) - base).abs().max() > 1e-4
    assert (D(img, c, blur_sigma_raw=2.0) - base).abs().max() > 1e-4
    torch.testing.assert_close(D(img, c, blur_sigma=0.1, blur_sigma_raw=0.1), base)


def test_fp16_blocks_stay_close_to_float32(monkeypatch):
    """The fp16 path (taken on CUDA for the top resolutions) run here on CPU by forcing it."""
    from model import layers
    cfg = presets.generator_config("tiny")
    cfg.backbone.num_fp16_res, cfg.backbone.conv_clamp = 2, 256
    cfg.superres.num_fp16_res = 4
    torch.manual_seed(0)
    G = model.build_generator(cfg).eval()
    z, c = torch.randn(2, G.z_dim), model.camera.orbit_label([1.2, 1.9], [1.5, 1.6])
    with torch.no_grad():
        ref = G(z, c, noise_mode="const", deterministic=True)
        monkeypatch.setattr(layers, "block_dtype",
                            lambda use_fp16, device: torch.float16 if use_fp16 else torch.float32)
        half = G(z, c, noise_mode="const", deterministic=True)
    for key in ("image", "image_raw"):
        assert half[key].dtype == torch.float32
        rel = (half[key] - ref[key]).norm() / ref[key].norm()
        assert 0 < rel < 2e-2, (key, rel)


def test_official_density_query_api(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), model.camera.orbit_label(1.2, 1.5)
    points = torch.rand(1, 50, 3) - 0.5
    with torch.no_grad():
        ws = G.mapping(z, c)
        direct = G.sample_density(G.planes(ws, noise_mode="const"), points)
        via_z = G.sample(points, torch.zeros_like(points), z, c, noise_mode="const")
        via_ws = G.sample_mixed(points, torch.zeros_like(points), ws, noise_mode="const")
    for out in (via_z, via_ws):
        torch.testing.assert_close(out["sigma"], direct["sigma"])
        torch.testing.assert_close(out["rgb"], direct["rgb"])


def test_official_rendering_kwargs_view_reads_and_writes_the_config(tiny_generator):
    G = tiny_generator
    kw = G.rendering_kwargs
    assert kw["avg_camera_pivot"] == G.cfg.rendering.avg_camera_pivot
    assert kw["superresolution_module"] == "training.superresolution.SuperresolutionHybrid2X"
    kw["depth_resolution"] = int(kw["depth_resolution"] * 2)      # what official gen_videos does
    assert G.cfg.rendering.depth_resolution == 24
    with pytest.raises(KeyError, match="architecture"):
        kw["decoder_lr_mul"] = 2.0
    assert set(dict(kw)) >= {"ray_start", "ray_end", "box_warp", "c_scale"}
    assert "white_back" not in kw           # the official training script writes it only when True
