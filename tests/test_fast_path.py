"""The fast render path (model/fast_render.py, fast_field.py) against the reference renderer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from conftest import REPO
from model import fast_render, rendering
from model.fast_field import RGB_PAD
from model.preview import PreviewSettings, render_preview

RAW_TOL, IMAGE_TOL = 1e-3, 1e-2           # the parity tolerances (deterministic mode)
SKIP_BOUND = 2 * (1 + 2 * RGB_PAD)        # FastRenderConfig: error <= SKIP_BOUND * T
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "portrait.safetensors"


def both(G, planes, ws, c, **kw):
    with torch.no_grad():
        return (G.render(planes, ws, c, path="reference", **kw),
                G.render(planes, ws, c, path="fast", **kw))


def max_err(a, b) -> float:
    return (a - b).abs().max().item()


def assert_parity(ref, fast):
    assert max_err(ref["image_raw"], fast["image_raw"]) < RAW_TOL
    assert max_err(ref["feature_image"], fast["feature_image"]) < RAW_TOL
    assert max_err(ref["image_alpha"], fast["image_alpha"]) < RAW_TOL
    assert max_err(ref["image_depth"], fast["image_depth"]) < RAW_TOL
    if "image" in ref:
        assert max_err(ref["image"], fast["image"]) < IMAGE_TOL


def official(fixture_dir, name):
    with np.load(fixture_dir / f"{name}_reference.npz") as data:
        return model.load(fixture_dir / f"{name}.pkl"), {k: data[k] for k in data.files}


def test_tiny128_fixture_matches_reference_and_official(fixture_dir, one_thread):
    G, reference = official(fixture_dir, "tiny128")
    z, cond_c, cam_c = (torch.from_numpy(reference[k]) for k in ("z", "cond_c", "cam_c"))
    with torch.no_grad():
        ws = G.mapping(z, cond_c)
        planes = G.planes(ws, noise_mode="const")
    ref, fast = both(G, planes, ws, cam_c, deterministic=True, return_samples=True)
    assert_parity(ref, fast)
    # ... and the official implementation's own outputs (the fixture)
    assert np.abs(fast["image_raw"].numpy() - reference["image_raw"]).max() < RAW_TOL
    assert np.abs(fast["image"].numpy() - reference["image"]).max() < IMAGE_TOL
    for key in ("depths_coarse", "weights_coarse", "depths_fine"):
        torch.testing.assert_close(fast[key], ref[key], rtol=0, atol=1e-5)


def test_small512_fixture_matches_official(fixture_dir, one_thread):
    """small512 (8XDC SR, 128 px neural render), first camera of the fixture, fast path only
    against the official outputs (test_parity holds the reference path to them within 1e-4)."""
    G, reference = official(fixture_dir, "small512")
    z, cond_c, cam_c = (torch.from_numpy(reference[k][:1]) for k in ("z", "cond_c", "cam_c"))
    with torch.no_grad():
        ws = G.mapping(z, cond_c)
        fast = G.render(G.planes(ws, noise_mode="const"), ws, cam_c, deterministic=True, path="fast")
    for key, tol in (("image_raw", RAW_TOL), ("image_depth", RAW_TOL), ("image", IMAGE_TOL)):
        assert np.abs(fast[key].numpy() - reference[key][:1]).max() < tol, key


def test_shipped_model_matches_reference(one_thread):
    G = model.load(SHIPPED)
    r = G.cfg.rendering
    c = model.camera.orbit_label([0.4, -0.5], [1.3, 1.7], r.avg_camera_radius, r.avg_camera_pivot,
                                 r.avg_camera_fov)
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3)), c)
        planes = G.planes(ws, noise_mode="const")
    assert_parity(*both(G, planes, ws, c, deterministic=True))


def test_random_mode_draws_the_same_samples(tiny_generator, one_thread):
    G = tiny_generator
    G.cfg.rendering.density_noise = 0.5          # a third random draw, in the same order
    c = model.camera.orbit_label(0.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), c)
        planes = G.planes(ws, noise_mode="const")
        torch.manual_seed(7)
        ref = G.render(planes, ws, c, path="reference", return_samples=True)
        torch.manual_seed(7)
        fast = G.render(planes, ws, c, path="fast", return_samples=True)
    torch.testing.assert_close(fast["depths_fine"], ref["depths_fine"])
    assert_parity(ref, fast)


def test_merge_ranks_equal_a_stable_sort():
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(50, 9, generator=g).sort(dim=1).values
    fine = torch.rand(50, 7, generator=g)
    fine[:, 3] = coarse[:, 4]                    # ties
    fine = fine.sort(dim=1).values
    pos_c, pos_f, before = fast_render.merge_ranks(coarse, fine)
    merged = torch.empty(50, 16).scatter_(1, pos_c, coarse).scatter_(1, pos_f, fine)
    torch.testing.assert_close(merged, torch.cat([coarse, fine], 1).sort(dim=1, stable=True).values,
                               rtol=0, atol=0)
    assert (torch.cat([pos_c, pos_f], 1).sort(dim=1).values == torch.arange(16)).all()
    assert torch.equal(before, (coarse.unsqueeze(1) <= fine.unsqueeze(2)).sum(dim=2))


@pytest.mark.parametrize("disparity,deterministic,per_ray", [
    (False, False, False), (False, True, False), (False, False, True), (False, True, True),
    (True, False, False), (True, True, False)])
def test_merge_ranks_from_strata_equal_the_search(disparity, deterministic, per_ray):
    """The three-comparison ranks of stratified coarse sets equal the binary search's, with fine
    samples on coarse samples (ties) and at the ends of the range."""
    torch.manual_seed(3)
    b, m, n, k = 2, 400, 9, 8
    if per_ray:                                  # 'auto' limits: a range per ray
        start = 2 + torch.rand(b, m, 1)
        end = start + 0.01 + torch.rand(b, m, 1)
    else:
        start, end = 2.25, 3.3
    zc = rendering.stratified_depths(b, m, start, end, n, "cpu", disparity, deterministic).reshape(b * m, n)
    fine = zc[:, :1] + (zc[:, -1:] - zc[:, :1]) * torch.rand(b * m, k)
    fine[:, 0], fine[:, 1], fine[:, 2], fine[:, 3] = zc[:, 0], zc[:, 3], zc[:, 7], zc[:, -1]
    fine = fine.sort(dim=1).values
    stratum = fast_render.strata(fine, start, end, n, disparity)
    assert stratum is not None
    for got, want in zip(fast_render.merge_ranks(zc, fine, stratum), fast_render.merge_ranks(zc, fine)):
        assert torch.equal(got, want)


def test_strata_refuse_an_empty_range():
    assert fast_render.strata(torch.ones(2, 3), 2.0, 2.0, 5, False) is None
    start = torch.tensor([[[1.0], [2.0]]])
    assert fast_render.strata(torch.ones(2, 3), start, start + torch.tensor([[[1.0], [0.0]]]), 5, False) is None


def merged_transmittance_at_cut(G, planes, c, tau: float) -> torch.Tensor:
    """Reference-side T [B, M] at the fine-sample cut of FastRenderConfig.transmittance_cutoff:
    the merged (coarse + fine) transmittance in front of the first coarse sample whose coarse
    transmittance is below tau (1 where no coarse sample is)."""
    with torch.no_grad():
        out = G.render(planes, None, c, path="reference", deterministic=True,
                       superresolution=False, return_samples=True)
        b, m, n, _ = out["depths_coarse"].shape
        c2w, intr = model.camera.split_label(c)
        origins, dirs = model.camera.generate_rays(c2w, intr, G.neural_rendering_resolution)
        z = torch.cat([out["depths_coarse"], out["depths_fine"]], dim=2)[..., 0].sort(dim=2).values
        points = origins.unsqueeze(2) + z.unsqueeze(-1) * dirs.unsqueeze(2)
        sigma = G.sample_density(planes, points.reshape(b, -1, 3))["sigma"].reshape(b * m, -1)
        _, trans = fast_render.interval_weights(sigma, z.reshape(b * m, -1))
        zc = out["depths_coarse"][..., 0].reshape(b * m, n)
        coarse_sigma = G.sample_density(planes, (origins.unsqueeze(2) + zc.reshape(b, m, n, 1)
                                                 * dirs.unsqueeze(2)).reshape(b, -1, 3))["sigma"]
        _, coarse_trans = fast_render.interval_weights(coarse_sigma.reshape(b * m, n), zc)
        below = coarse_trans < tau
        cut = zc.gather(1, below.float().argmax(dim=1, keepdim=True))
        at_cut = (z.reshape(b * m, -1) < cut).sum(dim=1, keepdim=True)     # samples in front
        t_cut = trans.gather(1, at_cut)
        return torch.where(below.any(dim=1, keepdim=True), t_cut, torch.ones_like(t_cut)).reshape(b, m)


def count_kept(monkeypatch):
    kept = []
    original = fast_render.fine_mask

    def spy(*args):
        keep = original(*args)
        kept.append(None if keep is None else keep.float().mean().item())
        return keep
    monkeypatch.setattr(fast_render, "fine_mask", spy)
    return kept


def skip_case(G, monkeypatch):
    """One deterministic frame on both paths with the fine samples kept counted:
    (c, ws, planes, kept fraction holder, reference out, fast out)."""
    c = model.camera.orbit_label(0.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), c)
        planes = G.planes(ws, noise_mode="const")
    kept = count_kept(monkeypatch)
    return (c, ws, planes, kept) + tuple(both(G, planes, ws, c, deterministic=True, superresolution=False))


def test_early_termination_error_within_the_stated_bound(tiny_generator, monkeypatch, one_thread):
    """A dense field (sigma bias +8) makes rays opaque early: the fine samples behind the
    surface are skipped and every feature stays within 2.004 * T(cut) of the reference."""
    G = tiny_generator
    G.cfg.neural_rendering_resolution = 24
    with torch.no_grad():
        G.decoder.net[2].bias[0] += 8
    tau = 1e-2                                   # large, so the skip is visible in the error
    G.fast_renderer.cfg.transmittance_cutoff = tau
    G.fast_renderer.cfg.opacity_cutoff = 0
    c, ws, planes, kept, ref, fast = skip_case(G, monkeypatch)
    assert kept[0] is not None and kept[0] < 0.95, kept
    err = (ref["feature_image"] - fast["feature_image"]).abs().amax(dim=1).reshape(1, -1)
    bound = SKIP_BOUND * merged_transmittance_at_cut(G, planes, c, tau)
    assert err.max().item() > 1e-6                               # the skip changed something
    assert (err <= bound + 1e-5).all(), (err - bound).max().item()
    # the defaults keep the whole frame within the parity tolerance
    G.fast_renderer.cfg = fast_render.FastRenderConfig()
    assert_parity(*both(G, planes, ws, c, deterministic=True, superresolution=False))


def test_empty_rays_skip_fine_samples_within_the_opacity_bound(tiny_generator, monkeypatch, one_thread):
    G = tiny_generator
    G.cfg.neural_rendering_resolution = 24
    with torch.no_grad():
        G.decoder.net[2].bias[0] -= 12            # nearly empty field
    G.fast_renderer.cfg.opacity_cutoff = 1e-3
    c, ws, planes, kept, ref, fast = skip_case(G, monkeypatch)
    assert kept[0] is not None and kept[0] < 0.5, kept
    err = (ref["feature_image"] - fast["feature_image"]).abs().amax(dim=1)
    bound = SKIP_BOUND * torch.maximum(ref["image_alpha"], fast["image_alpha"])[:, 0]
    assert (err <= bound + 1e-6).all()
    assert err.max().item() < RAW_TOL


def test_fast_path_gradients_match_reference(tiny_generator, one_thread):
    G = tiny_generator
    G.cfg.neural_rendering_resolution = 16
    c = model.camera.orbit_label(0.2, 1.5)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), c)
        planes0 = G.planes(ws, noise_mode="const")
    grads = {}
    for path in ("reference", "fast"):
        planes = planes0.clone().requires_grad_(True)
        G.zero_grad()
        out = G.render(planes, ws, c, deterministic=True, superresolution=False, path=path)
        (out["feature_image"].square().mean() + out["image_depth"].mean()).backward()
        grads[path] = [planes.grad] + [p.grad.clone() for p in G.decoder.parameters()]
    for ref, fast in zip(grads["reference"], grads["fast"]):
        torch.testing.assert_close(fast, ref, rtol=1e-3, atol=1e-6)


def test_plane_gather_gradients_equal_embedding_bags():
    """The CSR backward of PlaneGather against embedding_bag's own, rows repeating within
    and across points, for the table and the weights."""
    from model.fast_field import PlaneGather
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=gen)
    rows = torch.randint(50, (300, 12), generator=gen)
    rows[:, 1] = rows[:, 0]                               # the same row twice in one point
    weight = torch.rand(300, 12, generator=gen)
    grad = torch.randn(300, 8, generator=gen)
    results = []
    for fn in (lambda t, w: torch.nn.functional.embedding_bag(rows, t, mode="sum", per_sample_weights=w),
               lambda t, w: PlaneGather.apply(t, rows, w)):
        t, w = table.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        out = fn(t, w)
        out.backward(grad)
        results.append((out.detach(), t.grad, w.grad))
    for ref, got in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axes", ["official", "clean"])
def test_gathered_corners_equal_grid_sample_mean(axes):
    """corner_weights + gather against the reference's grid_sample of each plane and their mean:
    non-square planes, two items, points inside, on the edge of and outside the box."""
    from model.fast_field import corner_maps, corner_weights, gather, planes_table
    from model.triplane import sample_planes
    gen = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 5, 7, 9, generator=gen)
    points = (torch.rand(2, 400, 3, generator=gen) - 0.5) * 2.6     # box 2: about half outside
    points[:, :3] = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.5, 0.0], [0.2, -0.3, 1.0]])  # on faces
    expected = sample_planes(planes, points, 2.0, axes).mean(dim=1)   # [B, M, C]
    rows, weight = corner_weights(points.reshape(-1, 3), torch.arange(2.0).repeat_interleave(400),
                                  corner_maps(3, 7, 9, 2.0, axes, "cpu"))
    assert rows.is_contiguous() and weight.is_contiguous() and rows.shape == (800, 12)
    got = gather(planes_table(planes), rows, weight).reshape(2, 400, 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_corner_maps_cached_under_inference_mode_serve_autograd():
    """corner_maps is cached per shape: built first under torch.inference_mode, it still serves
    a gradient through the corner weights (inference tensors cannot be saved for backward)."""
    from model.fast_field import corner_maps, corner_weights
    with torch.inference_mode():
        maps = corner_maps(3, 11, 13, 1.7, "clean", "cpu")
    assert corner_maps(3, 11, 13, 1.7, "clean", "cpu") is maps
    points = (torch.rand(50, 3) - 0.5).requires_grad_(True)
    _, weight = corner_weights(points, None, maps)
    weight.square().sum().backward()
    assert points.grad is not None and points.grad.abs().sum() > 0


def test_softplus_equals_torch_softplus_without_overflow():
    """The fast path's CPU softplus (x - log(sigmoid(x)) above a floor, in place) against
    F.softplus in float64, over the whole float range the decoder can produce; under autograd
    it is torch's, and leaves its input alone."""
    from model.fast_field import softplus_
    x = torch.cat([torch.linspace(-300, 300, 200001), torch.tensor([-1e30, -104.0, -88.5, 1e30])])
    want = torch.nn.functional.softplus(x.double())
    scratch = x.clone()
    got = softplus_(scratch)
    assert got.data_ptr() == scratch.data_ptr()                          # in place
    assert torch.isfinite(got[:-1]).all() and got[-1] == 1e30
    assert (got.double() - want).abs().max().item() < 8e-6
    y = x[:1000].clone().requires_grad_(True)
    out = softplus_(y)
    assert out.grad_fn is not None and torch.equal(y.detach(), x[:1000])


