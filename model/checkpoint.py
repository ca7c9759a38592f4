"""Checkpoint I/O: our safetensors format and the single `load` entry point for both formats.

Our format: one `.safetensors` file holding one or more networks under name prefixes
(`G_ema.`, `G.`, `D.`); the header metadata has `format`, the list of `nets` and, per net, its
config JSON (`config.<net>`) and kind (`kind.<net>` = generator | discriminator). Optional extra
metadata (training counters, model card fields) is stored as strings.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

from .config import DiscriminatorConfig, GeneratorConfig
from .config_check import check_config, check_fits
from .discriminator import DualDiscriminator
from .generator import TriPlaneGenerator
from .output import atomic_write

FORMAT = "eg3d-triplane/1"
NET_NAMES = ("G_ema", "G", "D")
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file could not be read; the message names the file and the problem."""


def build_generator(cfg: GeneratorConfig) -> TriPlaneGenerator:
    return TriPlaneGenerator(cfg)


def build_discriminator(cfg: DiscriminatorConfig) -> DualDiscriminator:
    return DualDiscriminator(cfg)


def _kind(module: nn.Module) -> str:
    if isinstance(module, TriPlaneGenerator):
        return "generator"
    if isinstance(module, DualDiscriminator):
        return "discriminator"
    raise TypeError(f"cannot save a {type(module).__name__}: expected a TriPlaneGenerator or DualDiscriminator")


EXTRA_PREFIX = "extra."


def save(path: PathLike, nets: Union[nn.Module, Mapping[str, nn.Module]],
         metadata: Optional[Mapping[str, str]] = None, dtype: Optional[torch.dtype] = None,
         extra_tensors: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Write networks to one safetensors file atomically.

    nets: a module (stored as 'G_ema' for a generator, 'D' for a discriminator) or a dict
    {'G_ema': ..., 'G': ..., 'D': ...}. dtype=torch.float16 stores floating tensors in half
    precision (to ship small files); they are loaded back as float32. extra_tensors (e.g.
    flattened optimiser states) are stored verbatim under 'extra.<name>' and read back with
    `load_extra_tensors`.
    """
    from safetensors.torch import save_file

    if isinstance(nets, nn.Module):
        nets = {"G_ema" if _kind(nets) == "generator" else "D": nets}
    meta: Dict[str, str] = {"format": FORMAT, "nets": json.dumps(list(nets))}
    tensors: Dict[str, torch.Tensor] = {}
    for name, module in nets.items():
        if name not in NET_NAMES:
            raise ValueError(f"network name must be one of {NET_NAMES}, got {name!r}")
        meta[f"kind.{name}"] = _kind(module)
        meta[f"config.{name}"] = module.cfg.to_json()
        for key, value in module.state_dict().items():
            value = value.detach().to("cpu")
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[f"{name}.{key}"] = value.contiguous()
    for key, value in (extra_tensors or {}).items():
        tensors[EXTRA_PREFIX + key] = value.detach().to("cpu").contiguous()
    for key, value in (metadata or {}).items():
        if key in meta or key.startswith(("config.", "kind.")):
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[key] = str(value)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The header metadata of one of our safetensors files."""
    from safetensors import safe_open

    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: safetensors file without our header (format={str(meta.get('format'))[:80]!r}); "
                              "it is not an EG3D checkpoint written by this tool")
    try:
        nets = json.loads(meta["nets"])
        if not (isinstance(nets, list) and nets and all(n in NET_NAMES for n in nets)):
            raise ValueError(f"expected a list of {', '.join(NET_NAMES)}")
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: bad 'nets' entry in the header ({str(exc)[:200]})") from None
    return meta


def _check_file(path: PathLike) -> None:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{path}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a .safetensors or .pkl file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")


def _sniff(path: PathLike) -> str:
    """'safetensors' (8-byte little-endian header length, then a JSON object), 'pickle'
    (PROTO opcode 0x80 + protocol 2..5) or 'unknown'. Safetensors is tested first: its length
    prefix may itself start with the byte 0x80."""
    with open(path, "rb") as f:
        head = f.read(16)
    size = os.path.getsize(path)
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def filled_defaults_note(module: nn.Module) -> Optional[str]:
    """One line naming the official options an imported snapshot lacked and the defaults used
    for them (None when nothing was filled in, or for a discriminator)."""
    filled = getattr(getattr(module, "cfg", None), "filled_defaults", None)
    if not filled:
        return None
    return "defaults filled in for options absent from the snapshot: " + ", ".join(filled)


