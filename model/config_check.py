"""Range checks of a generator / discriminator config read from a file, before anything is built.

A checkpoint's header is data from the user's file: a config asking for w_dim = 200000 would make
the constructors allocate hundreds of GB before any tensor is compared. `check_config` refuses
non-finite numbers and sizes outside generous ranges, and `min_tensor_elements` (a lower bound of
the weights the config implies: mapping, backbone and SR convolutions) lets the loader refuse a
config that could not possibly fit in the file it came from.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Tuple

from .config import SR_MODULES, DiscriminatorConfig

# (lo, hi) per field name, wherever it appears in the nested configs; other ints: DEFAULT_INT.
LIMITS: Dict[str, Tuple[float, float]] = {
    "z_dim": (1, 4096), "w_dim": (1, 4096), "c_dim": (0, 4096),
    "img_resolution": (4, 4096), "img_channels": (1, 4), "neural_rendering_resolution": (4, 2048),
    "num_layers": (0, 64), "embed_features": (1, 4096), "layer_features": (1, 4096),
    "resolution": (4, 4096), "num_planes": (1, 16), "plane_channels": (1, 1024),
    "channel_base": (1, 1 << 24), "channel_max": (1, 4096), "num_fp16_res": (0, 16),
    "hidden_dim": (1, 4096), "output_features": (1, 4096),
    "depth_resolution": (1, 4096), "depth_resolution_importance": (0, 4096),
    "cmap_dim": (1, 4096), "mbstd_group_size": (0, 1024), "mbstd_num_channels": (0, 64),
    "mapping_layers": (0, 64), "freeze_layers": (0, 64),
}
DEFAULT_INT = (0, 1 << 20)
MAX_NOTES, MAX_NOTE_CHARS = 64, 256
FLOAT_BOUND = 1e6
POWER_OF_TWO = ("img_resolution", "resolution")


def check_config(cfg: Any, where: str = "config") -> None:
    """Raise ValueError naming the first field that is non-finite, of the wrong type, or out of range."""
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), f"{where}.{f.name}"
        if dataclasses.is_dataclass(value):
            check_config(value, name)
            continue
        _check_type(value, str(f.type), name)
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            lo, hi = LIMITS.get(f.name, DEFAULT_INT)
            if not lo <= value <= hi:
                raise ValueError(f"{name} = {value} is outside [{lo}, {hi}]")
            if f.name in POWER_OF_TWO and value & (value - 1):
                raise ValueError(f"{name} = {value} is not a power of two")
        elif isinstance(value, float):
            if not (math.isfinite(value) and abs(value) <= FLOAT_BOUND):
                raise ValueError(f"{name} = {value} is not a finite number within +-{FLOAT_BOUND:g}")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            # provenance notes (official_keys, filled_defaults): bounded text
            if len(value) > MAX_NOTES or any(len(v) > MAX_NOTE_CHARS for v in value):
                raise ValueError(f"{name} must be a list of at most {MAX_NOTES} short strings")
        elif isinstance(value, list):
            if len(value) > 16 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          and math.isfinite(v) and abs(v) <= FLOAT_BOUND for v in value):
                raise ValueError(f"{name} must be a short list of finite numbers")
        else:
            raise ValueError(f"{name} has an unexpected type {type(value).__name__}")


def _check_type(value: Any, hint: str, name: str) -> None:
    """The value's JSON type must be one the field's annotation allows (ints count as floats)."""
    if value is None:
        ok = "Optional" in hint
    elif isinstance(value, bool):
        ok = "bool" in hint
    elif isinstance(value, int):
        ok = "int" in hint or "float" in hint
    else:
        ok = type(value).__name__ in hint
    if not ok:
        raise ValueError(f"{name} = {str(value)[:40]!r} has the wrong type (expected {hint})")


def _channels(res: int, base: int, cmax: int) -> int:
    return max(1, min(base // res, cmax))


def _resolutions(top: int):
    return [2 ** i for i in range(2, int(math.log2(top)) + 1)]


def min_tensor_elements(cfg: Any) -> int:
    """A lower bound of the tensor elements a network of this config holds (main weights only)."""
    if isinstance(cfg, DiscriminatorConfig):
        ch = [_channels(r, cfg.channel_base, cfg.channel_max) for r in _resolutions(cfg.img_resolution)]
        return sum(c * c * 9 for c in ch)
    m = cfg.mapping
    embed = (cfg.w_dim if m.embed_features is None else m.embed_features) if cfg.c_dim > 0 else 0
    hidden = cfg.w_dim if m.layer_features is None else m.layer_features
    widths = [cfg.z_dim + embed] + [hidden] * (m.num_layers - 1) + [cfg.w_dim] if m.num_layers else []
    total = cfg.c_dim * embed + sum(a * b for a, b in zip(widths, widths[1:]))
    b = cfg.backbone
    for res in _resolutions(b.resolution):
        out_ch = _channels(res, b.channel_base, b.channel_max)
        in_ch = _channels(res // 2, b.channel_base, b.channel_max) if res > 4 else out_ch
        total += out_ch * out_ch * 9 + (in_ch * out_ch * 9 if res > 4 else 0) + cfg.w_dim * in_ch
    sr = cfg.superres
    widths = sr.channels or list(SR_MODULES.get(sr.module, {}).get("channels", ()))
    total += sum(int(c) * int(c) * 9 + sr.w_dim * int(c) for c in widths)
    return total


def check_fits(cfg: Any, file_bytes: int, where: str = "config") -> None:
    """Refuse a config whose weights could not be stored in `file_bytes` (2 bytes per element
    at the least: our checkpoints store float16 or float32)."""
    need = min_tensor_elements(cfg)
    if 2 * need > file_bytes:
        raise ValueError(f"{where} describes a network of at least {need:,} weights, more than a file of "
                         f"{file_bytes:,} bytes can hold")