def test_fast_path_camera_gradient_matches_reference(tiny_generator, one_thread):
    """Points that require grad (camera refinement): the corner weights' gradient."""
    G = tiny_generator
    G.cfg.neural_rendering_resolution = 16
    with torch.no_grad():
        c0 = model.camera.orbit_label(0.2, 1.5)
        ws = G.mapping(torch.randn(1, G.z_dim), c0)
        planes = G.planes(ws, noise_mode="const").requires_grad_(True)
    grads = {}
    for path in ("reference", "fast"):
        c = c0.clone().requires_grad_(True)
        planes.grad = None
        out = G.render(planes, ws, c, deterministic=True, superresolution=False, path=path)
        out["feature_image"].square().mean().backward()
        grads[path] = (c.grad, planes.grad)
    assert grads["reference"][0].abs().max() > 0
    for ref, fast in zip(grads["reference"], grads["fast"]):
        torch.testing.assert_close(fast, ref, rtol=1e-3, atol=1e-5)


def test_auto_path_is_fast_for_inference_and_reference_under_autograd(tiny_generator, monkeypatch):
    G = tiny_generator
    calls = []
    original = G.fast_renderer.render
    monkeypatch.setattr(G.fast_renderer, "render", lambda *a, **k: calls.append(1) or original(*a, **k))
    c = model.camera.orbit_label(0.0, 1.5)
    ws = G.mapping(torch.randn(1, G.z_dim), c).detach()
    planes = G.planes(ws).detach()
    with torch.no_grad():
        G.render(planes, ws, c, neural_rendering_resolution=8)
    assert calls == [1]
    G.render(planes, ws, c, neural_rendering_resolution=8)          # decoder params need grad
    assert calls == [1]
    with pytest.raises(ValueError, match="render path must be one of"):
        G.render(planes, ws, c, path="quick")


