"""Look inside a generator: its layers' activations, the tri-planes as images, PCA to RGB.

The viewer's Layers and Tri-planes panels and the exports' `--render layer:NAME` use this; so can
scripts. Activations are captured with forward hooks that exist only inside `capture_layers`, so
a generator that is not being inspected pays nothing.

Layer names, in forward order:
    mapping                                  ws [B, num_ws, w_dim]
    backbone.synthesis.b{res}.conv0/conv1/torgb   [B, C, res, res]
    planes                                   [B, 3, 32, H, W] (the backbone output, reshaped)
    decoder                                  [B, R*R*N, 1 + F] raw sigma + features of the coarse samples
    feature_image                            [B, F, R, R] (first 3 channels = raw RGB)
    superresolution.block{0,1}.conv0/conv1/torgb  [B, C, s, s]
    image                                    [B, 3, S, S]
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .triplane import PLANE_AXES

# Hookable module types inside the synthesis and SR blocks.
BLOCK_LAYERS = ("conv0", "conv1", "torgb")
AXIS_NAMES = "xyz"


@dataclass(frozen=True)
class LayerInfo:
    name: str
    stage: str                  # mapping | backbone | planes | decoder | render | superres
    shape: Tuple[int, ...]
    dtype: str


def _block_layers(root: nn.Module, prefix: str) -> Iterator[Tuple[str, nn.Module]]:
    for block_name, block in root.named_children():
        for layer in BLOCK_LAYERS:
            module = getattr(block, layer, None)
            if isinstance(module, nn.Module):
                yield f"{prefix}.{block_name}.{layer}", module


def hook_points(G) -> Dict[str, nn.Module]:
    """Layer name -> the module whose output is that layer, in forward order (the non-module
    layers `planes`, `feature_image` and `image` are taken from the outputs)."""
    points = {"mapping": G.backbone.mapping}
    points.update(_block_layers(G.backbone.synthesis, "backbone.synthesis"))
    points["decoder"] = G.decoder
    points.update(_block_layers(G.superresolution, "superresolution"))
    return points


def _stage(name: str) -> str:
    if name.startswith("backbone."):
        return "backbone"
    if name.startswith("superresolution.") or name == "image":
        return "superres"
    return {"feature_image": "render"}.get(name, name)


def layer_names(G) -> List[str]:
    """Every layer name of G in forward order (see the module docstring)."""
    names = list(hook_points(G))
    at = names.index("decoder")
    return names[:at] + ["planes"] + names[at:at + 1] + ["feature_image"] + names[at + 1:] + ["image"]


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):                    # the decoder: raw sigma + features
        return torch.cat([output["sigma"], output["rgb"]], dim=-1)
    if isinstance(output, (tuple, list)):           # a block returns (x, img)
        return output[0]
    raise TypeError(f"cannot capture an output of type {type(output).__name__}")


@contextlib.contextmanager
def _hooks(points: Dict[str, nn.Module], store: Dict[str, torch.Tensor]):
    handles = []

    def make(name):
        def hook(_module, _inputs, output):
            if name not in store:                   # the decoder runs twice: keep the coarse pass
                store[name] = _first_tensor(output).detach()
        return hook

    try:
        handles = [m.register_forward_hook(make(n)) for n, m in points.items()]
        yield
    finally:
        for h in handles:
            h.remove()


def capture_layers(G, ws: torch.Tensor, c: torch.Tensor, names: Optional[Iterable[str]] = None,
                   noise_mode: str = "const", planes: Optional[torch.Tensor] = None,
                   **render_kwargs) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Run planes + render once with hooks on the wanted layers (all when names is None).

    ws [B, num_ws, w_dim], c [B, 25]. Returns ({layer name: tensor}, the render output). The
    render uses the reference path, whose modules the hooks see. `planes` [B, 3, C, H, W] (e.g.
    a cache's, for these ws) skips the backbone when no backbone layer is wanted.
    """
    wanted = set(layer_names(G) if names is None else names)
    unknown = wanted - set(layer_names(G))
    if unknown:
        raise KeyError(f"unknown layer(s) {sorted(unknown)}; see model.introspect.layer_names(G)")
    points = {n: m for n, m in hook_points(G).items() if n in wanted}
    store: Dict[str, torch.Tensor] = {}
    with torch.no_grad(), _hooks(points, store):
        if "mapping" in wanted:
            store["mapping"] = ws.detach()
        if planes is None or any(_stage(n) == "backbone" for n in wanted):
            planes = G.planes(ws, noise_mode=noise_mode)
        out = G.render(planes, ws, c, path="reference", **render_kwargs)
    extra = {"planes": planes, "feature_image": out["feature_image"], "image": out.get("image")}
    store.update({k: v for k, v in extra.items() if k in wanted and v is not None})
    return {n: store[n] for n in layer_names(G) if n in store}, out


