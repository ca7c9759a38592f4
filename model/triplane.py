"""Tri-plane feature sampling and the small decoder MLP."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig
from .layers import FullyConnectedLayer

# For each plane, which world axes become the (width, height) grid coordinates.
# The official code builds three axis matrices and projects with their inverses; that works out
# to (x, y), (x, z) and (z, x): the third plane repeats the x/z pair instead of spanning y/z.
# Imported checkpoints were trained with it, so it is the default; 'clean' uses (y, z).
PLANE_AXES = {
    "official": ((0, 1), (0, 2), (2, 0)),
    "clean": ((0, 1), (0, 2), (1, 2)),
}


def project_points(points: torch.Tensor, box_warp: float, axes: str = "official") -> torch.Tensor:
    """points [B, M, 3] in world units -> grid coordinates [B, P, M, 2] in [-1, 1] per plane."""
    if axes not in PLANE_AXES:
        raise ValueError(f"plane_axes must be one of {sorted(PLANE_AXES)}, got {axes!r}")
    normalised = points * (2 / box_warp)
    return torch.stack([normalised[..., list(pair)] for pair in PLANE_AXES[axes]], dim=1)


def sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                  axes: str = "official") -> torch.Tensor:
    """Bilinear features of each plane at the points.

    planes [B, P, C, H, W], points [B, M, 3] -> [B, P, M, C]. Points outside the box read zeros
    (grid_sample zero padding, align_corners=False).
    """
    batch, num_planes, channels, height, width = planes.shape
    grid = project_points(points, box_warp, axes).reshape(batch * num_planes, 1, -1, 2)
    out = F.grid_sample(planes.reshape(batch * num_planes, channels, height, width),
                        grid.to(planes.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=False)                      # [B*P, C, 1, M]
    return out.reshape(batch, num_planes, channels, -1).transpose(2, 3)


class TriPlaneDecoder(nn.Module):
    """Mean of the plane features -> FC + softplus + FC -> raw density and sigmoid features.

    The feature activation sigmoid(x) * 1.002 - 0.001 (from MipNeRF) lets colours reach exactly
    0 and 1. The decoder ignores ray directions (no view dependence), as in EG3D.
    """

    def __init__(self, in_features: int, cfg: DecoderConfig):
        super().__init__()
        self.hidden_dim = cfg.hidden_dim            # official attribute name
        self.net = nn.Sequential(
            FullyConnectedLayer(in_features, cfg.hidden_dim, lr_multiplier=cfg.lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(cfg.hidden_dim, 1 + cfg.output_features, lr_multiplier=cfg.lr_multiplier),
        )

    def forward(self, plane_features: torch.Tensor, ray_directions=None) -> Dict[str, torch.Tensor]:
        """plane_features [B, P, M, C] -> sigma [B, M, 1] (raw), rgb [B, M, F].

        ray_directions is accepted for the official call `decoder(features, directions)` and unused.
        """
        x = plane_features.mean(dim=1)
        batch, count, channels = x.shape
        x = self.net(x.reshape(batch * count, channels)).reshape(batch, count, -1)
        return {"sigma": x[..., :1], "rgb": colour_activation(x[..., 1:])}


COLOUR_MARGIN = 0.001


def colour_activation(x: torch.Tensor) -> torch.Tensor:
    """EG3D's decoder colour activation (MipNeRF's widened sigmoid): (-0.001, 1.001), so the
    colours 0 and 1 are reachable with finite logits."""
    return torch.sigmoid(x) * (1 + 2 * COLOUR_MARGIN) - COLOUR_MARGIN
