"""Fast tri-plane field: fused bilinear gather of the three planes + mean + decoder MLP.

The reference (`triplane.sample_planes` + `TriPlaneDecoder`) reads each plane with
`grid_sample` on [C, H, W] planes, i.e. 32 strided gathers per corner, materialises the
[B, 3, N, C] features, averages them and runs the MLP over all N points at once, so every
intermediate is a ~100 MB tensor that round-trips through memory. Here the planes are stored
channels-last as one table of rows [B*3*H*W, C]; the 12 bilinear corners of a point (4 per
plane) are summed with their weights (1/3 of the mean folded in) by one `embedding_bag`
(contiguous 128-byte rows, no [N, 12, C] tensor), and the decoder runs on cache-sized chunks.
Everything is differentiable (embedding_bag has a backward for the table and the weights).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .triplane import PLANE_AXES, TriPlaneDecoder

# The decoder's feature activation, sigmoid(x) * (1 + 2 * RGB_PAD) - RGB_PAD (triplane.py).
RGB_PAD = 0.001


# Zero border around each plane in the table: clamping a corner into it reads zeros, which is
# grid_sample's zero padding without a per-corner validity test. Two texels per side, so that
# both corners of a point clamped from far outside land in the border.
BORDER = 2


def planes_table(planes: torch.Tensor) -> torch.Tensor:
    """planes [B, P, C, H, W] -> channels-last rows [B*P*(H+4)*(W+4), C] with a zero border.

    row = ((b*P + p)*(H+4) + y + 2)*(W+4) + x + 2 for texel (x, y) of plane p of item b.
    """
    padded = F.pad(planes, (BORDER,) * 4)
    return padded.permute(0, 1, 3, 4, 2).reshape(-1, planes.shape[2]).contiguous()


def corner_weights(points: torch.Tensor, batch_index: torch.Tensor, num_planes: int,
                   height: int, width: int, box_warp: float, axes: str
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Table rows [K*4P] and weights [K*4P] of the bilinear corners of points [K, 3].

    Matches grid_sample(bilinear, zeros padding, align_corners=False) on the planes; the
    weights include the 1/P of the mean over planes. batch_index [K] (float) selects each
    point's planes. Row numbers are computed in float32, exact below 2**24 rows.
    """
    pairs = torch.tensor(PLANE_AXES[axes], device=points.device).reshape(-1)
    grid = (points * (2 / box_warp))[:, pairs].reshape(-1, num_planes, 2)        # [K, P, (x, y)]
    size = torch.tensor([width, height], dtype=points.dtype, device=points.device)
    pix = ((grid + 1) * size - 1) / 2
    lo = torch.floor(pix)
    frac = pix - lo
    hi_limit = torch.tensor([width, height], dtype=points.dtype, device=points.device)
    lo = torch.minimum(lo.clamp_min(-BORDER), hi_limit) + BORDER                  # in the padded plane
    pw, ph = width + 2 * BORDER, height + 2 * BORDER
    plane = torch.arange(num_planes, dtype=points.dtype, device=points.device)
    base = ((batch_index.unsqueeze(1) * num_planes + plane) * ph + lo[..., 1]) * pw + lo[..., 0]
    corner = torch.tensor([0, 1, pw, pw + 1], device=points.device)
    rows = base.long().unsqueeze(-1) + corner                                      # [K, P, 4]
    wy = torch.stack([1 - frac[..., 1], frac[..., 1]], dim=-1) * (1 / num_planes)
    wx = torch.stack([1 - frac[..., 0], frac[..., 0]], dim=-1)
    weight = wy.unsqueeze(-1) * wx.unsqueeze(-2)                                  # [K, P, 2, 2]
    return rows.reshape(-1), weight.reshape(-1)


class FastField:
    """Raw sigma and sigmoid features of a tri-plane field at world points, in chunks.

    Built once per planes tensor (the channels-last table costs one copy of the planes) and
    reused for the coarse and fine passes. The decoder weights are read from the module at
    call time, scaled as FullyConnectedLayer does, so training updates are seen. The features
    are sigmoid(x) WITHOUT the decoder's padded range (x * (1 + 2 * RGB_PAD) - RGB_PAD): that
    affine map commutes with compositing, so the renderer applies it once per ray (`pad_range`).
    """

    def __init__(self, planes: torch.Tensor, decoder: TriPlaneDecoder, box_warp: float,
                 axes: str, chunk: int, table: Optional[torch.Tensor] = None):
        if axes not in PLANE_AXES:
            raise ValueError(f"plane_axes must be one of {sorted(PLANE_AXES)}, got {axes!r}")
        self.batch, self.num_planes, self.channels, self.height, self.width = planes.shape
        self.table = planes_table(planes) if table is None else table
        self.decoder, self.box_warp, self.axes, self.chunk = decoder, box_warp, axes, chunk
        self.bags = 4 * self.num_planes

    def _weights(self):
        fc1, fc2 = self.decoder.net[0], self.decoder.net[2]
        w1 = (fc1.weight * fc1.weight_gain).t()
        w2 = (fc2.weight * fc2.weight_gain).t()
        return w1, fc1.bias * fc1.bias_gain, w2, fc2.bias * fc2.bias_gain

    def __call__(self, points: torch.Tensor, batch_index: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """points [K, 3], batch_index [K] (float item numbers) -> sigma [K], features [K, F]."""
        w1, b1, w2, b2 = self._weights()
        count = points.shape[0]
        grad = torch.is_grad_enabled() and (self.table.requires_grad or w1.requires_grad)
        if not grad:        # write straight into the outputs, no concatenation
            sigma = points.new_empty(count)
            feats = points.new_empty(count, w2.shape[1] - 1)
        sigmas, parts = [], []
        offsets = torch.arange(0, self.chunk * self.bags, self.bags, device=points.device)
        for start in range(0, count, self.chunk):
            stop = min(start + self.chunk, count)
            rows, weight = corner_weights(points[start:stop], batch_index[start:stop],
                                          self.num_planes, self.height, self.width,
                                          self.box_warp, self.axes)
            x = F.embedding_bag(rows, self.table, offsets[:stop - start], mode="sum",
                                per_sample_weights=weight)                        # [k, C]
            x = torch.addmm(b2, F.softplus(torch.addmm(b1, x, w1)), w2)          # [k, 1 + F]
            if grad:
                sigmas.append(x[:, 0])
                parts.append(torch.sigmoid(x[:, 1:]))
            else:
                sigma[start:stop] = x[:, 0]
                torch.sigmoid(x[:, 1:], out=feats[start:stop])
        if grad:
            return torch.cat(sigmas), torch.cat(parts)
        return sigma, feats


def pad_range(features: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Composited sigmoid features [.., F] + opacity [.., 1] -> composited decoder features.

    sum_i w_i (s_i * (1 + 2p) - p) = (1 + 2p) * sum_i w_i s_i - p * sum_i w_i.
    """
    return features * (1 + 2 * RGB_PAD) - RGB_PAD * opacity
