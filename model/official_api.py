"""The official `TriPlaneGenerator`'s public surface on our generator.

Official scripts (gen_samples, gen_videos, the visualizer, PTI-style projectors) read and write
`G.rendering_kwargs`, rebuild G from `G.init_args` / `G.init_kwargs`, and call `G.renderer` /
`G.ray_sampler`. This module gives our generator those objects; `model.generator` owns the calls
(synthesis, sample, ...). The official code is a reference for names and behaviour only.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from . import camera
from .config import GeneratorConfig
from .rendering import render_rays
from .triplane import sample_planes

# official rendering_kwargs key -> (config section or None for the top level, field, writable).
# Keys that fix the architecture are read-only (writing their current value is allowed).
CONFIG_KEYS: Dict[str, Tuple[Optional[str], str, bool]] = {
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
# Keys the official training script writes only for some datasets; the official code reads them
# with these defaults. They appear in the dict when the snapshot had them or when they differ.
OPTIONAL_KEYS = {"white_back": False, "density_noise": 0}
SR_CLASS_PREFIX = "training.superresolution."

_is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
_limit = lambda v: v == "auto" or _is_number(v)
# Checks applied when a script writes a rendering key (architecture keys are checked elsewhere).
_CHECKS: Dict[str, Tuple[Callable, str]] = {
    "ray_start": (_limit, "a number or 'auto'"),
    "ray_end": (_limit, "a number or 'auto'"),
    "depth_resolution": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2,
                         "an int >= 2"),
    "depth_resolution_importance": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                                    "an int >= 0"),
    "box_warp": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "density_noise": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "white_back": (lambda v: isinstance(v, bool), "a bool"),
    "disparity_space_sampling": (lambda v: isinstance(v, bool), "a bool"),
    "c_gen_conditioning_zero": (lambda v: isinstance(v, bool), "a bool"),
    "c_scale": (_is_number, "a number"),
    "avg_camera_radius": (_is_number, "a number"),
    "avg_camera_pivot": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_is_number, v)),
                         "a list of 3 numbers"),
}


def _plain(value):
    """numpy / torch scalars -> Python numbers, so the config stays JSON-serialisable."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        return value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class RenderingKwargs(dict):
    """`G.rendering_kwargs`: a real dict whose official keys are live views of `G.cfg`.

    Reads return the config's current values (the viewer changes cfg.rendering directly); writes
    go into the config. Keys scripts add for themselves (the official viewer's
    `depth_resolution_default`) are stored as in any dict. Which official keys are present:
    for imported snapshots the ones the snapshot had (`cfg.official_keys`); for our own models
    the ones the official training script always writes, plus `white_back` / `density_noise`
    when they differ from the official defaults (False / 0).
    """

    def __init__(self, cfg: GeneratorConfig, data: Optional[Mapping] = None):
        super().__init__()
        self._cfg = cfg
        if data is None:
            keys = cfg.official_keys if cfg.official_keys is not None else \
                [k for k in CONFIG_KEYS if k not in OPTIONAL_KEYS]
            for key in keys:
                dict.__setitem__(self, key, None)
        else:
            if not isinstance(data, Mapping):
                raise TypeError(f"rendering_kwargs must be a dict, got {type(data).__name__}")
            for key, value in data.items():     # validate everything before changing anything
                self._check(key, _plain(value))
            for key, value in data.items():
                self[key] = value
        self._refresh()

    # --- the config behind the official keys ----------------------------------------------
    def _field(self, key: str):
        section, name, writable = CONFIG_KEYS[key]
        return (self._cfg if section is None else getattr(self._cfg, section)), name, writable

    def _read(self, key: str):
        obj, name, _ = self._field(key)
        value = getattr(obj, name)
        return SR_CLASS_PREFIX + value if key == "superresolution_module" else value

    def _check(self, key: str, value) -> None:
        if key not in CONFIG_KEYS:
            return
        _, _, writable = self._field(key)
        if not writable:
            if value != self._read(key):
                raise KeyError(f"rendering_kwargs[{key!r}] fixes the architecture and cannot be "
                               f"changed ({self._read(key)!r} -> {value!r})")
            return
        check = _CHECKS.get(key)
        if check is not None and not check[0](value):
            raise ValueError(f"rendering_kwargs[{key!r}] = {value!r} must be {check[1]}")

    def _refresh(self) -> None:
        for key in CONFIG_KEYS:
            value = self._read(key)
            if dict.__contains__(self, key) or (key in OPTIONAL_KEYS and value != OPTIONAL_KEYS[key]):
                dict.__setitem__(self, key, value)

    # --- writes -----------------------------------------------------------------------------
    def __setitem__(self, key, value) -> None:
        value = _plain(value)
        self._check(key, value)
        if key in CONFIG_KEYS and CONFIG_KEYS[key][2]:
            obj, name, _ = self._field(key)
            setattr(obj, name, list(value) if key == "avg_camera_pivot" else value)
            value = self._read(key)
        dict.__setitem__(self, key, value)

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other):
        self.update(other)
        return self

    def _removable(self, key) -> None:
        if key in CONFIG_KEYS:
            raise KeyError(f"rendering_kwargs[{key!r}] is backed by the model config and cannot be removed")

    def __delitem__(self, key) -> None:
        self._removable(key)
        dict.__delitem__(self, key)

    def pop(self, key, *default):
        if key in self:
            self._removable(key)
        return dict.pop(self, key, *default)

    def popitem(self):
        raise KeyError("rendering_kwargs keys backed by the model config cannot be removed")

    def clear(self) -> None:
        self.popitem()

    # --- reads: refresh from the config first -------------------------------------------------
    def __getitem__(self, key):
        self._refresh()
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._refresh()
        return dict.get(self, key, default)

    def __contains__(self, key) -> bool:
        self._refresh()
        return dict.__contains__(self, key)

    def __iter__(self):
        self._refresh()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._refresh()
        return dict.__len__(self)

    def keys(self):
        self._refresh()
        return dict.keys(self)

    def values(self):
        self._refresh()
        return dict.values(self)

    def items(self):
        self._refresh()
        return dict.items(self)

    def copy(self) -> dict:
        self._refresh()
        return dict(dict.items(self))

    def __eq__(self, other) -> bool:
        self._refresh()
        return dict.__eq__(self, other)

    def __ne__(self, other) -> bool:
        return not self == other

    __hash__ = None

    def __or__(self, other):
        return {**self.copy(), **other}

    def __ror__(self, other):
        return {**other, **self.copy()}

    def __repr__(self) -> str:
        self._refresh()
        return dict.__repr__(self)

    def __reduce__(self):
        # Pickling / deepcopy (torch.save(G), copy.deepcopy(G)) rebind to the copied config.
        self._refresh()
        return _restore_rendering_kwargs, (self._cfg, list(dict.items(self)))


