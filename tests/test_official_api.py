"""G as a drop-in for the official TriPlaneGenerator: the calls official scripts and community
projectors make, exercised the way they make them.

Entry points covered (calls collected by reading their code; none of it is copied here):
- gen_samples.py: --reload_modules rebuild, rendering_kwargs.get(...), mapping + synthesis,
  --shapes density queries with G.sample.
- gen_videos.py: rendering_kwargs sampling multiplier, neural_rendering_resolution, synthesis
  by keyword (ws=, c=) per image_mode, G.sample_mixed with truncation_psi.
- the official visualizer's renderer (viz/renderer.py): deepcopy, reload, backbone attributes,
  depth_resolution_default keys, backbone caching, forward hooks on every module.
- PTI-style projectors (W / W+ projection over noise buffers with force_fp32, then pivotal
  tuning of G's parameters, torch.save of G).
"""
from __future__ import annotations

import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch

import model
from model import camera, layers, ops, presets
from model.generator import TriPlaneGenerator
from model.official_api import RenderingKwargs
from model.pkl_import import read_network
from model.rendering import ray_box_limits


@pytest.fixture(scope="module")
def official_G(fixture_dir):
    return model.load(fixture_dir / "tiny128.pkl")


@pytest.fixture()
def G_fast(official_G):
    """A copy of the imported model with the knobs scripts turn for quick previews."""
    G = copy.deepcopy(official_G)
    G.neural_rendering_resolution = 16
    G.rendering_kwargs["depth_resolution"] = 8
    G.rendering_kwargs["depth_resolution_importance"] = 8
    return G


@pytest.fixture()
def small_G(tiny_generator):
    """The tiny preset rendering at 16 px (its SR still outputs 64 px)."""
    tiny_generator.neural_rendering_resolution = 16
    return tiny_generator


def _copy_params_and_buffers(src, dst):
    """What official scripts do after rebuilding G: copy every parameter and buffer by name."""
    src_tensors = dict(src.named_parameters()) | dict(src.named_buffers())
    dst_tensors = dict(dst.named_parameters()) | dict(dst.named_buffers())
    assert set(src_tensors) == set(dst_tensors)      # require_all
    with torch.no_grad():
        for name, tensor in dst_tensors.items():
            tensor.copy_(src_tensors[name])


def _orbit(G, yaw, pitch=np.pi / 2):
    pivot = G.rendering_kwargs.get("avg_camera_pivot", [0, 0, 0])
    radius = G.rendering_kwargs.get("avg_camera_radius", 2.7)
    return camera.orbit_label(yaw, pitch, radius, pivot)


def _z(G, seed, n=1):
    return torch.from_numpy(np.random.RandomState(seed).randn(n, G.z_dim)).float()


# ------------------------------------------------------------------------------------------------
# gen_samples.py


def test_gen_samples_reload_modules_rebuilds_an_identical_generator(G_fast, fixture_dir):
    G = G_fast
    G_new = TriPlaneGenerator(*G.init_args, **G.init_kwargs).eval().requires_grad_(False)
    _copy_params_and_buffers(G, G_new)
    G_new.neural_rendering_resolution = G.neural_rendering_resolution
    G_new.rendering_kwargs = G.rendering_kwargs
    assert G_new.cfg == G.cfg and G_new.rendering_kwargs == G.rendering_kwargs

    z, cond = _z(G, 3), _orbit(G, np.pi / 2)
    cam = _orbit(G, np.pi / 2 + 0.4)
    images = []
    for net in (G, G_new):
        ws = net.mapping(z, cond, truncation_psi=0.7, truncation_cutoff=14)
        torch.manual_seed(1)
        images.append(net.synthesis(ws, cam)["image"])
    assert images[0].shape == (1, 3, 128, 128)
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=0)

    # The official constructor arguments are exactly the snapshot's.
    assert G.init_args == [] and G.init_kwargs == read_network(fixture_dir / "tiny128.pkl").init_kwargs


