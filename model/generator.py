"""The EG3D tri-plane generator, as separate stages so callers can cache intermediate results."""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Dict, Iterator, Optional

import torch
from torch import nn

from . import camera
from .backbone import Backbone
from .config import GeneratorConfig
from .fast_render import FastRenderer
from .rendering import render_rays
from .superres import SuperResolution
from .triplane import TriPlaneDecoder, sample_planes


class RenderingKwargs(MutableMapping):
    """The official `G.rendering_kwargs` dict as a live view of our config.

    Official scripts read it (avg_camera_radius, ...) and write to it (e.g. multiplying
    depth_resolution); both act on `G.cfg`. Keys that fix the architecture are read-only.
    """
    # official key -> (config section or None for the top level, field name, writable)
    KEYS = {
        "image_resolution": (None, "img_resolution", False),
        "c_gen_conditioning_zero": (None, "c_gen_conditioning_zero", True),
        "c_scale": (None, "c_scale", True),
        "superresolution_module": ("superres", "module", False),
        "superresolution_noise_mode": ("superres", "noise_mode", True),
        "sr_antialias": ("superres", "antialias", True),
        "decoder_lr_mul": ("decoder", "lr_multiplier", False),
        "gpc_reg_prob": ("regularization", "gpc_reg_prob", True),
        "density_reg": ("regularization", "density_reg", True),
        "density_reg_p_dist": ("regularization", "density_reg_p_dist", True),
        "reg_type": ("regularization", "reg_type", True),
        **{k: ("rendering", k, True) for k in (
            "ray_start", "ray_end", "depth_resolution", "depth_resolution_importance",
            "disparity_space_sampling", "clamp_mode", "white_back", "box_warp", "density_noise",
            "avg_camera_radius", "avg_camera_pivot")},
    }

    def __init__(self, cfg: GeneratorConfig):
        self._cfg = cfg

    def _target(self, key: str):
        if key not in self.KEYS:
            raise KeyError(key)
        section, name, writable = self.KEYS[key]
        return (self._cfg if section is None else getattr(self._cfg, section)), name, writable

    def __getitem__(self, key: str):
        obj, name, _ = self._target(key)
        value = getattr(obj, name)
        if key == "superresolution_module":
            return f"training.superresolution.{value}"
        return value

    def __setitem__(self, key: str, value) -> None:
        obj, name, writable = self._target(key)
        if not writable:
            raise KeyError(f"rendering_kwargs[{key!r}] fixes the architecture and cannot be changed")
        setattr(obj, name, value)

    def __delitem__(self, key: str) -> None:
        raise KeyError(f"rendering_kwargs keys cannot be removed ({key!r})")

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


class TriPlaneGenerator(nn.Module):
    """z, c -> ws -> tri-planes -> volume-rendered feature image -> super-resolved image.

    Parameter names match the official `TriPlaneGenerator` state dict (backbone.*, decoder.*,
    superresolution.*, dataset_label_std).
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.decoder = TriPlaneDecoder(cfg.backbone.plane_channels, cfg.decoder)
        self.superresolution = SuperResolution(
            cfg.superres, cfg.decoder.output_features, cfg.img_resolution, cfg.img_channels,
            fused_modconv=cfg.backbone.fused_modconv, inplace_rgb=cfg.rendering.official_compat)
        # Per-dimension std of the training labels (official snapshots carry it).
        self.register_buffer("dataset_label_std", torch.ones([cfg.c_dim]))
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
        return RenderingKwargs(self.cfg)

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

    def planes(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv=None) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> tri-planes [B, 3, C, H, W]."""
        out = self.backbone.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        b = self.cfg.backbone
        return out.reshape(out.shape[0], b.num_planes, b.plane_channels, out.shape[-2], out.shape[-1])

    def sample_density(self, planes: torch.Tensor, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Decoder outputs at world points [B, N, 3]: sigma [B, N, 1] (raw), rgb [B, N, F]."""
        r = self.cfg.rendering
        return self.decoder(sample_planes(planes, points, r.box_warp, r.plane_axes))

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, z: torch.Tensor,
               c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
               noise_mode: str = "random", **_unused) -> Dict[str, torch.Tensor]:
        """Official-API density query from (z, c); directions are ignored by the decoder."""
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff)
        return self.sample_mixed(coordinates, directions, ws, noise_mode=noise_mode)

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     noise_mode: str = "random", **_unused) -> Dict[str, torch.Tensor]:
        """Official-API density query from ws (used by shape-extraction scripts)."""
        return self.sample_density(self.planes(ws, noise_mode=noise_mode), coordinates)

    def render(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor,
               neural_rendering_resolution: Optional[int] = None, deterministic: bool = False,
               depth_resolution: Optional[int] = None,
               depth_resolution_importance: Optional[int] = None,
               superresolution: bool = True, return_samples: bool = False,
               path: str = "auto") -> Dict[str, torch.Tensor]:
        """Render cached planes from cameras c [B, 25].

        Returns image [B,3,S,S] (when superresolution), image_raw [B,3,R,R], image_depth
        [B,1,R,R], feature_image [B,F,R,R], image_alpha [B,1,R,R]; with return_samples also the
        coarse depths, coarse weights and fine depths [B, R*R, N, 1].
        deterministic=True removes both random draws of the sampler (no jitter, fixed u).
        path: 'reference' (rendering.py, the oracle), 'fast' (fast_render.py, same samples,
        within 1e-3 of the reference) or 'auto' (fast unless autograd records through it).
        """
        res = neural_rendering_resolution or self.cfg.neural_rendering_resolution
        cam2world, intrinsics = camera.split_label(c)
        origins, directions = camera.generate_rays(cam2world, intrinsics, res)
        kwargs = dict(deterministic=deterministic, depth_resolution=depth_resolution,
                      depth_resolution_importance=depth_resolution_importance)
        if self.fast_renderer.applies(path, planes, self.decoder):
            result = self.fast_renderer.render(planes, self.decoder, origins, directions,
                                               self.cfg.rendering, **kwargs)
        else:
            result = render_rays(lambda p: self.sample_density(planes, p), origins, directions,
                                 self.cfg.rendering, **kwargs)
        batch = c.shape[0]

        def to_image(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(batch, t.shape[-1], res, res)

        feature_image = to_image(result.features).contiguous()
        out = {"feature_image": feature_image, "image_depth": to_image(result.depth),
               "image_alpha": to_image(result.opacity)}
        if superresolution:
            rgb = feature_image[:, :3].clone()      # SR may add into it in place (official quirk)
            out["image"] = self.superresolution(rgb, feature_image, ws)
            out["image_raw"] = rgb
        else:
            out["image_raw"] = feature_image[:, :3]
        if return_samples:
            out.update(depths_coarse=result.depths_coarse, weights_coarse=result.weights_coarse,
                       depths_fine=result.depths_fine)
        return out

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: str = "random",
                  **render_kwargs) -> Dict[str, torch.Tensor]:
        """ws + cameras -> images (official name): planes(ws) then render(...)."""
        return self.render(self.planes(ws, noise_mode=noise_mode), ws, c, **render_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                **synthesis_kwargs) -> Dict[str, torch.Tensor]:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, c, **synthesis_kwargs)