def _restore_rendering_kwargs(cfg: GeneratorConfig, items: list) -> RenderingKwargs:
    obj = RenderingKwargs.__new__(RenderingKwargs)
    obj._cfg = cfg
    for key, value in items:
        dict.__setitem__(obj, key, value)
    return obj


# --------------------------------------------------------------------------------------------
# Constructor arguments.

def _official_fused(mode: str):
    return {"always": True, "never": False}.get(mode, mode)


def official_init_kwargs(cfg: GeneratorConfig) -> Tuple[list, dict]:
    """(init_args, init_kwargs) to rebuild G with `TriPlaneGenerator(*args, **kwargs)`.

    Imported snapshots (cfg.official_keys set) get the official constructor arguments in the
    layout the official training script writes; our own models, which the official arguments
    cannot always describe (plane layout, clean rendering, SR widths), get `cfg=` our config.
    """
    if cfg.official_keys is None:
        return [], {"cfg": dataclasses.asdict(cfg)}
    view = RenderingKwargs(cfg)
    mapping = {"num_layers": cfg.mapping.num_layers}
    for name, default in (("embed_features", None), ("layer_features", None),
                          ("lr_multiplier", 0.01), ("w_avg_beta", 0.998)):
        if getattr(cfg.mapping, name) != default:
            mapping[name] = getattr(cfg.mapping, name)
    b, fused = cfg.backbone, _official_fused(cfg.backbone.fused_modconv)
    kwargs = dict(
        z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=mapping,
        channel_base=b.channel_base, channel_max=b.channel_max, fused_modconv_default=fused,
        rendering_kwargs={k: view[k] for k in cfg.official_keys},
        num_fp16_res=b.num_fp16_res, sr_num_fp16_res=cfg.superres.num_fp16_res,
        sr_kwargs=dict(channel_base=b.channel_base, channel_max=b.channel_max,
                       fused_modconv_default=fused),
        conv_clamp=b.conv_clamp, c_dim=cfg.c_dim, img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels)
    return [], copy.deepcopy(kwargs)


