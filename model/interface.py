"""The one interface the viewer and the exports render through: `Renderable`.

`TriPlaneGenerator` (model/generator.py) and a fitted scene's `SceneGenerator` (model/scene.py)
both implement it, with the same `render` keywords, so callers pass `RENDER_KEYWORDS` without
inspecting signatures or class names. `has_latent` tells the two apart: a scene has no latent
(mapping returns zeros, planes a placeholder), so the viewer hides its latent panels.
"""
from __future__ import annotations

from typing import Dict, Optional, Protocol, runtime_checkable

import torch

from .config import GeneratorConfig

# The keywords every Renderable.render accepts (beyond planes, ws, c).
RENDER_KEYWORDS = ("neural_rendering_resolution", "deterministic", "depth_resolution",
                   "depth_resolution_importance", "superresolution")


@runtime_checkable
class Renderable(Protocol):
    """What the viewer, the exports and the mesh extraction call on a model."""

    cfg: GeneratorConfig          # rendering settings + average camera in cfg.rendering
    has_latent: bool              # False for a fitted scene (no z / ws / conditioning)

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    img_resolution: int
    neural_rendering_resolution: int

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        """z [B, z_dim], c [B, 25] -> ws [B, num_ws, w_dim]."""

    def planes(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """ws -> whatever `render` and `sample_density` take as planes ([B, 3, C, H, W])."""

    def render(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor,
               neural_rendering_resolution: Optional[int] = None, deterministic: bool = False,
               depth_resolution: Optional[int] = None, depth_resolution_importance: Optional[int] = None,
               superresolution: bool = True) -> Dict[str, torch.Tensor]:
        """Cameras c [B, 25] -> image [B,3,S,S] (with superresolution), image_raw, image_depth,
        image_alpha [B,1,R,R], feature_image [B,F,R,R]."""

    def sample_density(self, planes: torch.Tensor, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        """points [B, N, 3] -> sigma [B, N, 1] (raw), rgb [B, N, F]."""