def test_planes_table_cached_until_planes_change(tiny_generator):
    G = tiny_generator.requires_grad_(False)
    c = model.camera.orbit_label(0.0, 1.5)
    ws = G.mapping(torch.randn(1, G.z_dim), c)
    planes = G.planes(ws, noise_mode="const")
    r = G.cfg.rendering
    first = G.fast_renderer.field(planes, G.decoder, r).table
    assert G.fast_renderer.field(planes, G.decoder, r).table is first
    a = G.render(planes, ws, c, deterministic=True, superresolution=False)["image_raw"]
    planes.mul_(0.5)                                               # in place: version changes
    assert G.fast_renderer.field(planes, G.decoder, r).table is not first
    b = G.render(planes, ws, c, deterministic=True, superresolution=False)
    ref = G.render(planes, ws, c, deterministic=True, superresolution=False, path="reference")
    assert max_err(a, b["image_raw"]) > 1e-3
    assert max_err(ref["image_raw"], b["image_raw"]) < RAW_TOL


def test_preview_is_the_fast_render_at_preview_settings(tiny_generator):
    G = tiny_generator.requires_grad_(False)
    c = model.camera.orbit_label(0.3, 1.5)
    ws = G.mapping(torch.randn(1, G.z_dim), c)
    planes = G.planes(ws, noise_mode="const")
    s = PreviewSettings(neural_resolution=16, depth_resolution=6, depth_resolution_importance=4)
    out = render_preview(G, planes, ws, c, s)
    assert out["image"].shape == (1, 3, G.img_resolution, G.img_resolution)
    assert out["image_raw"].shape == (1, 3, 16, 16)
    ref = G.render(planes, ws, c, neural_rendering_resolution=16, depth_resolution=6,
                   depth_resolution_importance=4, deterministic=True, path="reference",
                   superresolution=False)
    assert max_err(ref["image_raw"], out["image_raw"]) < RAW_TOL
    down = torch.nn.functional.avg_pool2d(out["image"], G.img_resolution // 16)
    assert max_err(down, out["image_raw"]) < 0.1                   # an upsampled raw image
    with_sr = render_preview(G, planes, ws, c, PreviewSettings(neural_resolution=16,
                                                               superresolution=True))
    assert with_sr["image"].shape == out["image"].shape


REUSE_PROBE = """
import resource, sys, torch
sys.path.insert(0, {repo!r})
from model.device import reuse_host_memory
def faults_of_frames(frames=8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(frames):                   # one 64 MB tensor per frame, freed at its end
        torch.empty(64 << 18).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = faults_of_frames()
applied = reuse_host_memory()
print(default, applied, faults_of_frames())
"""
PAGES = (64 << 20) // 4096                    # 4 KiB pages of one frame's tensor


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_reuse_host_memory_stops_per_frame_page_faults():
    """Eight frames, each allocating a 64 MB tensor that is freed at its end: with glibc's
    default (an mmap per block) every frame page-faults through all 16,384 pages; after
    reuse_host_memory() at most two blocks are ever fresh (a small allocation may split the
    first freed block, so the frames can alternate between two), then no frame faults. Own
    process: the setting is process-wide."""
    out = subprocess.run([sys.executable, "-c", REUSE_PROBE.format(repo=str(REPO))], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    default, applied, reused = int(out[0]), out[1] == "True", int(out[2])
    assert applied
    assert default >= 7.5 * PAGES, f"default allocator: {default} page faults in 8 frames"
    assert reused <= 2.2 * PAGES, f"{reused} page faults in 8 frames with reuse ({default} without)"