def test_gen_samples_shapes_density_query(G_fast):
    G = G_fast
    z, cond = _z(G, 0), _orbit(G, np.pi / 2)
    side = G.rendering_kwargs["box_warp"]
    grid = torch.linspace(-side / 2, side / 2, 6)
    samples = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(1, -1, 3)
    dirs = torch.zeros_like(samples)
    dirs[..., -1] = -1
    sigma = torch.cat([G.sample(samples[:, h:h + 108], dirs[:, h:h + 108], z, cond, truncation_psi=0.7,
                                truncation_cutoff=14, noise_mode="const")["sigma"]
                       for h in range(0, samples.shape[1], 108)], dim=1)
    ws = G.mapping(z, cond, truncation_psi=0.7, truncation_cutoff=14)
    ref = G.sample_density(G.planes(ws, noise_mode="const"), samples)["sigma"]
    assert sigma.shape == (1, 216, 1)
    torch.testing.assert_close(sigma, ref)


# ------------------------------------------------------------------------------------------------
# gen_videos.py


def test_gen_videos_calls(official_G):
    G = copy.deepcopy(official_G)
    multiplier = 0.25                                       # --sample_mult
    G.rendering_kwargs["depth_resolution"] = int(G.rendering_kwargs["depth_resolution"] * multiplier)
    G.rendering_kwargs["depth_resolution_importance"] = int(
        G.rendering_kwargs["depth_resolution_importance"] * multiplier)
    G.neural_rendering_resolution = 16                      # --nrr
    assert (G.cfg.rendering.depth_resolution, G.cfg.rendering.depth_resolution_importance) == (12, 12)

    zs = torch.cat([_z(G, s) for s in (0, 1)])
    c = _orbit(G, [np.pi / 2] * 2)
    ws = G.mapping(z=zs, c=c, truncation_psi=0.7, truncation_cutoff=14)
    _ = G.synthesis(ws[:1], c[:1])                          # warm up
    out = G.synthesis(ws=ws[:1], c=c[:1], noise_mode="const")     # the script indexes [image_mode]
    frames = {mode: out[mode][0] for mode in ("image", "image_depth", "image_raw")}
    assert frames["image"].shape == (3, 128, 128) and frames["image_raw"].shape == (3, 16, 16)
    assert frames["image_depth"].shape == (1, 16, 16)
    assert 2.25 <= frames["image_depth"].min() and frames["image_depth"].max() <= 3.3

    points = torch.rand(1, 64, 3) - 0.5
    dirs = torch.zeros_like(points)
    with_psi = G.sample_mixed(points, dirs, ws[:1], truncation_psi=0.7, noise_mode="const")
    plain = G.sample_mixed(points, dirs, ws[:1], noise_mode="const")
    torch.testing.assert_close(with_psi["sigma"], plain["sigma"])     # ws are already truncated


# ------------------------------------------------------------------------------------------------
# The official visualizer's renderer


