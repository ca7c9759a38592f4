"""Cheap preview renders for interaction (dragging in the viewer): fewer samples per ray, a
lower neural resolution, and the super-resolution skipped (the raw image upsampled) or run.

The refined frame at rest is the ordinary `G.render`; both use the fast path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F


@dataclass
class PreviewSettings:
    """What a preview frame gives up (defaults: >= 8 FPS at the ffhq512 architecture on 2 CPU
    threads, see bench/render_speed.py --preview)."""
    neural_resolution: int = 48
    depth_resolution: int = 12                # coarse samples per ray
    depth_resolution_importance: int = 12     # fine samples per ray
    superresolution: bool = False             # False: image = raw render, bilinearly upsampled


@torch.no_grad()
def render_preview(G, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor,
                   settings: PreviewSettings = PreviewSettings()) -> Dict[str, torch.Tensor]:
    """G.render's outputs for cached planes [B, 3, C, H, W], ws, cameras c [B, 25] at preview
    quality; image [B, 3, S, S] always has the model's output size S. G is any
    `model.interface.Renderable`; without autograd a generator renders on the fast path."""
    out = G.render(planes, ws, c, neural_rendering_resolution=settings.neural_resolution,
                   depth_resolution=settings.depth_resolution,
                   depth_resolution_importance=settings.depth_resolution_importance,
                   superresolution=settings.superresolution, deterministic=True)
    if not settings.superresolution:
        out["image"] = upsampled_raw(G, out)
    return out


def upsampled_raw(G, out: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The raw image [B, 3, R, R] bilinearly upsampled to the output size [B, 3, S, S]: what a
    preview shows in place of the super-resolved image."""
    size = (G.img_resolution, G.img_resolution)
    return F.interpolate(out["image_raw"], size=size, mode="bilinear", align_corners=False)
