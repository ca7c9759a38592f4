"""Fast two-pass volume rendering (the `path="fast"` of `G.render`); `rendering.py` is the oracle.

Same samples as the reference (same random draws in the same order, so equal seeds give equal
depths), computed with less memory traffic:

- the field is `FastField` (fused channels-last tri-plane gather + decoder, in chunks);
- compositing needs only the densities in depth order: the fine samples are merged into the
  coarse ones by rank (each coarse sample lies in its own stratum, so a fine sample's rank is
  three comparisons, not a search; the fine set comes sorted in deterministic mode, else only
  its 1-channel depths are sorted), the per-sample weights are
  computed on the merged 1-channel densities and mapped back, and the 32 features are summed
  with one batched matrix product per set, never sorted, gathered or averaged;
- fine samples that cannot matter are not evaluated (see `FastRenderConfig` for the bounds).

Shapes as in rendering.py: B cameras, M rays per camera, N samples per ray, F features.
"""
from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .config import RenderingConfig
from .fast_field import FastField, pad_range, softplus_
from .rendering import RenderResult, importance_depths, ray_box_limits, stratified_depths

PATHS = ("auto", "reference", "fast")
TRANSMITTANCE_EPS = 1e-10      # the reference's 1 - alpha + eps in the transmittance product


@dataclass
class FastRenderConfig:
    """Settings of the fast path (not architectural: they change speed, not the model).

    Fine samples skipped (fast path only):
    - `transmittance_cutoff` tau: fine samples behind the first coarse sample whose coarse
      transmittance is below tau. Everything in front of that sample is computed exactly, and
      the light left behind it is the merged transmittance T there, so every composited
      feature differs from the reference by at most 2.004 * T (features in [-1, 1]; 2 for the
      [0, 1] -> [-1, 1] map, 1.002 for the decoder's padded range). `fine_skip_bound` returns
      that bound per ray; T ~ tau unless the fine samples find much less density than the
      coarse ones. 0 disables.
    - `opacity_cutoff` eps: all fine samples of rays whose coarse opacity is below eps (rays
      that miss everything). Error <= 2.004 * max(opacity with, opacity without the fine
      samples); the second is known, the first is ~eps unless the ray crosses a structure
      thinner than the coarse spacing that the coarse samples step over. 0 disables.
    The defaults keep both bounds far below the 1e-3 parity tolerance on the raw image.
    """
    chunk: int = 16384                    # points per decoder chunk
    # path='auto' under autograd (training): False keeps the reference there; True takes the
    # fast path (differentiable: same gradients to float rounding, tests/test_fast_path.py).
    auto_under_autograd: bool = False
    transmittance_cutoff: float = 1e-4
    opacity_cutoff: float = 1e-4


def limits(origins: torch.Tensor, directions: torch.Tensor, cfg: RenderingConfig):
    """Ray start/end as the reference computes them (floats, or [B, M, 1] for 'auto')."""
    if (cfg.ray_start == "auto") != (cfg.ray_end == "auto"):
        raise ValueError(f"rendering ray_start = {cfg.ray_start!r} and ray_end = {cfg.ray_end!r}: "
                         f"'auto' (limits from the box) must be set for both or neither")
    if cfg.ray_start == "auto":
        start, end = ray_box_limits(origins, directions, cfg.box_warp)
        valid = end > start
        if valid.any():
            start = torch.where(valid, start, start[valid].min())
            end = torch.where(valid, end, (start if cfg.official_compat else end)[valid].max())
        return start, end
    return float(cfg.ray_start), float(cfg.ray_end)