def test_visualizer_renderer_calls(official_G):
    G = copy.deepcopy(official_G).eval().requires_grad_(False)        # get_network
    # _tweak_network with module reloading on.
    G_new = TriPlaneGenerator(*G.init_args, **G.init_kwargs).eval().requires_grad_(False)
    _copy_params_and_buffers(G, G_new)
    G_new.neural_rendering_resolution = 16
    G_new.rendering_kwargs = G.rendering_kwargs
    G = G_new

    assert G.backbone.num_ws == G.num_ws == 14          # the snapshot's options file says 14
    assert any("noise_const" in name for name, _ in G.backbone.named_buffers())
    assert not hasattr(G.backbone, "input")                # no StyleGAN3 input transform
    if "depth_resolution_default" not in G.rendering_kwargs:
        G.rendering_kwargs["depth_resolution_default"] = G.rendering_kwargs["depth_resolution"]
        G.rendering_kwargs["depth_resolution_importance_default"] = G.rendering_kwargs["depth_resolution_importance"]
    for mult in (0.125, 0.25):
        G.rendering_kwargs["depth_resolution"] = int(G.rendering_kwargs["depth_resolution_default"] * mult)
        G.rendering_kwargs["depth_resolution_importance"] = int(
            G.rendering_kwargs["depth_resolution_importance_default"] * mult)
    assert G.rendering_kwargs["depth_resolution_default"] == 48
    assert G.cfg.rendering.depth_resolution == G.cfg.rendering.depth_resolution_importance == 12
    json.dumps(G.rendering_kwargs)

    seeds = [0, 1]
    zs = torch.cat([_z(G, s) for s in seeds])
    cs = _orbit(G, [np.pi / 2] * 2)
    w_avg = G.backbone.mapping.w_avg
    all_ws = G.mapping(z=zs, c=cs, truncation_psi=0.8, truncation_cutoff=0) - w_avg
    w = (all_ws[:1] * 0.5 + all_ws[1:] * 0.5)
    stylemix_idx = [i for i in [0, 1, 12] if 0 <= i < G.backbone.num_ws]
    w[:, stylemix_idx] = all_ws[1:, stylemix_idx]
    w = w + w_avg
    c = _orbit(G, np.pi / 2 + 0.3)

    def run_synthesis_net(net, *args, capture_layer=None, **kwargs):
        """Forward hooks on every module list the 4-D outputs (the viewer's layer list)."""
        names = {mod: name for name, mod in net.named_modules()}
        found, captured = [], []

        def hook(module, _inputs, outputs):
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            for out in outputs:
                if isinstance(out, torch.Tensor) and out.ndim in (4, 5):
                    found.append(names[module] or "output")
                    if found[-1] == capture_layer:
                        captured.append(out)
        hooks = [m.register_forward_hook(hook) for m in net.modules()]
        try:
            out = net.synthesis(*args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        return out, found, captured

    kwargs = dict(noise_mode="const", force_fp32=False, cache_backbone=True, use_cached_backbone=False)
    torch.manual_seed(0)
    out, found, _ = run_synthesis_net(G, w, c, **kwargs)
    assert {"backbone.synthesis.b4", "backbone.synthesis.b256", "superresolution.block1"} <= set(found)
    assert hash((G.synthesis, tuple(sorted(kwargs.items()))))          # the layer-list cache key
    for render_type in ("image", "image_depth", "image_raw"):
        assert out[render_type][0].ndim == 3
    planes = G._last_planes
    assert planes.shape == (1, 96, 256, 256)

    # Backbone caching: the next frame (same w) reuses the cached planes; capture a layer too.
    cached_kwargs = dict(kwargs, use_cached_backbone=True)
    torch.manual_seed(0)
    cached, found, captured = run_synthesis_net(G, torch.zeros_like(w), c, capture_layer="superresolution.block0",
                                                **cached_kwargs)
    assert "backbone.synthesis.b4" not in found and captured[0].shape[-1] == 64
    torch.manual_seed(0)
    ref = G.render(planes.reshape(1, 3, 32, 256, 256), torch.zeros_like(w), c)
    torch.testing.assert_close(cached["image"], ref["image"], rtol=0, atol=0)
    torch.testing.assert_close(cached["image_depth"], out["image_depth"], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# PTI-style projector and pivotal tuning


def test_pti_style_projection_and_tuning(official_G, tmp_path):
    G = copy.deepcopy(official_G).eval().requires_grad_(False).float()
    for key in ("depth_resolution", "depth_resolution_importance"):     # load_old_G(sampling_multiplier)
        G.rendering_kwargs[key] = int(G.rendering_kwargs[key] / 12)
    G.neural_rendering_resolution = 16
    c = _orbit(G, np.pi / 2)
    assert G.img_channels == 3 and G.img_resolution == 128

    # W statistics from numpy (float64) latents.
    z_samples = torch.from_numpy(np.random.RandomState(123).randn(16, G.z_dim))
    w_samples = G.mapping(z_samples, c.repeat(16, 1))[:, :1]
    w_avg = w_samples.mean(0, keepdim=True)
    noise_bufs = {n: b for n, b in G.backbone.synthesis.named_buffers() if "noise_const" in n}
    assert len(noise_bufs) == 2 * len(G.backbone.synthesis.block_resolutions) - 1
    w_opt = w_avg.repeat(1, G.backbone.mapping.num_ws, 1).detach().clone().requires_grad_(True)
    for buf in noise_bufs.values():
        buf[:] = torch.randn_like(buf)
        buf.requires_grad = True
    opt = torch.optim.Adam([w_opt] + list(noise_bufs.values()), lr=0.05)
    target = torch.zeros(1, 3, 128, 128)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        synth = G.synthesis(w_opt, c, noise_mode="const", force_fp32=True)["image"]
        loss = (synth - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert w_opt.grad.abs().sum() > 0
        assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in noise_bufs.values())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    # Pivotal tuning: G's own parameters.
    w_pivot = w_opt.detach()
    G.requires_grad_(True)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    torch.manual_seed(0)
    before = G.synthesis(w_pivot, c, noise_mode="const")["image"]
    (before - target).square().mean().backward()
    opt.step()
    # The locality regulariser maps random labels at psi 0.5.
    G.mapping(z=torch.from_numpy(np.random.randn(2, G.z_dim)), c=torch.from_numpy(np.random.randn(2, G.c_dim)),
              truncation_psi=0.5)

    G.requires_grad_(False)
    torch.manual_seed(0)
    tuned = G.synthesis(w_pivot, c, noise_mode="const")["image"]
    assert (tuned - before).abs().max() > 0

    # Saving: the state dict into a freshly loaded G, and the whole module with torch.save.
    fresh = copy.deepcopy(official_G)
    fresh.load_state_dict(G.state_dict())
    for name, tensor in fresh.state_dict().items():
        torch.testing.assert_close(tensor, G.state_dict()[name], rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(G, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    assert whole.rendering_kwargs == G.rendering_kwargs and whole.rendering_kwargs._cfg is whole.cfg
    torch.manual_seed(0)
    torch.testing.assert_close(whole.synthesis(w_pivot, c, noise_mode="const")["image"], tuned, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# The keyword arguments one by one


def test_unknown_keywords_raise_type_error_naming_them(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), camera.orbit_label(1.2, 1.5)
    ws = G.mapping(z, c)
    pts = torch.zeros(1, 4, 3)
    with pytest.raises(TypeError, match=r"synthesis\(\).*\['bogus', 'noise'\]"):
        G.synthesis(ws, c, bogus=1, noise=2)
    with pytest.raises(TypeError, match="nosie_mode"):
        G(z, c, nosie_mode="const")
    with pytest.raises(TypeError, match="update_ema'"):
        G.sample(pts, pts, z, c, update_ema=True)
    with pytest.raises(TypeError, match=r"sample_mixed\(\).*cache_backbone"):
        G.sample_mixed(pts, pts, ws, cache_backbone=True)


def test_update_emas_updates_w_avg_like_the_official_mapping(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(3, G.z_dim), camera.orbit_label([1.0, 1.2, 1.4], 1.5)
    pts = torch.zeros(3, 4, 3)
    beta = G.backbone.mapping.w_avg_beta
    G.backbone.mapping.w_avg.normal_()
    with torch.no_grad():
        w = G.mapping(z, c)[:, 0]
        start = G.backbone.mapping.w_avg.clone()
        G.sample(pts, pts, z, c)                                 # default: no update
        torch.testing.assert_close(G.backbone.mapping.w_avg, start, rtol=0, atol=0)
        G.sample(pts, pts, z, c, update_emas=True, noise_mode="const")
        expected = w.mean(0).lerp(start, beta)
        torch.testing.assert_close(G.backbone.mapping.w_avg, expected)
        G(z, c, update_emas=True, neural_rendering_resolution=8, depth_resolution=4,
          depth_resolution_importance=0, superresolution=False)
        torch.testing.assert_close(G.backbone.mapping.w_avg, w.mean(0).lerp(expected, beta))
        G.sample_mixed(pts, pts, G.mapping(z, c), update_emas=True)   # ws given: nothing to track
        torch.testing.assert_close(G.backbone.mapping.w_avg, w.mean(0).lerp(expected, beta))


def test_neural_rendering_resolution_persists_after_synthesis(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), camera.orbit_label(1.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(z, c)
        out = G.synthesis(ws, c, neural_rendering_resolution=8)
        assert out["image_raw"].shape[-1] == 8 and G.neural_rendering_resolution == 8
        assert G.cfg.neural_rendering_resolution == 8
        assert G.synthesis(ws, c)["image_raw"].shape[-1] == 8       # later calls keep it
        G(z, c, neural_rendering_resolution=16)
        assert G.neural_rendering_resolution == 16
        G.render(G.planes(ws), ws, c, neural_rendering_resolution=8)  # our stage API: no side effect
        assert G.neural_rendering_resolution == 16


def test_force_fp32_runs_fp16_blocks_in_float32(monkeypatch):
    cfg = presets.generator_config("tiny")
    cfg.backbone.num_fp16_res, cfg.backbone.conv_clamp = 2, 256
    cfg.superres.num_fp16_res = 4
    torch.manual_seed(0)
    G = model.build_generator(cfg).eval()
    G.neural_rendering_resolution = 16
    z, c = torch.randn(2, G.z_dim), camera.orbit_label([1.2, 1.9], [1.5, 1.6])
    with torch.no_grad():
        ref = G(z, c, noise_mode="const", deterministic=True)          # CPU: all float32
        # As on CUDA: blocks flagged for fp16 run in float16 unless forced.
        monkeypatch.setattr(layers, "block_dtype",
                            lambda use_fp16, device: torch.float16 if use_fp16 else torch.float32)
        half = G(z, c, noise_mode="const", deterministic=True)
        forced = G(z, c, noise_mode="const", deterministic=True, force_fp32=True)
    assert (half["image"] - ref["image"]).abs().max() > 1e-4
    assert (half["image_raw"] - ref["image_raw"]).abs().max() > 0     # fp16 in the backbone too
    for key in ("image", "image_raw", "image_depth"):
        torch.testing.assert_close(forced[key], ref[key], rtol=0, atol=0)


def test_fused_modconv_reaches_every_modulated_conv(monkeypatch, small_G):
    G = small_G
    z, c = torch.randn(2, G.z_dim), camera.orbit_label([1.2, 1.9], [1.5, 1.6])
    seen = []
    real = ops.modulated_conv2d

    def spy(*args, **kwargs):
        seen.append(kwargs.get("fused", True))
        return real(*args, **kwargs)
    monkeypatch.setattr(ops, "modulated_conv2d", spy)
    outs = {}
    with torch.no_grad():
        for fused in (None, False, True):
            seen.clear()
            outs[fused] = G(z, c, noise_mode="const", deterministic=True, fused_modconv=fused)["image"]
            modes = set(seen)
            assert len(seen) > 10 and modes == ({True} if fused is None else {fused})  # eval: fused
    torch.testing.assert_close(outs[False], outs[True], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[None], outs[True], rtol=0, atol=0)


def test_backbone_cache(small_G):
    G = small_G
    z, c = torch.randn(2, G.z_dim), camera.orbit_label([1.2, 1.9], 1.5)
    with torch.no_grad():
        ws = G.mapping(z, c)
        assert G._last_planes is None
        first = G.synthesis(ws, c, noise_mode="const", deterministic=True, cache_backbone=True)
        assert G._last_planes.shape == (2, 96, 64, 64)
        other_ws = G.mapping(torch.randn(2, G.z_dim), c)
        planes_only = G.render(G.planes(ws, noise_mode="const"), other_ws, c, deterministic=True)
        cached = G.synthesis(other_ws, c, deterministic=True, use_cached_backbone=True)
        torch.testing.assert_close(cached["image_raw"], first["image_raw"], rtol=0, atol=0)
        torch.testing.assert_close(cached["image"], planes_only["image"], rtol=0, atol=0)  # SR uses new ws
        fresh = G.synthesis(other_ws, c, noise_mode="const", deterministic=True)
        assert (fresh["image_raw"] - first["image_raw"]).abs().max() > 1e-3
        # Through G(z, c, ...) as well, and update_emas in synthesis changes nothing.
        again = G(z, c, noise_mode="const", deterministic=True, use_cached_backbone=True, update_emas=False)
        torch.testing.assert_close(again["image_raw"], first["image_raw"], rtol=0, atol=0)


def test_density_noise_in_sample_and_sample_mixed(tiny_generator):
    G = tiny_generator
    z, c = torch.randn(1, G.z_dim), camera.orbit_label(1.2, 1.5)
    pts = torch.rand(1, 200, 3) - 0.5
    with torch.no_grad():
        ws = G.mapping(z, c)
        clean = G.sample_density(G.planes(ws, noise_mode="const"), pts)
        assert "density_noise" not in G.rendering_kwargs
        G.rendering_kwargs["density_noise"] = 0.5
        assert G.rendering_kwargs["density_noise"] == 0.5 and G.cfg.rendering.density_noise == 0.5
        torch.manual_seed(7)
        noisy = G.sample_mixed(pts, pts, ws, noise_mode="const")
        torch.manual_seed(7)
        expected = clean["sigma"] + torch.randn_like(clean["sigma"]) * 0.5
        torch.testing.assert_close(noisy["sigma"], expected)
        torch.testing.assert_close(noisy["rgb"], clean["rgb"])
        torch.manual_seed(7)
        via_z = G.sample(pts, pts, z, c, noise_mode="const")
        torch.testing.assert_close(via_z["sigma"], expected)
        noise = noisy["sigma"] - clean["sigma"]
        assert 0.35 < noise.std() < 0.65


# ------------------------------------------------------------------------------------------------
# rendering_kwargs


def test_rendering_kwargs_is_the_official_dict(official_G, fixture_dir):
    G = copy.deepcopy(official_G)
    kw = G.rendering_kwargs
    snapshot = read_network(fixture_dir / "tiny128.pkl").attrs["rendering_kwargs"]
    assert isinstance(kw, dict) and kw is G.rendering_kwargs
    assert list(kw) == list(snapshot) and dict(kw) == snapshot and kw == snapshot
    assert "white_back" not in kw and "density_noise" not in kw        # the snapshot lacks them
    assert json.loads(json.dumps(kw)) == snapshot

    # Changes made to the config elsewhere (the viewer) show through every read path.
    G.cfg.rendering.depth_resolution = 20
    assert kw["depth_resolution"] == 20 and dict(kw)["depth_resolution"] == 20
    assert {**kw}["depth_resolution"] == 20 and json.loads(json.dumps(kw))["depth_resolution"] == 20
    assert dict(kw.items())["depth_resolution"] == 20 and kw.get("depth_resolution") == 20
    # Writes go into the config; script keys live in the dict only.
    kw["ray_start"], kw["avg_camera_pivot"] = 2.0, np.array([0, 0, 0.1])
    assert G.cfg.rendering.ray_start == 2.0 and G.cfg.rendering.avg_camera_pivot == [0, 0, 0.1]
    kw["depth_resolution_default"] = 48
    kw.update(depth_resolution_importance=np.int64(24))
    assert type(G.cfg.rendering.depth_resolution_importance) is int
    assert kw["depth_resolution_default"] == 48 and json.dumps(kw)
    assert "depth_resolution_default" not in G.cfg.to_json()
    with pytest.raises(ValueError, match="depth_resolution"):
        kw["depth_resolution"] = 0
    with pytest.raises(KeyError, match="architecture"):
        kw["superresolution_module"] = "training.superresolution.SuperresolutionHybrid8X"
    kw["image_resolution"] = 128                                      # unchanged: allowed
    with pytest.raises(KeyError, match="cannot be removed"):
        del kw["box_warp"]
    del kw["depth_resolution_default"]
    # A key the snapshot lacked appears once it differs from the official default.
    G.cfg.rendering.white_back = True
    assert kw["white_back"] is True

    # Assignment replaces the dict and flows into the config (what --reload_modules does).
    new = dict(snapshot, depth_resolution=6, depth_resolution_default=48)
    G.rendering_kwargs = new
    assert G.rendering_kwargs is not kw and G.rendering_kwargs is G.rendering_kwargs
    assert G.cfg.rendering.depth_resolution == 6 and G.rendering_kwargs["depth_resolution_default"] == 48
    with pytest.raises(ValueError, match="ray_end"):
        G.rendering_kwargs = dict(snapshot, ray_end="far")
    assert G.cfg.rendering.depth_resolution == 6                       # a rejected dict changes nothing

    # copy.deepcopy / pickle rebind the dict to the copy's config.
    for twin in (copy.deepcopy(G), pickle.loads(pickle.dumps(G))):
        assert twin.rendering_kwargs == G.rendering_kwargs
        twin.rendering_kwargs["depth_resolution"] = 9
        assert twin.cfg.rendering.depth_resolution == 9 and G.cfg.rendering.depth_resolution == 6


def test_rendering_kwargs_of_our_own_models(tiny_generator):
    cfg = presets.generator_config("shapenet128")
    kw = RenderingKwargs(cfg)                  # what G.rendering_kwargs holds (no need to build G)
    assert cfg.official_keys is None
    # The keys the official training script writes; white_back only because it is True here.
    assert set(kw) == {"image_resolution", "disparity_space_sampling", "clamp_mode", "superresolution_module",
                       "c_gen_conditioning_zero", "gpc_reg_prob", "c_scale", "superresolution_noise_mode",
                       "density_reg", "density_reg_p_dist", "reg_type", "decoder_lr_mul", "sr_antialias",
                       "depth_resolution", "depth_resolution_importance", "ray_start", "ray_end", "box_warp",
                       "avg_camera_radius", "avg_camera_pivot", "white_back"}
    assert kw["white_back"] is True and kw["box_warp"] == 1.6 and kw["gpc_reg_prob"] is None
    assert "white_back" not in RenderingKwargs(presets.generator_config("ffhq512"))
    json.dumps(kw)
    G = tiny_generator
    assert set(G.rendering_kwargs) == set(kw) - {"white_back"}
    assert "plane_axes" not in G.rendering_kwargs and "avg_camera_fov" not in G.rendering_kwargs


# ------------------------------------------------------------------------------------------------
# init_args / init_kwargs, attributes, renderer and ray sampler


def test_init_args_rebuild_our_own_models():
    torch.manual_seed(0)
    G = model.build_generator(presets.generator_config("tiny")).eval()
    G.neural_rendering_resolution = 16
    assert G.init_args == [] and set(G.init_kwargs) == {"cfg"}
    json.dumps(G.init_kwargs)
    G_new = TriPlaneGenerator(*G.init_args, **G.init_kwargs).eval()
    _copy_params_and_buffers(G, G_new)
    assert G_new.neural_rendering_resolution == 32      # constructor arguments, as officially
    G_new.neural_rendering_resolution = G.neural_rendering_resolution
    assert G_new.cfg == G.cfg and G_new.init_kwargs == G.init_kwargs
    z, c = torch.randn(1, G.z_dim), camera.orbit_label(1.2, 1.5)
    with torch.no_grad():
        a = G(z, c, noise_mode="const", deterministic=True)["image"]
        b = G_new(z, c, noise_mode="const", deterministic=True)["image"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_official_constructor_arguments_are_checked_like_the_importer(official_G):
    kwargs = copy.deepcopy(official_G.init_kwargs)
    rebuilt = TriPlaneGenerator(**kwargs)
    assert rebuilt.cfg == official_G.cfg and rebuilt.init_kwargs == official_G.init_kwargs
    positional = {k: v for k, v in kwargs.items() if k not in ("z_dim", "c_dim", "w_dim", "img_resolution")}
    assert TriPlaneGenerator(512, 25, 512, 128, **positional).cfg == official_G.cfg
    del kwargs["rendering_kwargs"]["box_warp"]
    with pytest.raises(ValueError, match=r"rendering_kwargs\['box_warp'\]"):
        TriPlaneGenerator(**kwargs)
    with pytest.raises(ValueError, match="unsupported official option.*bogus"):
        TriPlaneGenerator(**dict(official_G.init_kwargs, bogus=1))


def test_official_attribute_names(official_G):
    G = official_G
    bb = G.backbone
    assert (bb.z_dim, bb.c_dim, bb.w_dim, bb.img_resolution, bb.img_channels) == (512, 25, 512, 256, 96)
    assert bb.num_ws == bb.mapping.num_ws == bb.synthesis.num_ws == G.num_ws
    assert bb.synthesis.img_resolution == 256 and bb.synthesis.img_channels == 96
    assert G.decoder.hidden_dim == 64
    z, c = _z(G, 0), _orbit(G, np.pi / 2)
    with torch.no_grad():
        planes_raw = bb(z, c * G.rendering_kwargs["c_scale"], noise_mode="const")
        ws = G.mapping(z, c)
        torch.testing.assert_close(planes_raw, bb.synthesis(ws, noise_mode="const"))
        planes = G.planes(ws, noise_mode="const")

        cam2world, intrinsics = camera.split_label(c)
        origins, dirs = G.ray_sampler(cam2world, intrinsics, 8)
        ref_o, ref_d = camera.generate_rays(cam2world, intrinsics, 8)
        assert origins.shape == dirs.shape == (1, 64, 3)
        torch.testing.assert_close(origins, ref_o)
        torch.testing.assert_close(dirs, ref_d)

        pts = torch.rand(1, 50, 3) - 0.5
        out = G.renderer.run_model(planes, G.decoder, pts, torch.zeros_like(pts), G.rendering_kwargs)
        torch.testing.assert_close(out["sigma"], G.sample_density(planes, pts)["sigma"])
        torch.testing.assert_close(G.decoder(
            model.triplane.sample_planes(planes, pts, 1, "official"), torch.zeros_like(pts))["rgb"], out["rgb"])

        options = dict(G.rendering_kwargs, depth_resolution=6, depth_resolution_importance=6)
        torch.manual_seed(3)
        feats, depth, weights = G.renderer(planes, G.decoder, origins, dirs, options)
        torch.manual_seed(3)
        ref = G.render(planes, ws, c, neural_rendering_resolution=8, depth_resolution=6,
                       depth_resolution_importance=6, superresolution=False)
    assert feats.shape == (1, 64, 32) and depth.shape == weights.shape == (1, 64, 1)
    torch.testing.assert_close(feats.transpose(1, 2).reshape(1, 32, 8, 8), ref["feature_image"])
    torch.testing.assert_close(depth.transpose(1, 2).reshape(1, 1, 8, 8), ref["image_depth"])


def test_auto_ray_limits_only_when_both_are_auto(tiny_generator):
    G = tiny_generator
    r = G.cfg.rendering
    c = camera.orbit_label(1.2, 1.5)
    cam2world, intrinsics = camera.split_label(c)
    origins, dirs = camera.generate_rays(cam2world, intrinsics, 8)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), c)
        planes = G.planes(ws)
        G.rendering_kwargs["ray_start"] = "auto"
        with pytest.raises(ValueError, match="ray_start = 'auto' and ray_end = 3.3"):
            G.render(planes, ws, c, neural_rendering_resolution=8)
        G.rendering_kwargs["ray_end"] = "auto"
        out = G.render(planes, ws, c, neural_rendering_resolution=8, deterministic=True,
                       depth_resolution=5, depth_resolution_importance=0, return_samples=True)
    start, end = ray_box_limits(origins, dirs, r.box_warp)
    depths = out["depths_coarse"]
    torch.testing.assert_close(depths[:, :, 0], start)
    torch.testing.assert_close(depths[:, :, -1], end)