def list_layers(G, ws: torch.Tensor, c: torch.Tensor, **render_kwargs) -> List[LayerInfo]:
    """The layer table: name, stage, output shape and dtype from one forward pass."""
    layers, _ = capture_layers(G, ws, c, **render_kwargs)
    return [LayerInfo(n, _stage(n), tuple(t.shape), str(t.dtype).replace("torch.", "")) for n, t in layers.items()]


def layer_image(name: str, tensor: torch.Tensor, resolution: Optional[int] = None,
                sample_index: Optional[int] = None) -> torch.Tensor:
    """One batch element of a captured layer as channels of an image, [C, H, W] float32.

    mapping: [1, num_ws, w_dim]; planes: [3 * C, H, W] (plane-major); decoder: the coarse
    sample `sample_index` (default: the middle one) of every ray, [1 + F, R, R] (needs the neural
    `resolution` R); everything else is already [C, H, W].
    """
    t = tensor[0].float()
    if name == "mapping":
        return t.unsqueeze(0)
    if name == "planes":
        return t.reshape(-1, *t.shape[-2:])
    if name == "decoder":
        if resolution is None:
            raise ValueError("the decoder layer needs the neural rendering resolution to form an image")
        rays = resolution * resolution
        samples = t.shape[0] // rays
        k = samples // 2 if sample_index is None else int(sample_index)
        if not 0 <= k < samples:
            raise ValueError(f"sample_index {k} out of range: the coarse pass has {samples} samples per ray")
        return t.reshape(rays, samples, -1)[:, k].T.reshape(-1, resolution, resolution)
    if t.ndim != 3:
        raise ValueError(f"layer {name!r} has shape {tuple(tensor.shape)}; expected [B, C, H, W]")
    return t


@dataclass
class PCAProjection:
    """Project C channels onto their first 3 principal components as RGB in [0, 1].

    Fit once per layer and latent, then apply to every frame: the colours stay stable while the
    camera moves. lo/hi are the 1st/99th percentiles of each component over the fitted pixels.
    """
    mean: torch.Tensor          # [C]
    basis: torch.Tensor         # [C, 3]
    lo: torch.Tensor            # [3]
    hi: torch.Tensor            # [3]

    PERCENTILES = (0.01, 0.99)
    MAX_FIT_PIXELS = 65536

    @classmethod
    def fit(cls, image: torch.Tensor) -> "PCAProjection":
        """image [C, H, W] (C >= 1)."""
        x = image.reshape(image.shape[0], -1).T.double()
        if x.shape[0] > cls.MAX_FIT_PIXELS:
            x = x[torch.linspace(0, x.shape[0] - 1, cls.MAX_FIT_PIXELS).long()]
        mean = x.mean(0)
        _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
        basis = torch.zeros(x.shape[1], 3, dtype=torch.float64)
        k = min(3, v.shape[0])
        basis[:, :k] = v[:k].T
        proj = (x - mean) @ basis
        lo, hi = (torch.quantile(proj, q, dim=0) for q in cls.PERCENTILES)
        return cls(mean.float(), basis.float(), lo.float(), hi.float())

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """image [C, H, W] -> RGB [H, W, 3] in [0, 1]."""
        x = image.reshape(image.shape[0], -1).T.float()
        proj = (x - self.mean) @ self.basis
        rgb = (proj - self.lo) / (self.hi - self.lo).clamp_min(1e-8)
        return rgb.clamp(0, 1).reshape(*image.shape[1:], 3)


def plane_labels(plane_axes: str) -> List[str]:
    """'(width axis, height axis)' of each plane, e.g. ['xy', 'xz', 'zx'] for the official axes."""
    return [AXIS_NAMES[a] + AXIS_NAMES[b] for a, b in PLANE_AXES[plane_axes]]