def interval_weights(densities: torch.Tensor, depths: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Raw densities [R, N], sorted depths [R, N] -> interval weights [R, N-1] and the
    transmittance in front of each sample [R, N]; the reference's formulas (midpoint density,
    softplus(sigma - 1), cumulative product with its 1e-10)."""
    deltas = depths[:, 1:] - depths[:, :-1]
    sigma = softplus_((densities[:, :-1] + densities[:, 1:]) / 2 - 1)
    alpha = 1 - torch.exp(-sigma * deltas)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + TRANSMITTANCE_EPS],
                                    dim=1), dim=1)
    return alpha * trans[:, :-1], trans


def sample_weights(weights: torch.Tensor) -> torch.Tensor:
    """Interval weights [R, N-1] -> per-sample weights [R, N] with sum_i w_i (c_i + c_i+1) / 2
    = sum_j omega_j c_j (each sample takes half of each interval it bounds)."""
    return (F.pad(weights, (1, 0)) + F.pad(weights, (0, 1))) / 2


def strata(depths: torch.Tensor, start, end, count: int, disparity: bool) -> Optional[torch.Tensor]:
    """Stratum [R, K] of `stratified_depths(start, end, count)` that each depth [R, K] lies in.

    Coarse sample i of a ray lies in stratum i: [i, i + 1) of its position t (N - 1) along the
    ray's range (t in depth, or in disparity with disparity sampling). Floored, so off by at most
    one through rounding (`merge_ranks` allows for that), and clamped to [-1, N]. None when a
    ray's range is empty (no strata to read).
    """
    if isinstance(start, torch.Tensor):
        if not bool((end > start).all()):
            return None
        start, end = start.reshape(-1, 1), end.reshape(-1, 1)
    elif not end > start:
        return None
    if disparity:
        t = (1 / depths - 1 / start) / (1 / end - 1 / start)
    else:
        t = (depths - start) / (end - start)
    return (t * (count - 1)).floor_().clamp_(-1, count).long()


def merge_ranks(coarse: torch.Tensor, fine: torch.Tensor, stratum: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions [R, N], [R, K] of two sorted depth sets [R, N], [R, K] in their merged order,
    and the number of coarse samples at or in front of each fine sample [R, K].

    Ties put the coarse sample first; tied samples are the same point, so order is immaterial.
    With `stratum` (`strata` of the fine samples; the coarse set must be the stratified one it
    describes), a fine sample's count is three comparisons with the coarse samples of the strata
    around it, since every coarse sample further in front is nearer and every one further behind
    is farther; else a binary search.
    """
    n, k = coarse.shape[1], fine.shape[1]
    if stratum is None or n < 3:
        before = torch.searchsorted(coarse, fine, right=True)
    else:
        rays = coarse.shape[0]
        low = (stratum - 1).clamp_(0, n - 3)                                       # [R, K]
        near = coarse.gather(1, (low.unsqueeze(1) + torch.arange(3, device=coarse.device)
                                 .reshape(1, 3, 1)).reshape(rays, 3 * k)).reshape(rays, 3, k)
        before = low + (near <= fine.unsqueeze(1)).sum(dim=1)
    # fine samples in front of coarse sample i: those with before <= i
    counts = torch.zeros(coarse.shape[0], n + 1, dtype=before.dtype, device=before.device)
    in_front = counts.scatter_add_(1, before, torch.ones_like(before)).cumsum(dim=1)[:, :n]
    pos_c = torch.arange(n, device=coarse.device) + in_front
    pos_f = torch.arange(k, device=coarse.device) + before
    return pos_c, pos_f, before


def fine_mask(depths: torch.Tensor, fine: torch.Tensor, trans: torch.Tensor,
              opacity: torch.Tensor, cfg: FastRenderConfig) -> Optional[torch.Tensor]:
    """Which fine samples [R, K] to evaluate, or None for all (see FastRenderConfig)."""
    keep = None
    if cfg.transmittance_cutoff > 0:
        below = trans < cfg.transmittance_cutoff                                  # [R, N]
        n = depths.shape[1]
        first = torch.where(below.any(dim=1), below.float().argmax(dim=1),
                            torch.full_like(below[:, 0], n - 1, dtype=torch.long))
        cut = depths.gather(1, first.unsqueeze(1))
        keep = fine <= cut
    if cfg.opacity_cutoff > 0:
        hit = opacity >= cfg.opacity_cutoff                                       # [R, 1]
        keep = hit.expand_as(fine) if keep is None else keep & hit
    if keep is not None and bool(keep.all()):
        return None
    return keep