def config_from_init_args(args: tuple, kwargs: dict) -> GeneratorConfig:
    """Our config from either `cfg=` (ours) or the official constructor arguments."""
    from . import pkl_import          # imports model.presets; kept local to avoid a cycle
    ours = (not args and set(kwargs) == {"cfg"}) or \
        (len(args) == 1 and not kwargs and isinstance(args[0], (GeneratorConfig, dict)))
    if ours:
        cfg = kwargs["cfg"] if kwargs else args[0]
        if isinstance(cfg, GeneratorConfig):
            return cfg
        if isinstance(cfg, dict):
            from .config import from_dict
            return from_dict(GeneratorConfig, copy.deepcopy(cfg))
        raise TypeError(f"cfg must be a GeneratorConfig or its dict, got {type(cfg).__name__}")
    module = pkl_import.OfficialModule(class_name="TriPlaneGenerator", init_args=list(args),
                                       init_kwargs=copy.deepcopy(dict(kwargs)), attrs={}, state_dict={})
    return pkl_import.generator_config_from_official(module)


# --------------------------------------------------------------------------------------------
# G.ray_sampler and G.renderer.

class RaySampler(nn.Module):
    """`G.ray_sampler(cam2world [B,4,4], intrinsics [B,3,3], resolution)` -> origins, directions
    [B, R*R, 3], as the official RaySampler."""

    def forward(self, cam2world_matrix: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
        return camera.generate_rays(cam2world_matrix, intrinsics, int(resolution))


class ImportanceRenderer(nn.Module):
    """`G.renderer`: the official ImportanceRenderer calls on our sampler and ray marcher.

    `rendering_options` is a rendering_kwargs dict; keys it lacks take the generator's config.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg

    def _options(self, options: Optional[Mapping]):
        r = self.cfg.rendering
        if not options:
            return r
        fields = {f.name for f in dataclasses.fields(r)}
        return dataclasses.replace(r, **{k: options[k] for k in options if k in fields})

    def run_model(self, planes: torch.Tensor, decoder: nn.Module, sample_coordinates: torch.Tensor,
                  sample_directions: torch.Tensor, options: Optional[Mapping] = None
                  ) -> Dict[str, torch.Tensor]:
        """planes [B,3,C,H,W], points [B,N,3] -> sigma [B,N,1] (with density noise), rgb [B,N,F]."""
        r = self._options(options)
        out = decoder(sample_planes(planes, sample_coordinates, r.box_warp, r.plane_axes))
        if r.density_noise > 0:
            out["sigma"] = out["sigma"] + torch.randn_like(out["sigma"]) * r.density_noise
        return out

    def forward(self, planes: torch.Tensor, decoder: nn.Module, ray_origins: torch.Tensor,
                ray_directions: torch.Tensor, rendering_options: Optional[Mapping] = None):
        """-> features [B, M, F], depth [B, M, 1], accumulated weight [B, M, 1]."""
        r = self._options(rendering_options)
        field = lambda p: decoder(sample_planes(planes, p, r.box_warp, r.plane_axes))
        result = render_rays(field, ray_origins, ray_directions, r)
        return result.features, result.depth, result.opacity
