"""`--cfg` presets: the official EG3D configs plus small ones for CPU runs and the synthetic data.

A preset names a base architecture (from `model.presets`), how it is scaled to the dataset
resolution, and default training options (any of them can be overridden on the command line).

- `ffhq`, `afhq`, `shapenet`: the official configs (model presets ffhq512 / afhq512 /
  shapenet128: rendering, SR module chosen by resolution as the official train.py: 512 ->
  SuperresolutionHybrid8XDC, 256 -> 4X, 128 -> 2X), official defaults; --batch / --gamma
  default to the values of the official README commands (32 and 1 / 5 / 0.3).
- `tiny`: model preset 'tiny' (a few hundred kB; 2X SR, neural rendering at half the image
  size), batch 4, one CPU thread (its ops are too small to gain from more); CPU smoke runs and
  tests.
- `tiny360`: model preset 'tiny360' (`tiny` with ShapeNet-style rendering: white background,
  no pose conditioning, box_warp 1.6, 16 + 16 samples) for `--cameras 360` datasets on CPU;
  batch 8, gamma 0.3 (official ShapeNet).
- `synthetic`: a small real model for `training.synthetic` portrait datasets on one GPU
  (FFHQ-like rendering, 128^2 planes, 256-wide mapping, 2X SR); neural rendering at half the
  image size.
- `synthetic360`: as `synthetic`, with ShapeNet-like rendering for `--cameras 360` datasets
  (white background, ray range from the box intersection, box_warp 1, camera radius 1.3).

The small presets start the discriminator blur at sigma 2 (official: 10, meant for 128-512 px)
and fade it over 20 kimg at batch 32 (official: 200), scaled by batch / 32 as official.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from model import presets as model_presets
from model.config import (BackboneConfig, DiscriminatorConfig, GeneratorConfig, MappingConfig, RenderingConfig,
                          SuperResConfig)

# Official train.py: the super-resolution module for each dataset resolution.
OFFICIAL_SR_BY_RESOLUTION = {512: "SuperresolutionHybrid8XDC", 256: "SuperresolutionHybrid4X",
                             128: "SuperresolutionHybrid2X"}


@dataclass
class Preset:
    name: str
    description: str
    official: bool
    build: Callable[[], Tuple[GeneratorConfig, DiscriminatorConfig]]
    defaults: Dict[str, object] = field(default_factory=dict)
    # None: neural rendering resolution default = official 64; "half": image resolution / 2.
    nrr_rule: Optional[str] = None
    # None: official SR table; "2x": SuperresolutionHybrid2X at any resolution.
    sr_rule: Optional[str] = None


def _official(name: str) -> Callable[[], Tuple[GeneratorConfig, DiscriminatorConfig]]:
    return lambda: (model_presets.generator_config(name), model_presets.discriminator_config(name))


def _synthetic(three_sixty: bool = False) -> Tuple[GeneratorConfig, DiscriminatorConfig]:
    if three_sixty:
        rendering = RenderingConfig(ray_start="auto", ray_end="auto", depth_resolution=48,
                                    depth_resolution_importance=48, box_warp=1, white_back=True,
                                    avg_camera_radius=1.3, avg_camera_pivot=[0, 0, 0],
                                    official_compat=False, plane_axes="clean")
        if hasattr(rendering, "avg_camera_fov"):       # the synthetic 360 cameras' focal (525 / 512)
            rendering.avg_camera_fov = getattr(model_presets, "SHAPENET_FOV_DEG", 69.2)
    else:
        rendering = RenderingConfig(ray_start=2.25, ray_end=3.3, depth_resolution=48,
                                    depth_resolution_importance=48, box_warp=1,
                                    avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2],
                                    official_compat=False, plane_axes="clean")
    G = GeneratorConfig(
        z_dim=256, w_dim=256, img_resolution=64, neural_rendering_resolution=32,
        c_gen_conditioning_zero=True,
        mapping=MappingConfig(num_layers=2),
        backbone=BackboneConfig(resolution=128, channel_base=16384, channel_max=256),
        rendering=rendering,
        superres=SuperResConfig(module="SuperresolutionHybrid2X", num_fp16_res=4, w_dim=256, channels=[128, 64]),
    )
    G.regularization.gpc_reg_prob = None
    D = DiscriminatorConfig(img_resolution=64, channel_base=16384, channel_max=256, num_fp16_res=4)
    return G, D


PRESETS: Dict[str, Preset] = {
    "ffhq": Preset("ffhq", "official FFHQ config (model preset ffhq512)", True, _official("ffhq512"),
                   dict(batch=32, gamma=1.0)),
    "afhq": Preset("afhq", "official AFHQ config (model preset afhq512)", True, _official("afhq512"),
                   dict(batch=32, gamma=5.0)),
    "shapenet": Preset("shapenet", "official ShapeNet config (model preset shapenet128)", True,
                       _official("shapenet128"), dict(batch=32, gamma=0.3)),
    "tiny": Preset("tiny", "tiny CPU model (model preset tiny) for tests and smoke runs", False, _official("tiny"),
                   dict(batch=4, gamma=1.0, kimg=5.0, tick=0.2, snap=5, workers=0, sr_num_fp16_res=0,
                        d_num_fp16_res=0, g_num_fp16_res=0, grid=(4, 2), threads=1, blur_init_sigma=2.0,
                        blur_fade_kimg=20.0),
                   nrr_rule="half", sr_rule="2x"),
    "tiny360": Preset("tiny360", "tiny CPU model with ShapeNet-style rendering for 360-degree datasets", False,
                      _official("tiny360"),
                      dict(batch=8, gamma=0.3, kimg=300.0, tick=1.0, snap=2, workers=1, sr_num_fp16_res=0,
                           d_num_fp16_res=0, g_num_fp16_res=0, grid=(4, 2), threads=1, blur_init_sigma=2.0,
                           blur_fade_kimg=20.0),
                      nrr_rule="half", sr_rule="2x"),
    "synthetic": Preset("synthetic", "small GPU model for training.synthetic portrait datasets", False,
                        lambda: _synthetic(False),
                        dict(batch=32, gamma=1.0, kimg=1000.0, tick=4.0, snap=10, grid=(8, 4), blur_init_sigma=2.0,
                             blur_fade_kimg=20.0),
                        nrr_rule="half", sr_rule="2x"),
    "synthetic360": Preset("synthetic360", "small GPU model for training.synthetic 360-degree datasets", False,
                           lambda: _synthetic(True),
                           dict(batch=32, gamma=0.3, kimg=1000.0, tick=4.0, snap=10, grid=(8, 4),
                                blur_init_sigma=2.0, blur_fade_kimg=20.0),
                           nrr_rule="half", sr_rule="2x"),
}


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown --cfg {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def sr_module_for(preset: Preset, resolution: int) -> Tuple[str, Optional[str]]:
    """(SR module, warning or None) for a dataset resolution."""
    if preset.sr_rule == "2x":
        return "SuperresolutionHybrid2X", None
    if resolution in OFFICIAL_SR_BY_RESOLUTION:
        return OFFICIAL_SR_BY_RESOLUTION[resolution], None
    module = "SuperresolutionHybrid2X" if resolution < 128 else (
        "SuperresolutionHybrid4X" if resolution < 512 else "SuperresolutionHybrid8XDC")
    return module, (f"resolution {resolution} has no official super-resolution module (official: 128, 256, 512); "
                    f"using {module}")


def base_configs(preset: Preset) -> Tuple[GeneratorConfig, DiscriminatorConfig]:
    G, D = preset.build()
    return copy.deepcopy(G), copy.deepcopy(D)
