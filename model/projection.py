"""Projection files: an inverted latent that opens like a network.

`projection.safetensors` (header `format = eg3d-projection/1`) holds `ws` [1, num_ws, w_dim],
`camera` [1, 25] (refined when asked), `initial_camera` [1, 25], `target` [1, 3, S, S] in
[-1, 1], the loss history (`history.<term>` float64 per step, `history.phase` 0 = latent,
1 = pivotal tuning) and, when PTI ran, the tuned generator under `G_ema.` with its config. The
header also records the loss set, the space, and the source network's path and SHA-256.

- `load_projection(path, network=None)` -> `LoadedProjection` (G, ws, camera, target, history);
  G is the tuned generator when the file has one, else the source network (the recorded path,
  checked against its SHA-256, or `network`).
- `LoadedProjection.as_generator()` / `ProjectedGenerator(G, ws)`: G whose `mapping` returns
  the projected ws for any z (truncation psi lerps it towards w_avg), so every export and the
  mesh code render the projection through their usual seed path.
- `model.load(projection.safetensors)` returns `load_projection(...).G`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

FORMAT = "eg3d-projection/1"
PHASES = ("latent", "pti")
PathLike = Union[str, os.PathLike]
_HASH_CHUNK = 1 << 20


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def is_projection(path: PathLike) -> bool:
    """True for a safetensors file with our projection header (cheap: reads the header only)."""
    from safetensors import safe_open
    p = Path(path)
    if not p.is_file() or p.stat().st_size < 9:
        return False
    try:
        with safe_open(str(p), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:
        return False


def save_projection(path: PathLike, projection, network: Optional[PathLike] = None,
                    metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write an `inversion.Projection` atomically (model.atomic_write). network: the file of the
    generator it was made with (its path and SHA-256 are recorded)."""
    from safetensors.torch import save_file
    from .checkpoint import atomic_write

    tensors = {"ws": projection.ws, "camera": projection.camera}
    if projection.target is not None:
        tensors["target"] = projection.target
    if projection.initial_camera is not None:
        tensors["initial_camera"] = projection.initial_camera
    hist = projection.history or {}
    for key, values in hist.items():
        if key == "phase":
            tensors["history.phase"] = torch.tensor([PHASES.index(v) for v in values], dtype=torch.int8)
        elif values and all(isinstance(v, (int, float)) for v in values):
            tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float64)
    meta = {"format": FORMAT, "space": projection.space, "losses": projection.losses,
            "interrupted": json.dumps(bool(projection.interrupted)), "nets": json.dumps([])}
    if network is not None:
        meta["network"] = str(Path(network).resolve())
        meta["network_sha256"] = file_sha256(network)
    if projection.tuned_G is not None:
        meta["nets"] = json.dumps(["G_ema"])
        meta["kind.G_ema"] = "generator"
        meta["config.G_ema"] = projection.tuned_G.cfg.to_json()
        for key, value in projection.tuned_G.state_dict().items():
            tensors[f"G_ema.{key}"] = value
    for key, value in (metadata or {}).items():
        if key in meta:
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[key] = str(value)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return Path(path)


class ProjectedGenerator(nn.Module):
    """A generator whose mapping ignores z and returns the projected ws [B, num_ws, w_dim]
    (lerped towards w_avg by truncation_psi); everything else is the wrapped G's."""

    def __init__(self, G: nn.Module, ws: torch.Tensor):
        super().__init__()
        self.G = G
        self.register_buffer("projected_ws", ws.detach().clone())

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("G"), name)

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        ws = self.projected_ws.to(c.device).expand(c.shape[0], -1, -1)
        if truncation_psi != 1:
            w_avg = self.G.backbone.mapping.w_avg
            cut = ws.shape[1] if truncation_cutoff is None else truncation_cutoff
            ws = ws.clone()
            ws[:, :cut] = w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws

    def forward(self, z, c, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                **synthesis_kwargs):
        return self.G.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), c, **synthesis_kwargs)


@dataclass
class LoadedProjection:
    """A projection read back: the generator to render it with and its tensors."""
    G: nn.Module
    ws: torch.Tensor
    camera: torch.Tensor
    target: Optional[torch.Tensor]
    initial_camera: Optional[torch.Tensor]
    history: Dict[str, list]
    metadata: Dict[str, str] = field(default_factory=dict)
    tuned: bool = False

    def as_generator(self) -> ProjectedGenerator:
        return ProjectedGenerator(self.G, self.ws)


def load_projection(path: PathLike, network: Optional[PathLike] = None, device="cpu") -> LoadedProjection:
    """Read a projection file; see the module docstring for which generator comes with it."""
    from safetensors import safe_open
    from .checkpoint import CheckpointError, load, _load_safetensors

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not is_projection(path):
        raise CheckpointError(f"{path}: not a projection file (expected a safetensors header "
                              f"format={FORMAT!r}, written by `visualizer.py invert`)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("G_ema.")}
    for key in ("ws", "camera"):
        if key not in tensors:
            raise CheckpointError(f"{path}: projection without {key!r}")
    if tensors["ws"].ndim != 3 or tuple(tensors["camera"].shape) != (1, 25):
        raise CheckpointError(f"{path}: bad shapes: ws {tuple(tensors['ws'].shape)}, "
                              f"camera {tuple(tensors['camera'].shape)} (expected [1, N, w_dim], [1, 25])")
    tuned = "G_ema" in json.loads(meta.get("nets", "[]"))
    if tuned:
        G = _load_safetensors(path, "G_ema", meta).to(device).eval()
        G.requires_grad_(False)
    else:
        source = network if network is not None else meta.get("network")
        if source is None:
            raise CheckpointError(f"{path}: holds no generator and names none; pass the network it was "
                                  "made with (--network NET --latent PROJECTION)")
        if not Path(source).is_file():
            raise CheckpointError(f"{path}: its network {source} is missing; pass it with --network NET "
                                  "--latent PROJECTION")
        if network is None and meta.get("network_sha256") and file_sha256(source) != meta["network_sha256"]:
            raise CheckpointError(f"{path}: {source} has changed since the projection was made (SHA-256 "
                                  "differs); pass the right network with --network NET --latent PROJECTION")
        G = load(source, device=device)
    if tensors["ws"].shape[1:] != (G.num_ws, G.w_dim):
        raise CheckpointError(f"{path}: ws of shape {tuple(tensors['ws'].shape)} do not fit the generator "
                              f"(num_ws {G.num_ws}, w_dim {G.w_dim})")
    history: Dict[str, list] = {}
    for key, value in tensors.items():
        if key.startswith("history."):
            name = key[len("history."):]
            history[name] = ([PHASES[int(v)] for v in value] if name == "phase" else value.tolist())
    return LoadedProjection(G=G, ws=tensors["ws"].float().to(device), camera=tensors["camera"].float().to(device),
                            target=tensors.get("target"), initial_camera=tensors.get("initial_camera"),
                            history=history, metadata=dict(meta), tuned=tuned)
