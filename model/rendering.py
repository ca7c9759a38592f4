"""Two-pass volume rendering of a tri-plane field: stratified samples, importance samples,
midpoint compositing.

All depths are distances along unit ray directions. Shapes: B cameras, M rays per camera,
N samples per ray, C feature channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .config import RenderingConfig

FieldFn = Callable[[torch.Tensor], Dict[str, torch.Tensor]]   # points [B,K,3] -> sigma, rgb


@dataclass
class RenderResult:
    features: torch.Tensor          # [B, M, C] composited features (RGB first), in [-1, 1]
    depth: torch.Tensor             # [B, M, 1]
    opacity: torch.Tensor           # [B, M, 1] accumulated weight
    depths_coarse: torch.Tensor     # [B, M, N, 1]
    weights_coarse: Optional[torch.Tensor]   # [B, M, N-1, 1] (None without importance pass)
    depths_fine: Optional[torch.Tensor]      # [B, M, N_importance, 1]
    trace: Optional["RayTrace"] = None       # per-sample data of the rays asked for (keep_rays)


@dataclass
class RayTrace:
    """What happens along K chosen rays of each camera (the viewer's ray inspector).

    Samples are those the final compositing pass used (coarse and importance merged and sorted
    when there is an importance pass); intervals are between consecutive samples (midpoints).
    """
    rays: torch.Tensor              # [K] ray indices (row * R + col)
    depths_coarse: torch.Tensor     # [B, K, N]
    sigma_coarse: torch.Tensor      # [B, K, N] raw decoder density of the coarse samples
    weights_coarse: Optional[torch.Tensor]   # [B, K, N-1] weights that drove importance sampling
    depths_fine: Optional[torch.Tensor]      # [B, K, N_importance]
    depths: torch.Tensor            # [B, K, S] the composited samples
    sigma: torch.Tensor             # [B, K, S] raw density at them
    density: torch.Tensor           # [B, K, S-1] softplus(sigma_mid - 1) per interval
    transmittance: torch.Tensor     # [B, K, S-1] light reaching each interval
    weights: torch.Tensor           # [B, K, S-1] alpha * transmittance
    contribution: torch.Tensor      # [B, K, S-1, 3] weight * interval RGB in [0, 1]
    rgb: torch.Tensor               # [B, K, 3] composited colour in [-1, 1] (feature_image[:, :3])
    depth: torch.Tensor             # [B, K] reported depth (as image_depth)
    opacity: torch.Tensor           # [B, K] sum of weights (as image_alpha)


def ray_box_limits(origins: torch.Tensor, directions: torch.Tensor, side: float
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit distances [B, M, 1] of rays with the axis-aligned cube of the given side.

    Rays that miss get start = -1, end = -2 (so end < start marks them invalid).
    """
    half = side / 2
    inv = 1 / directions
    t0 = (-half - origins) * inv
    t1 = (half - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1, keepdim=True)
    t_far = torch.maximum(t0, t1).amin(dim=-1, keepdim=True)
    valid = t_far >= t_near
    return (torch.where(valid, t_near, torch.full_like(t_near, -1.0)),
            torch.where(valid, t_far, torch.full_like(t_far, -2.0)))


def stratified_depths(num_cameras: int, num_rays: int, start: Union[float, torch.Tensor],
                      end: Union[float, torch.Tensor], count: int, device,
                      disparity: bool = False, deterministic: bool = False) -> torch.Tensor:
    """Evenly spaced depths [B, M, N, 1] with a per-sample uniform jitter of one spacing.

    deterministic=True drops the jitter (depths = linspace(start, end, N)).
    With tensor limits ([B, M, 1]) each ray gets its own range.
    """
    steps = torch.linspace(0, 1, count, device=device).reshape(1, 1, count, 1)
    jitter = None if deterministic else torch.rand(num_cameras, num_rays, count, 1, device=device)
    if disparity:
        t = steps.expand(num_cameras, num_rays, count, 1)
        if jitter is not None:
            t = t + jitter / (count - 1)
        return 1 / (1 / start * (1 - t) + 1 / end * t)
    if isinstance(start, torch.Tensor):
        start, end = start.unsqueeze(-2), end.unsqueeze(-2)          # [B, M, 1, 1]
    depths = (start + steps * (end - start)).expand(num_cameras, num_rays, count, 1)
    if jitter is not None:
        depths = depths + jitter * ((end - start) / (count - 1))
    return depths.contiguous()


def _intervals(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor):
    """Midpoint colour, density and depth of each interval, its transmittance and its weight."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2),
                                  dim=-2)[:, :, :-1]
    return colors_mid, densities_mid, depths_mid, transmittance, alpha * transmittance


def composite(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
              white_back: bool = False, batch_depth_clamp: bool = True
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite samples sorted by depth (MipNeRF-style midpoints).

    colors [B,M,N,C] in [0,1], densities [B,M,N,1] raw, depths [B,M,N,1] ->
    features [B,M,C] mapped to [-1, 1], depth [B,M,1], weights [B,M,N-1,1].
    Colour and density are averaged between neighbours; density is softplus(sigma - 1).
    batch_depth_clamp=True clamps depth to the min/max of ALL depths in the batch (official);
    False clamps each ray to its own sample range.
    """
    colors_mid, densities_mid, depths_mid, transmittance, weights = _intervals(colors, densities, depths)
    rgb = (weights * colors_mid).sum(dim=-2)
    total = weights.sum(dim=-2)
    depth = torch.nan_to_num((weights * depths_mid).sum(dim=-2) / total, float("inf"))
    if batch_depth_clamp:
        depth = depth.clamp(depths.min(), depths.max())
    else:
        depth = torch.minimum(torch.maximum(depth, depths[:, :, 0]), depths[:, :, -1])
    if white_back:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, count: int,
               deterministic: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling. bins [R, K+1] edges, weights [R, K] -> samples [R, count].

    deterministic=True uses u = linspace(0, 1, count) for every ray instead of uniform u.
    """
    rays, k = weights.shape
    pdf = weights + eps
    pdf = pdf / pdf.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    if deterministic:
        u = torch.linspace(0, 1, count, device=bins.device).expand(rays, count).contiguous()
    else:
        u = torch.rand(rays, count, device=bins.device)
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp_min(0)
    above = idx.clamp_max(k)
    pairs = torch.stack([below, above], dim=-1).reshape(rays, 2 * count)
    cdf_g = torch.gather(cdf, 1, pairs).reshape(rays, count, 2)
    bins_g = torch.gather(bins, 1, pairs).reshape(rays, count, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


@torch.no_grad()
def importance_depths(depths: torch.Tensor, weights: torch.Tensor, count: int,
                      deterministic: bool = False, official: bool = True) -> torch.Tensor:
    """Fine depths [B, M, count, 1] drawn where the coarse weights [B, M, N-1, 1] are large.

    Weights are smoothed (max-pool then avg-pool, kernel 2) and floored with +0.01.
    official=True reproduces EG3D: the PDF is the inner N-3 smoothed weights over bins between
    the first N-2 coarse midpoints, so fine samples never pass the second-to-last midpoint.
    official=False uses all N-1 smoothed interval weights over the N coarse samples as edges.
    """
    b, m, n, _ = depths.shape
    z = depths.reshape(b * m, n)
    w = weights.reshape(b * m, 1, n - 1).float()
    w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).reshape(b * m, n - 1) + 0.01
    if official:
        bins, pdf = (z[:, :-1] + z[:, 1:]) / 2, w[:, 1:-1]
    else:
        bins, pdf = z, w
    return sample_pdf(bins, pdf, count, deterministic).reshape(b, m, count, 1)


def render_rays(field: FieldFn, origins: torch.Tensor, directions: torch.Tensor,
                cfg: RenderingConfig, deterministic: bool = False,
                depth_resolution: Optional[int] = None,
                depth_resolution_importance: Optional[int] = None,
                keep_rays: Optional[torch.Tensor] = None) -> RenderResult:
    """Render rays origins/directions [B, M, 3] through `field` (points -> sigma, rgb).

    keep_rays [K] (ray indices) also returns their per-sample data as `RenderResult.trace`; the
    rendering itself is unchanged (batch-wide steps such as the official depth clamp still see
    every ray).
    """
    b, m, _ = origins.shape
    n_coarse = depth_resolution or cfg.depth_resolution
    n_fine = cfg.depth_resolution_importance if depth_resolution_importance is None else depth_resolution_importance
    official = cfg.official_compat
    if cfg.clamp_mode != "softplus":
        raise ValueError(f"clamp_mode {cfg.clamp_mode!r} is not supported (only 'softplus')")

    if (cfg.ray_start == "auto") != (cfg.ray_end == "auto"):
        raise ValueError(f"rendering ray_start = {cfg.ray_start!r} and ray_end = {cfg.ray_end!r}: "
                         f"'auto' (limits from the box) must be set for both or neither")
    if cfg.ray_start == "auto" and cfg.ray_end == "auto":
        start, end = ray_box_limits(origins, directions, cfg.box_warp)
        valid = end > start
        if valid.any():
            # Rays missing the box get a harmless range; the official code sets both their
            # start and their end from ray_start (kept for imported models).
            start = torch.where(valid, start, start[valid].min())
            end = torch.where(valid, end, (start if official else end)[valid].max())
    else:
        start, end = float(cfg.ray_start), float(cfg.ray_end)
    depths = stratified_depths(b, m, start, end, n_coarse, origins.device,
                               cfg.disparity_space_sampling, deterministic)

    def run(d: torch.Tensor):
        points = (origins.unsqueeze(-2) + d * directions.unsqueeze(-2)).reshape(b, -1, 3)
        out = field(points)
        sigma = out["sigma"]
        if cfg.density_noise > 0:
            sigma = sigma + torch.randn_like(sigma) * cfg.density_noise
        return out["rgb"].reshape(b, m, d.shape[2], -1), sigma.reshape(b, m, d.shape[2], 1)

    colors, densities = run(depths)
    depths_coarse, sigma_coarse = depths, densities
    weights_coarse = depths_fine = None
    if n_fine > 0:
        _, _, weights_coarse = composite(colors, densities, depths, cfg.white_back, official)
        depths_fine = importance_depths(depths, weights_coarse, n_fine, deterministic, official)
        colors_fine, densities_fine = run(depths_fine)
        all_depths, order = torch.sort(torch.cat([depths, depths_fine], dim=-2), dim=-2)
        colors = torch.gather(torch.cat([colors, colors_fine], dim=-2), -2,
                              order.expand(-1, -1, -1, colors.shape[-1]))
        densities = torch.gather(torch.cat([densities, densities_fine], dim=-2), -2, order)
        features, depth, weights = composite(colors, densities, all_depths, cfg.white_back, official)
    else:
        all_depths = depths
        features, depth, weights = composite(colors, densities, depths, cfg.white_back, official)
    opacity = weights.sum(dim=-2)
    trace = None
    if keep_rays is not None:
        pick = lambda t: None if t is None else t[:, keep_rays].squeeze(-1)
        colors_mid, densities_mid, _, transmittance, w = _intervals(
            colors[:, keep_rays], densities[:, keep_rays], all_depths[:, keep_rays])
        trace = RayTrace(rays=keep_rays, depths_coarse=pick(depths_coarse), sigma_coarse=pick(sigma_coarse),
                         weights_coarse=pick(weights_coarse), depths_fine=pick(depths_fine),
                         depths=pick(all_depths), sigma=pick(densities), density=densities_mid.squeeze(-1),
                         transmittance=transmittance.squeeze(-1), weights=w.squeeze(-1),
                         contribution=w * colors_mid[..., :3], rgb=features[:, keep_rays, :3],
                         depth=pick(depth), opacity=pick(opacity))
    return RenderResult(features, depth, opacity, depths_coarse, weights_coarse, depths_fine, trace)