def load(path: PathLike, net: str = "G_ema", device: Union[str, torch.device] = "cpu",
         verbose: bool = False) -> nn.Module:
    """Load a network from our .safetensors or an official EG3D .pkl snapshot.

    net: 'G_ema' (default), 'G' or 'D'. The module is returned in eval mode on `device`.
    Official pickles are read with a restricted unpickler: no code stored in them runs.
    verbose=True prints (to stderr) which official options were absent and got the official
    code's defaults.
    """
    if net not in NET_NAMES:
        raise ValueError(f"net must be one of {NET_NAMES}, got {net!r}")
    _check_file(path)
    kind = _sniff(path)
    if kind == "pickle":
        module = _load_official(path, net)
    elif kind == "safetensors":
        module = _load_safetensors(path, net)
    else:
        raise CheckpointError(f"{path}: unrecognised file format (expected our .safetensors or an "
                              "official EG3D .pkl snapshot)")
    note = filled_defaults_note(module)
    if verbose and note:
        print(f"{path}: {note}", file=sys.stderr)
    return module.to(device).eval().requires_grad_(False)


def load_extra_tensors(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors stored with `save(..., extra_tensors=...)`, under their original names."""
    from safetensors import safe_open

    read_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        return {k[len(EXTRA_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(EXTRA_PREFIX)}


def load_all(path: PathLike) -> Dict[str, nn.Module]:
    """Every network stored in one of our safetensors files (training snapshots)."""
    meta = read_metadata(path)
    return {name: _load_safetensors(path, name, meta) for name in json.loads(meta["nets"])}


def _load_safetensors(path: PathLike, net: str, meta: Optional[Dict[str, str]] = None) -> nn.Module:
    from safetensors import safe_open

    meta = meta or read_metadata(path)
    nets = json.loads(meta["nets"])
    if net not in nets:
        raise CheckpointError(f"{path}: has no network {net!r} (it holds {', '.join(nets)})")
    try:
        kind = meta[f"kind.{net}"]
        cls = GeneratorConfig if kind == "generator" else DiscriminatorConfig
        cfg = cls.from_json(meta[f"config.{net}"])
        check_config(cfg, f"config.{net}")                      # before anything is allocated
        check_fits(cfg, os.path.getsize(path), f"config.{net}")
        module = build_generator(cfg) if kind == "generator" else build_discriminator(cfg)
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: bad config for {net!r}: {str(exc)[:300]}") from None
    prefix = f"{net}."
    state = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = f.get_tensor(key)
    except Exception as exc:
        raise CheckpointError(f"{path}: could not read tensors ({exc}); the file may be truncated") from None
    copy_state_dict(module, state, path)
    return module


def copy_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], where,
                    classes: Optional[Mapping[str, str]] = None) -> None:
    """Check that `state` has exactly the module's tensors with the same shapes, then copy them in
    (cast to the module's dtypes). CheckpointError names `where` and up to 5 offending keys;
    classes (official submodule path -> class name) lets it name the official class whose
    layout differs."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        owners = ""
        if classes:
            names = {classes.get(k.rsplit(".", 1)[0]) for k in missing + unexpected} - {None}
            if names:
                owners = f" (in official {', '.join(sorted(names))})"
        raise CheckpointError(f"{where}: tensors do not match the architecture{owners}: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{where}: tensor {key!r} has shape {tuple(value.shape)}, "
                                  f"expected {tuple(own[key].shape)}")
    with torch.no_grad():
        for key, target in own.items():
            target.copy_(state[key].to(target.dtype))


def _load_official(path: PathLike, net: str) -> nn.Module:
    from . import pkl_import

    snapshot = pkl_import.read_snapshot(path)
    if snapshot.get(net) is None:
        raise CheckpointError(f"{path}: the snapshot has no network {net!r}")
    official = snapshot[net]
    if net == "D":
        cfg = pkl_import.discriminator_config_from_official(official)
    else:
        cfg = pkl_import.generator_config_from_official(official)
    try:
        check_config(cfg, f"{net} config")                      # before anything is allocated
        check_fits(cfg, os.path.getsize(path), f"{net} config")
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if net == "D":
        module = build_discriminator(cfg)
    else:
        module = build_generator(cfg)
        axes = official.tensor_attrs.get("renderer.plane_axes")
        if axes is not None and not torch.equal(axes.float(), OFFICIAL_PLANE_AXES):
            raise CheckpointError(f"{path}: renderer.plane_axes differ from the official EG3D axes; "
                                  "such a renderer is not supported")
    state = dict(official.state_dict)
    if net != "D" and "dataset_label_std" not in state:
        state["dataset_label_std"] = torch.ones(module.cfg.c_dim)   # snapshots saved before training
    copy_state_dict(module, state, path, official.module_classes)
    return module


# The three axis matrices of the official renderer (see triplane.PLANE_AXES for what they mean).
OFFICIAL_PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                    [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                                    [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)