def render_rays(field: FastField, origins: torch.Tensor, directions: torch.Tensor,
                cfg: RenderingConfig, fast: FastRenderConfig, deterministic: bool = False,
                depth_resolution: Optional[int] = None,
                depth_resolution_importance: Optional[int] = None) -> RenderResult:
    """The reference `rendering.render_rays` for rays origins/directions [B, M, 3]."""
    b, m, _ = origins.shape
    n_coarse = depth_resolution or cfg.depth_resolution
    n_fine = cfg.depth_resolution_importance if depth_resolution_importance is None else depth_resolution_importance
    if cfg.clamp_mode != "softplus":
        raise ValueError(f"clamp_mode {cfg.clamp_mode!r} is not supported (only 'softplus')")
    rays = b * m
    start, end = limits(origins, directions, cfg)
    depths = stratified_depths(b, m, start, end, n_coarse, origins.device,
                               cfg.disparity_space_sampling, deterministic)     # [B, M, N, 1]
    o = origins.reshape(rays, 1, 3)
    d = directions.reshape(rays, 1, 3)
    item = torch.arange(b, dtype=origins.dtype, device=origins.device)      # batch_index values

    def run(z: torch.Tensor, keep: Optional[torch.Tensor] = None):
        """Depths [R, n] -> raw sigma [R, n], sigmoid features [R, n, F] (zero where skipped)."""
        n = z.shape[1]
        points = torch.addcmul(o, z.unsqueeze(-1), d).reshape(-1, 3)              # [R*n, 3]
        index = item.repeat_interleave(m * n) if field.batch > 1 else None     # None: item 0
        if keep is None:
            sigma, feats = field(points, index)
        else:
            sel = keep.reshape(-1).nonzero().squeeze(1)
            s_sel, f_sel = field(points[sel], None if index is None else index[sel])
            sigma = points.new_zeros(rays * n).index_copy(0, sel, s_sel)
            feats = f_sel.new_zeros(rays * n, f_sel.shape[1]).index_copy(0, sel, f_sel)
        if cfg.density_noise > 0:
            sigma = sigma + torch.randn_like(sigma) * cfg.density_noise
        return sigma.reshape(rays, n), feats.reshape(rays, n, -1)

    zc = depths.reshape(rays, n_coarse)
    sigma_c, feats_c = run(zc)
    weights_c, trans_c = interval_weights(sigma_c, zc)
    depths_fine = None
    if n_fine > 0:
        depths_fine = importance_depths(depths, weights_c.reshape(b, m, n_coarse - 1, 1), n_fine,
                                        deterministic, cfg.official_compat)
        zf = depths_fine.reshape(rays, n_fine)
        keep = fine_mask(zc, zf, trans_c, weights_c.sum(dim=1, keepdim=True), fast)
        sigma_f, feats_f = run(zf, keep)          # in the reference's order (same noise draws)
        def ranks(z: torch.Tensor):
            return merge_ranks(zc, z, strata(z, start, end, n_coarse, cfg.disparity_space_sampling))

        if deterministic:                         # u = linspace: the fine depths come sorted
            pos_c, pos_f, before = ranks(zf)
        else:                                     # random u: rank the sorted set, map back
            zs, order = zf.sort(dim=1)
            pos_c, pos_s, before_s = ranks(zs)
            pos_f = torch.empty_like(pos_s).scatter_(1, order, pos_s)
            before = None if keep is None else torch.empty_like(before_s).scatter_(1, order, before_s)
        if keep is not None:       # skipped: density of the coarse sample in front
            sigma_f = torch.where(keep, sigma_f, sigma_c.gather(1, (before - 1).clamp_min(0)))
        total = n_coarse + n_fine
        z_all = zc.new_empty(rays, total).scatter_(1, pos_c, zc).scatter_(1, pos_f, zf)
        s_all = sigma_c.new_empty(rays, total).scatter(1, pos_c, sigma_c).scatter(1, pos_f, sigma_f)
        weights, _ = interval_weights(s_all, z_all)
        omega = sample_weights(weights)
        feats = (torch.bmm(omega.gather(1, pos_c).unsqueeze(1), feats_c)
                 + torch.bmm(omega.gather(1, pos_f).unsqueeze(1), feats_f)).squeeze(1)
    else:
        z_all, weights = zc, weights_c
        feats = torch.bmm(sample_weights(weights).unsqueeze(1), feats_c).squeeze(1)
    opacity = weights.sum(dim=1, keepdim=True)                                   # [R, 1]
    rgb = pad_range(feats, opacity)
    depth = torch.nan_to_num((weights * (z_all[:, 1:] + z_all[:, :-1]) / 2).sum(dim=1, keepdim=True)
                             / opacity, float("inf"))
    if cfg.official_compat:
        depth = depth.clamp(z_all.min(), z_all.max())
    else:
        depth = torch.minimum(torch.maximum(depth, z_all[:, :1]), z_all[:, -1:])
    if cfg.white_back:
        rgb = rgb + 1 - opacity
    return RenderResult((rgb * 2 - 1).reshape(b, m, -1), depth.reshape(b, m, 1),
                        opacity.reshape(b, m, 1), depths,
                        None if depths_fine is None else weights_c.reshape(b, m, n_coarse - 1, 1),
                        depths_fine)



