"""The EG3D tri-plane generator, as separate stages so callers can cache intermediate results."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from . import camera
from .backbone import Backbone
from .fast_render import FastRenderer
from .official_api import (ImportanceRenderer, RaySampler, RenderingKwargs, config_from_init_args,
                           official_init_kwargs)
from .rendering import render_rays
from .superres import SuperResolution
from .triplane import TriPlaneDecoder, sample_planes


def _reject_unknown(where: str, unknown: dict) -> None:
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {sorted(unknown)}")


class TriPlaneGenerator(nn.Module):
    """z, c -> ws -> tri-planes -> volume-rendered feature image -> super-resolved image.

    Built from our config, `TriPlaneGenerator(cfg)` (a GeneratorConfig or its dict), or from
    the official constructor arguments, `TriPlaneGenerator(z_dim, c_dim, w_dim, img_resolution,
    img_channels, rendering_kwargs=..., ...)`, read as the official .pkl importer reads them;
    `TriPlaneGenerator(*G.init_args, **G.init_kwargs)` rebuilds G either way.
    Parameter names match the official `TriPlaneGenerator` state dict (backbone.*, decoder.*,
    superresolution.*, dataset_label_std). Implements `model.interface.Renderable`.
    """

    has_latent = True

    def __init__(self, *args, **kwargs):
        super().__init__()
        cfg = config_from_init_args(args, kwargs)
        self.cfg = cfg
        self.init_args, self.init_kwargs = official_init_kwargs(cfg)
        self.backbone = Backbone(cfg)
        self.decoder = TriPlaneDecoder(cfg.backbone.plane_channels, cfg.decoder)
        self.superresolution = SuperResolution(
            cfg.superres, cfg.decoder.output_features, cfg.img_resolution, cfg.img_channels,
            fused_modconv=cfg.backbone.fused_modconv, inplace_rgb=cfg.rendering.official_compat)
        # Parameter-free official sub-objects: scripts call G.ray_sampler(...) / G.renderer(...).
        self.ray_sampler = RaySampler()
        self.renderer = ImportanceRenderer(cfg)
        # Per-dimension std of the training labels (official snapshots carry it).
        self.register_buffer("dataset_label_std", torch.ones([cfg.c_dim]))
        self._rendering_kwargs = RenderingKwargs(cfg)
        # Raw backbone output [B, 3*C, H, W] kept by synthesis(cache_backbone=True) (official name).
        self._last_planes: Optional[torch.Tensor] = None
        self.fast_renderer = FastRenderer()       # path="fast" settings + planes-table cache

    # Official attribute names, so scripts written for official G objects keep working.
    z_dim = property(lambda self: self.cfg.z_dim)
    c_dim = property(lambda self: self.cfg.c_dim)
    w_dim = property(lambda self: self.cfg.w_dim)
    img_resolution = property(lambda self: self.cfg.img_resolution)
    img_channels = property(lambda self: self.cfg.img_channels)
    num_ws = property(lambda self: self.backbone.synthesis.num_ws)

    @property
    def rendering_kwargs(self) -> RenderingKwargs:
        """The official dict (same object on each access), a live view of G.cfg."""
        return self._rendering_kwargs

    @rendering_kwargs.setter
    def rendering_kwargs(self, value) -> None:
        self._rendering_kwargs = RenderingKwargs(self.cfg, value)

    @property
    def neural_rendering_resolution(self) -> int:
        return self.cfg.neural_rendering_resolution

    @neural_rendering_resolution.setter
    def neural_rendering_resolution(self, value: int) -> None:
        self.cfg.neural_rendering_resolution = int(value)

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """z [B, z_dim], camera label c [B, 25] -> ws [B, num_ws, w_dim].

        c is scaled by c_scale, or zeroed when generator pose conditioning is off.
        """
        c = torch.zeros_like(c) if self.cfg.c_gen_conditioning_zero else c * self.cfg.c_scale
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def planes(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv=None,
               force_fp32: bool = False) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> tri-planes [B, 3, C, H, W]."""
        out = self.backbone.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                                      force_fp32=force_fp32)
        return self._as_planes(out)

    def _as_planes(self, out: torch.Tensor) -> torch.Tensor:
        b = self.cfg.backbone
        return out.reshape(out.shape[0], b.num_planes, b.plane_channels, out.shape[-2], out.shape[-1])

    def sample_density(self, planes: torch.Tensor, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Decoder outputs at world points [B, N, 3]: sigma [B, N, 1] (raw), rgb [B, N, F]."""
        r = self.cfg.rendering
        return self.decoder(sample_planes(planes, points, r.box_warp, r.plane_axes))

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, z: torch.Tensor,
               c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
               update_emas: bool = False, noise_mode: str = "random", fused_modconv=None,
               force_fp32: bool = False, **unknown) -> Dict[str, torch.Tensor]:
        """Official density query from (z, c) at points [B, N, 3] -> sigma [B, N, 1], rgb [B, N, F].

        Directions are ignored by the decoder; update_emas=True updates w_avg as in the mapping.
        """
        _reject_unknown("sample", unknown)
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, noise_mode=noise_mode,
                                 fused_modconv=fused_modconv, force_fp32=force_fp32)

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                     update_emas: bool = False, noise_mode: str = "random", fused_modconv=None,
                     force_fp32: bool = False, **unknown) -> Dict[str, torch.Tensor]:
        """Official density query from ws (shape extraction). As officially, the truncation
        arguments and update_emas have no effect here: ws are already mapped.

        With rendering density_noise > 0, sigma gets Gaussian noise of that std, as the official
        renderer's run_model adds it.
        """
        _reject_unknown("sample_mixed", unknown)
        planes = self.planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv, force_fp32=force_fp32)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions)

    def render(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor,
               neural_rendering_resolution: Optional[int] = None, deterministic: bool = False,
               depth_resolution: Optional[int] = None,
               depth_resolution_importance: Optional[int] = None,
               superresolution: bool = True, return_samples: bool = False,
               force_fp32: bool = False, fused_modconv=None,
               trace_rays: Optional[torch.Tensor] = None,
               path: str = "auto") -> Dict[str, torch.Tensor]:
        """Render cached planes from cameras c [B, 25].

        Returns image [B,3,S,S] (when superresolution), image_raw [B,3,R,R], image_depth
        [B,1,R,R], feature_image [B,F,R,R], image_alpha [B,1,R,R]; with return_samples also the
        coarse depths, coarse weights and fine depths [B, R*R, N, 1].
        deterministic=True removes both random draws of the sampler (no jitter, fixed u);
        force_fp32 / fused_modconv reach the super-resolution blocks (official names).
        trace_rays [K] (ray indices row * R + col) adds `trace`, a rendering.RayTrace with the
        per-sample densities, weights and transmittance along those rays.
        path: 'reference' (rendering.py, the oracle), 'fast' (fast_render.py, same samples,
        within 1e-3 of the reference; no trace_rays) or 'auto' (fast unless autograd records
        through it or trace_rays is given).
        """
        res = neural_rendering_resolution or self.cfg.neural_rendering_resolution
        cam2world, intrinsics = camera.split_label(c)
        origins, directions = camera.generate_rays(cam2world, intrinsics, res)
        kwargs = dict(deterministic=deterministic, depth_resolution=depth_resolution,
                      depth_resolution_importance=depth_resolution_importance)
        if trace_rays is not None and path == "fast":
            raise ValueError("trace_rays needs path='reference' (the fast path keeps no per-sample data)")
        if trace_rays is None and self.fast_renderer.applies(path, planes, self.decoder):
            result = self.fast_renderer.render(planes, self.decoder, origins, directions,
                                               self.cfg.rendering, **kwargs)
        else:
            result = render_rays(lambda p: self.sample_density(planes, p), origins, directions,
                                 self.cfg.rendering, keep_rays=trace_rays, **kwargs)
        batch = c.shape[0]

        def to_image(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(batch, t.shape[-1], res, res)

        feature_image = to_image(result.features).contiguous()
        out = {"feature_image": feature_image, "image_depth": to_image(result.depth),
               "image_alpha": to_image(result.opacity)}
        if superresolution:
            rgb = feature_image[:, :3].clone()      # SR may add into it in place (official quirk)
            out["image"] = self.superresolution(rgb, feature_image, ws, force_fp32=force_fp32,
                                                fused_modconv=fused_modconv)
            out["image_raw"] = rgb
        else:
            out["image_raw"] = feature_image[:, :3]
        if return_samples:
            out.update(depths_coarse=result.depths_coarse, weights_coarse=result.weights_coarse,
                       depths_fine=result.depths_fine)
        if result.trace is not None:
            out["trace"] = result.trace
        return out

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor,
                  neural_rendering_resolution: Optional[int] = None, update_emas: bool = False,
                  cache_backbone: bool = False, use_cached_backbone: bool = False,
                  noise_mode: str = "random", force_fp32: bool = False, fused_modconv=None,
                  **render_kwargs) -> Dict[str, torch.Tensor]:
        """ws + cameras -> images, with the official keyword arguments.

        neural_rendering_resolution, when given, persists on G (as officially). cache_backbone
        keeps the planes in G._last_planes; use_cached_backbone renders those instead of running
        the backbone. update_emas has no effect (only the mapping tracks an average). Our
        render() options (deterministic, depth_resolution, ...) pass through; other keywords
        raise TypeError.
        """
        unknown = {k: v for k, v in render_kwargs.items() if k not in self._RENDER_OPTIONS}
        _reject_unknown("synthesis", unknown)
        if neural_rendering_resolution is not None:
            self.neural_rendering_resolution = neural_rendering_resolution
        if use_cached_backbone and self._last_planes is not None:
            raw = self._last_planes
        else:
            raw = self.backbone.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                                          force_fp32=force_fp32)
        if cache_backbone:
            self._last_planes = raw
        return self.render(self._as_planes(raw), ws, c, force_fp32=force_fp32,
                           fused_modconv=fused_modconv, **render_kwargs)

    _RENDER_OPTIONS = ("deterministic", "depth_resolution", "depth_resolution_importance",
                       "superresolution", "return_samples", "trace_rays", "path")

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                **synthesis_kwargs) -> Dict[str, torch.Tensor]:
        """z [B, z_dim], c [B, 25] -> mapping, then synthesis(**synthesis_kwargs)."""
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, **synthesis_kwargs)
