"""Named architecture presets: the official EG3D configs plus small ones for CPU work and tests."""
from __future__ import annotations

import copy

from . import camera
from .config import (BackboneConfig, DiscriminatorConfig, GeneratorConfig, MappingConfig,
                     RenderingConfig, SuperResConfig)


# The ShapeNet labels' normalised focal 1.025390625 (= 525 / 512) as an EG3D "fov".
SHAPENET_FOV_DEG = 69.2


def _ffhq_like(pivot) -> GeneratorConfig:
    return GeneratorConfig(
        img_resolution=512, neural_rendering_resolution=128,
        backbone=BackboneConfig(channel_base=32768, channel_max=512),
        rendering=RenderingConfig(ray_start=2.25, ray_end=3.3, depth_resolution=48,
                                  depth_resolution_importance=48, box_warp=1,
                                  avg_camera_radius=camera.DEFAULT_RADIUS, avg_camera_pivot=list(pivot)),
        superres=SuperResConfig(module="SuperresolutionHybrid8XDC", num_fp16_res=4),
    )


def _shapenet() -> GeneratorConfig:
    cfg = GeneratorConfig(
        img_resolution=128, neural_rendering_resolution=64, c_gen_conditioning_zero=True,
        backbone=BackboneConfig(channel_base=32768, channel_max=512),
        rendering=RenderingConfig(ray_start=0.1, ray_end=2.6, depth_resolution=64,
                                  depth_resolution_importance=64, box_warp=1.6, white_back=True,
                                  avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0],
                                  avg_camera_fov=SHAPENET_FOV_DEG),
        superres=SuperResConfig(module="SuperresolutionHybrid2X", num_fp16_res=4),
    )
    cfg.regularization.gpc_reg_prob = None
    return cfg


def _tiny() -> GeneratorConfig:
    """A few-hundred-kB generator for tests and CPU smoke runs (64 px output, 32 px render)."""
    return GeneratorConfig(
        z_dim=64, w_dim=64, img_resolution=64, neural_rendering_resolution=32,
        mapping=MappingConfig(num_layers=2),
        backbone=BackboneConfig(resolution=64, channel_base=1024, channel_max=32),
        rendering=RenderingConfig(depth_resolution=12, depth_resolution_importance=12,
                                  official_compat=False, plane_axes="clean"),
        superres=SuperResConfig(module="SuperresolutionHybrid2X", num_fp16_res=0, w_dim=64,
                                channels=[32, 16]),
    )


def _tiny360() -> GeneratorConfig:
    """`tiny` with ShapeNet-style rendering for 360-degree synthetic data (CPU budget).

    Official ShapeNet rendering (white background, no pose conditioning, box_warp 1.6) with the
    64 + 64 samples cut to 16 + 16 and the ray range 0.1-2.6 narrowed to 0.4-2.2, which still
    covers every synthetic object (within 0.84 of the origin) from the cameras at radius 1.3.
    """
    cfg = _tiny()
    cfg.c_gen_conditioning_zero = True
    cfg.rendering = RenderingConfig(ray_start=0.4, ray_end=2.2, depth_resolution=16,
                                    depth_resolution_importance=16, box_warp=1.6, white_back=True,
                                    avg_camera_radius=1.3, avg_camera_pivot=[0, 0, 0],
                                    avg_camera_fov=SHAPENET_FOV_DEG, official_compat=False,
                                    plane_axes="clean")
    cfg.regularization.gpc_reg_prob = None
    return cfg


_GENERATORS = {
    "ffhq512": lambda: _ffhq_like(camera.DEFAULT_PIVOT),
    "afhq512": lambda: _ffhq_like([0, 0, -0.06]),
    "shapenet128": _shapenet,
    "tiny": _tiny,
    "tiny360": _tiny360,
}

_DISCRIMINATORS = {
    "ffhq512": lambda: DiscriminatorConfig(img_resolution=512),
    "afhq512": lambda: DiscriminatorConfig(img_resolution=512),
    "shapenet128": lambda: DiscriminatorConfig(img_resolution=128),
    "tiny": lambda: DiscriminatorConfig(img_resolution=64, channel_base=1024, channel_max=32,
                                        num_fp16_res=0, mapping_layers=2),
}
_DISCRIMINATORS["tiny360"] = _DISCRIMINATORS["tiny"]

PRESETS = tuple(_GENERATORS)


def generator_config(name: str) -> GeneratorConfig:
    if name not in _GENERATORS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(_GENERATORS[name]())


def discriminator_config(name: str) -> DiscriminatorConfig:
    if name not in _DISCRIMINATORS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(_DISCRIMINATORS[name]())