class FastRenderer:
    """The fast path as the generator holds it: settings plus the channels-last planes table of
    the last planes rendered (the viewer renders the same cached planes every frame), kept
    only while that tensor is alive and unmodified and does not require grad."""

    def __init__(self, cfg: Optional[FastRenderConfig] = None):
        self.cfg = cfg or FastRenderConfig()
        self._cached = None                 # (weakref to planes, planes._version, table)

    def __deepcopy__(self, memo) -> "FastRenderer":      # G copies (EMA) start without a cache
        return FastRenderer(dataclasses.replace(self.cfg))

    def __getstate__(self):
        return {"cfg": self.cfg, "_cached": None}

    def applies(self, path: str, planes: torch.Tensor, decoder) -> bool:
        """path 'auto' -> fast unless autograd is recording through the planes or the decoder
        and cfg.auto_under_autograd is off (pass path='fast' to differentiate the fast path)."""
        if path not in PATHS:
            raise ValueError(f"render path must be one of {', '.join(PATHS)}, got {path!r}")
        if path != "auto":
            return path == "fast"
        if self.cfg.auto_under_autograd:
            return True
        recording = torch.is_grad_enabled() and (
            planes.requires_grad or any(p.requires_grad for p in decoder.parameters()))
        return not recording

    def field(self, planes: torch.Tensor, decoder, rendering: RenderingConfig) -> FastField:
        table = None
        if self._cached is not None:
            ref, version, cached = self._cached
            if ref() is planes and planes._version == version:
                table = cached
        field = FastField(planes, decoder, rendering.box_warp, rendering.plane_axes,
                          self.cfg.chunk, table)
        if not planes.requires_grad:
            self._cached = (weakref.ref(planes), planes._version, field.table)
        return field

    def render(self, planes: torch.Tensor, decoder, origins: torch.Tensor,
               directions: torch.Tensor, rendering: RenderingConfig, **kwargs) -> RenderResult:
        """`render_rays` through the (cached) fast field of planes [B, 3, C, H, W]."""
        return render_rays(self.field(planes, decoder, rendering), origins, directions,
                           rendering, self.cfg, **kwargs)
