"""Volume rendering against analytic expectations."""
from __future__ import annotations

import math

import pytest
import torch

from model import rendering, triplane
from model.config import RenderingConfig


def constant_field(sigma: float, color=(0.2, 0.4, 0.6)):
    def field(points):
        b, k, _ = points.shape
        return {"sigma": torch.full((b, k, 1), sigma),
                "rgb": torch.tensor(color).expand(b, k, 3).clone()}
    return field


def sphere_field(radius=0.3, inside=1000.0):
    def field(points):
        r = points.norm(dim=-1, keepdim=True)
        sigma = torch.where(r < radius, torch.tensor(inside), torch.tensor(-50.0))
        return {"sigma": sigma, "rgb": torch.ones_like(points)}
    return field


def straight_rays(n=4, z0=2.0):
    origins = torch.tensor([0.0, 0.0, z0]).expand(1, n, 3)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand(1, n, 3)
    return origins, directions


def test_constant_density_opacity_matches_beer_lambert():
    # softplus(sigma - 1) is the density; over length L the opacity is 1 - exp(-density * L).
    sigma, start, end = 3.0, 1.0, 3.0
    cfg = RenderingConfig(ray_start=start, ray_end=end, depth_resolution=64,
                          depth_resolution_importance=0)
    result = rendering.render_rays(constant_field(sigma), *straight_rays(), cfg, deterministic=True)
    density = math.log1p(math.exp(sigma - 1))
    expected = 1 - math.exp(-density * (end - start))
    torch.testing.assert_close(result.opacity, torch.full_like(result.opacity, expected), atol=1e-4, rtol=0)
    # colours map to [-1, 1] after compositing over a black background
    torch.testing.assert_close(result.features[0, 0], torch.tensor([0.2, 0.4, 0.6]) * 2 * expected - 1,
                               atol=1e-4, rtol=0)


def test_white_background_adds_the_remaining_transmittance():
    cfg = RenderingConfig(ray_start=1.0, ray_end=3.0, depth_resolution=16,
                          depth_resolution_importance=0, white_back=True)
    empty = rendering.render_rays(constant_field(-30.0, (0, 0, 0)), *straight_rays(), cfg, deterministic=True)
    torch.testing.assert_close(empty.features, torch.ones_like(empty.features), atol=1e-4, rtol=0)


@pytest.mark.parametrize("official", [True, False])
def test_depth_of_an_opaque_sphere(official):
    cfg = RenderingConfig(ray_start=1.0, ray_end=3.0, depth_resolution=64,
                          depth_resolution_importance=64, official_compat=official)
    result = rendering.render_rays(sphere_field(0.3), *straight_rays(z0=2.0), cfg, deterministic=True)
    # The front surface is at distance 2 - 0.3 = 1.7 from the camera (the mean free path inside,
    # 1 / softplus(999), is negligible).
    assert abs(result.depth.mean().item() - 1.7) < 0.01
    assert result.opacity.min().item() > 0.99


def test_importance_samples_concentrate_at_the_surface():
    cfg = RenderingConfig(ray_start=1.0, ray_end=3.0, depth_resolution=32, depth_resolution_importance=32)
    result = rendering.render_rays(sphere_field(0.3), *straight_rays(z0=2.0), cfg, deterministic=True)
    fine = result.depths_fine.flatten()
    assert ((fine > 1.55) & (fine < 1.85)).float().mean() > 0.6


def test_official_importance_never_reaches_the_last_midpoint_clean_does():
    depths = torch.linspace(1, 2, 10).reshape(1, 1, 10, 1)
    weights = torch.zeros(1, 1, 9, 1)
    weights[..., -1, 0] = 1.0                 # all the mass in the last interval
    official = rendering.importance_depths(depths, weights, 16, deterministic=True, official=True)
    clean = rendering.importance_depths(depths, weights, 16, deterministic=True, official=False)
    second_to_last_mid = (depths[0, 0, -3, 0] + depths[0, 0, -2, 0]) / 2
    assert official.max() <= second_to_last_mid + 1e-6
    assert clean.max() > depths[0, 0, -2, 0]


def test_sample_pdf_inverts_a_uniform_cdf():
    bins = torch.linspace(0, 1, 11).expand(3, 11)
    u_samples = rendering.sample_pdf(bins, torch.ones(3, 10), 5, deterministic=True)
    torch.testing.assert_close(u_samples, torch.linspace(0, 1, 5).expand(3, 5), atol=1e-6, rtol=0)


def test_ray_box_limits():
    origins = torch.tensor([[[0.0, 0.0, 2.0], [0.0, 3.0, 2.0]]])
    directions = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]])
    start, end = rendering.ray_box_limits(origins, directions, 1.0)
    torch.testing.assert_close(start[0, 0], torch.tensor([1.5]))
    torch.testing.assert_close(end[0, 0], torch.tensor([2.5]))
    assert end[0, 1] < start[0, 1]             # misses the box


def test_auto_limits_render_inside_the_box():
    cfg = RenderingConfig(ray_start="auto", ray_end="auto", box_warp=1.0, depth_resolution=8,
                          depth_resolution_importance=0)
    result = rendering.render_rays(constant_field(1.0), *straight_rays(z0=2.0), cfg, deterministic=True)
    assert result.depths_coarse.min() >= 1.5 - 1e-6 and result.depths_coarse.max() <= 2.5 + 1e-6


def test_stochastic_sampling_jitters_within_one_spacing():
    torch.manual_seed(0)
    d = rendering.stratified_depths(1, 100, 1.0, 2.0, 11, "cpu")
    base = torch.linspace(1, 2, 11).reshape(1, 1, 11, 1)
    offset = d - base
    assert offset.min() >= 0 and offset.max() <= 0.1 + 1e-6 and offset.std() > 0.01


def test_plane_projection_axes():
    points = torch.tensor([[[0.1, 0.2, 0.3]]])
    official = triplane.project_points(points, box_warp=1.0, axes="official")[0, :, 0]
    clean = triplane.project_points(points, box_warp=1.0, axes="clean")[0, :, 0]
    torch.testing.assert_close(official, torch.tensor([[0.2, 0.4], [0.2, 0.6], [0.6, 0.2]]))
    torch.testing.assert_close(clean, torch.tensor([[0.2, 0.4], [0.2, 0.6], [0.4, 0.6]]))


def test_plane_sampling_is_bilinear_and_zero_outside():
    planes = torch.zeros(1, 3, 1, 2, 2)
    planes[0, 0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])   # rows = y, cols = x
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.25, -0.25, 0.0], [0.9, 0.0, 0.0]]])
    feats = triplane.sample_planes(planes, points, box_warp=1.0)[0, 0, :, 0]
    # centre = mean of the four texels; (+x, -y) is the texel centre of column 1, row 0;
    # outside the box the zero padding takes over.
    torch.testing.assert_close(feats, torch.tensor([1.5, 1.0, 0.0]))
