"""Typed configuration of the EG3D generator and discriminator.

Every architectural number lives here (plane channels, backbone resolution, w_dim, ...), so the
modules never hide magic numbers. Configs serialise to plain JSON (stored in our safetensors
headers) and are rebuilt from an official pickle's init kwargs by `model.pkl_import`.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from . import camera

# The super-resolution variants of the official code. Each has two StyleGAN2 blocks; the input
# (the neural render, resized if needed) is img_resolution / 2 when the first block keeps the
# resolution and img_resolution / 4 when it upsamples. `official_resolution` is the only output
# size the official class accepts; ours accept any power of two. The classes differ in more than
# widths, and an imported snapshot must match its class exactly:
#   filter_buffer: the class registers its own (unused) `resample_filter` buffer (8XDC does not);
#   antialias: whether the input resize honours `sr_antialias` (Deepfp32 never antialiases).
# (4X and Deepfp32 resize only a smaller input and fail on a larger one; ours resizes any size.)
SR_MODULES = {
    "SuperresolutionHybrid2X": dict(official_resolution=128, channels=(128, 64), first_up=False,
                                    filter_buffer=True, antialias=True),
    "SuperresolutionHybrid4X": dict(official_resolution=256, channels=(128, 64), first_up=False,
                                    filter_buffer=True, antialias=True),
    "SuperresolutionHybridDeepfp32": dict(official_resolution=256, channels=(128, 64), first_up=False,
                                          filter_buffer=True, antialias=False),
    "SuperresolutionHybrid8X": dict(official_resolution=512, channels=(128, 64), first_up=True,
                                    filter_buffer=True, antialias=True),
    "SuperresolutionHybrid8XDC": dict(official_resolution=512, channels=(256, 128), first_up=True,
                                      filter_buffer=False, antialias=True),
}


@dataclass
class MappingConfig:
    """StyleGAN2 mapping network (z, c) -> w."""
    num_layers: int = 2                      # official EG3D configs use --map-depth=2
    embed_features: Optional[int] = None     # label embedding width; None = w_dim
    layer_features: Optional[int] = None     # hidden width; None = w_dim
    lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998


@dataclass
class BackboneConfig:
    """StyleGAN2 synthesis network that outputs the tri-plane features."""
    resolution: int = 256                    # plane resolution (H = W)
    num_planes: int = 3
    plane_channels: int = 32                 # channels per plane; backbone outputs num_planes * this
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0                    # fp16 for the N highest resolutions (CUDA only)
    conv_clamp: Optional[float] = None
    fused_modconv: str = "inference_only"    # 'inference_only' | 'always' | 'never'

    @property
    def out_channels(self) -> int:
        return self.num_planes * self.plane_channels


@dataclass
class DecoderConfig:
    """The small MLP mapping mean-pooled plane features to density + features."""
    hidden_dim: int = 64
    output_features: int = 32                # first 3 are the raw RGB
    lr_multiplier: float = 1.0


@dataclass
class RenderingConfig:
    """Volume-rendering settings (the official `rendering_kwargs` that concern rendering)."""
    ray_start: Union[float, str] = 2.25      # float, or 'auto' (with ray_end) = intersect the box
    ray_end: Union[float, str] = 3.3
    depth_resolution: int = 48               # stratified (coarse) samples per ray
    depth_resolution_importance: int = 48    # importance (fine) samples per ray
    disparity_space_sampling: bool = False
    clamp_mode: str = "softplus"
    white_back: bool = False
    box_warp: float = 1                      # side length of the cube the planes span
    density_noise: float = 0.0
    avg_camera_radius: float = camera.DEFAULT_RADIUS
    avg_camera_pivot: list = field(default_factory=lambda: list(camera.DEFAULT_PIVOT))
    # Typical field of view of the training cameras, in EG3D's convention (camera.fov_to_intrinsics);
    # viewers and exports start from it. Official snapshots do not store it.
    avg_camera_fov: float = camera.DEFAULT_FOV_DEG
    # 'official': the third plane samples (z, x) as the official code does; 'clean': (y, z).
    plane_axes: str = "official"
    # Reproduce the official code's quirks (see docs/architecture.md, "Compatibility"):
    # in-place image_raw change by the first SR block, importance samples never reaching the last
    # coarse midpoint and the auto-limit fallback. False = the clean behaviour for our own models.
    official_compat: bool = True


@dataclass
class SuperResConfig:
    module: str = "SuperresolutionHybrid8XDC"
    num_fp16_res: int = 4                    # sr_num_fp16_res; > 0 also sets conv_clamp 256
    antialias: bool = True                   # sr_antialias
    noise_mode: str = "none"                 # superresolution_noise_mode
    w_dim: int = 512                         # fixed to 512 by the official SR classes
    # Widths of the two SR blocks; None = the official widths of `module` (SR_MODULES).
    channels: Optional[list] = None
    # Whether the module holds its own `resample_filter` buffer; None = as the official class
    # (SR_MODULES). The importer sets it from the snapshot's tensors.
    filter_buffer: Optional[bool] = None


@dataclass
class RegularizationConfig:
    """Training-only settings stored with the generator (official rendering_kwargs keys)."""
    gpc_reg_prob: Optional[float] = 0.5      # None when generator pose conditioning is off
    density_reg: float = 0.25
    density_reg_p_dist: float = 0.004
    reg_type: str = "l1"


@dataclass
class GeneratorConfig:
    z_dim: int = 512
    c_dim: int = 25
    w_dim: int = 512
    img_resolution: int = 512
    img_channels: int = 3
    neural_rendering_resolution: int = 128
    c_gen_conditioning_zero: bool = False    # True = no generator pose conditioning
    c_scale: float = 1.0
    mapping: MappingConfig = field(default_factory=MappingConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    rendering: RenderingConfig = field(default_factory=RenderingConfig)
    superres: SuperResConfig = field(default_factory=SuperResConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    # Imported official snapshots only (None for our own models): the `rendering_kwargs` keys the
    # snapshot had, so `G.rendering_kwargs` shows exactly those, and the keys it lacked that the
    # importer filled with the official code's defaults (reported by load(verbose=True), inspect).
    official_keys: Optional[list] = None
    filled_defaults: Optional[list] = None

    def to_json(self) -> str:
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorConfig":
        return from_dict(cls, json.loads(text))


@dataclass
class DiscriminatorConfig:
    c_dim: int = 25
    img_resolution: int = 512
    img_channels: int = 3                    # per image; the dual input has 2 * img_channels
    architecture: str = "resnet"
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 4
    conv_clamp: Optional[float] = 256
    cmap_dim: Optional[int] = None           # None = channels at 4x4
    disc_c_noise: float = 0.0
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    mapping_layers: int = 8
    freeze_layers: int = 0

    def to_json(self) -> str:
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DiscriminatorConfig":
        return from_dict(cls, json.loads(text))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """Rebuild a (nested) config dataclass; unknown keys are an error naming the key."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config field(s) {unknown}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        kwargs[key] = value
    return cls(**kwargs)
