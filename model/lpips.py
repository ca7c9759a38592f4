"""LPIPS-VGG (Zhang et al. 2018) on our own VGG16, weights from a local file; no code in it runs.

LPIPS: VGG16 activations after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, each unit-normalised
over channels, squared differences weighted per channel (the learned "lin" weights), averaged
over space and summed over the five layers. Inputs in [-1, 1] are shifted/scaled as LPIPS does.

Files accepted by `load_lpips(path)` and how they are read (none is ever unpickled with code):
- NVIDIA's TorchScript `vgg16.pt` (the StyleGAN2-ADA / EG3D projector's VGG16+LPIPS): a zip
  archive. It is NOT opened with `torch.jit.load`, which compiles the archive's code and runs
  its `__setstate__` methods; instead its `data.pkl` / `constants.pkl` are read by a restricted
  unpickler that only rebuilds tensors from the archive's storages and records everything else
  as inert placeholders. The 13 conv layers and the five LPIPS weights are recognised by shape.
- torchvision's `vgg16-397923af.pth` state dict (`features.N.weight`): read with
  `torch.load(weights_only=True)` (a restricted unpickler too). It has no LPIPS weights, so
  every channel gets weight 1 (the "unlearned" LPIPS variant; `LPIPS.source` says so).
- either as `.safetensors`.
Safe: safetensors, weights_only state dicts, TorchScript read as data (above). Not safe, and
never done here: plain `pickle` / `torch.load(weights_only=False)` / `torch.jit.load` of a file
from elsewhere.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# VGG16 "D" configuration: conv widths per stage; LPIPS taps the last ReLU of each stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
LPIPS_CHANNELS = tuple(stage[-1] for stage in VGG16_STAGES)
# LPIPS's ScalingLayer: inputs in [-1, 1] -> ImageNet-like normalisation.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
MIN_SIZE = 32            # five stages of 2x pooling need at least this many pixels
MAX_SIZE = 256           # larger images are area-downsampled to this first


class LPIPSLoadError(ValueError):
    """A VGG16 file could not be read; the message names the file."""


class LPIPS(nn.Module):
    """distance(x, y) [B] for images [B, 3, H, W] in [-1, 1]; features(x) caches one side."""

    def __init__(self, source: str = "random"):
        super().__init__()
        convs, c_in = [], 3
        for stage in VGG16_STAGES:
            for c_out in stage:
                convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
                c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.lin = nn.ParameterList([nn.Parameter(torch.ones(c)) for c in LPIPS_CHANNELS])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        self.source = source

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Unit-normalised activations of the five taps, [B, C_k, H_k, W_k]."""
        if min(x.shape[-2:]) < MIN_SIZE:
            x = F.interpolate(x, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
        elif max(x.shape[-2:]) > MAX_SIZE:                 # as the StyleGAN projectors do
            x = F.interpolate(x, size=(MAX_SIZE, MAX_SIZE), mode="area")
        h = (x - self.shift) / self.scale
        feats, i = [], 0
        for s, stage in enumerate(VGG16_STAGES):
            if s > 0:
                h = F.max_pool2d(h, 2)
            for _ in stage:
                h = F.relu(self.convs[i](h))
                i += 1
            feats.append(h / (h.square().sum(1, keepdim=True).sqrt() + NORM_EPS))
        return feats

    def distance_to_features(self, x: torch.Tensor, target: List[torch.Tensor]) -> torch.Tensor:
        total = 0
        for f, t, w in zip(self.features(x), target, self.lin):
            total = total + ((f - t).square() * w.reshape(1, -1, 1, 1)).sum(1).mean((1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance_to_features(x, self.features(y))


# ------------------------------------------------------------------------------------------------
# reading weight files


class _Inert:
    """Placeholder for any class named in a TorchScript pickle; keeps its state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _read_torchscript(path: str) -> Dict[str, torch.Tensor]:
    """Named tensors of a TorchScript archive, read as data (see the module docstring)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        found: Dict[str, torch.Tensor] = {}
        for pkl in ("data.pkl", "constants.pkl"):
            entry = next((n for n in names if n.endswith("/" + pkl) or n == pkl), None)
            if entry is None:
                continue
            root = entry[: -len(pkl)]
            prefix = "constants/" if pkl == "constants.pkl" else ""

            def storage(key, dtype, numel, z=z, root=root, pkl=pkl):
                folder = "constants" if pkl == "constants.pkl" else "data"
                raw = z.read(f"{root}{folder}/{key}")
                return torch.frombuffer(bytearray(raw), dtype=dtype)

            found.update(_restricted_unpickle(z.read(entry), storage, prefix))
    return found


_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
           "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
           "ByteStorage": torch.uint8, "BoolStorage": torch.bool}


def _restricted_unpickle(data: bytes, storage_fn, prefix: str) -> Dict[str, torch.Tensor]:
    class _StorageType:
        def __init__(self, name):
            self.dtype = _DTYPES.get(name, torch.float32)

    def rebuild(store, offset, size, stride, *args):
        return torch.as_strided(store, tuple(size), tuple(stride), offset).clone()

    allowed = {("torch._utils", "_rebuild_tensor_v2"): rebuild,
               ("torch._utils", "_rebuild_parameter"): lambda d, *a: d,
               ("collections", "OrderedDict"): dict}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            if module == "torch" and name in _DTYPES:
                return _StorageType(name)
            return _Inert

        def persistent_load(self, pid):
            # ('storage', storage type, key, location, numel)
            _, kind, key, _location, numel = pid
            dtype = kind.dtype if isinstance(kind, _StorageType) else getattr(kind, "dtype", torch.float32)
            return storage_fn(key, dtype, numel)

    obj = Unpickler(io.BytesIO(data)).load()
    found: Dict[str, torch.Tensor] = {}

    def walk(o, name, depth):
        if depth > 64:
            return
        if isinstance(o, torch.Tensor):
            found[prefix + name.strip(".")] = o
        elif isinstance(o, _Inert):
            walk(getattr(o, "state", None), name, depth + 1)
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{name}.{k}", depth + 1)
        elif isinstance(o, (list, tuple)):
            for k, v in enumerate(o):
                walk(v, f"{name}.{k}", depth + 1)

    walk(obj, "", 0)
    return found


def read_tensors(path) -> Dict[str, torch.Tensor]:
    """All tensors of a VGG16 file, by name, without running code from it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LPIPSLoadError(f"{path}: no such file (pass a local VGG16 file with --vgg PATH)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                script = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
            if script:
                return _read_torchscript(path)
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except LPIPSLoadError:
        raise
    except Exception as exc:
        raise LPIPSLoadError(f"{path}: not a readable VGG16 file ({type(exc).__name__}: {exc})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise LPIPSLoadError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _match_layers(tensors: Dict[str, torch.Tensor], path: str) -> Tuple[list, list]:
    """(13 (weight, bias) pairs, 5 LPIPS weights or []) recognised by shape, in key order."""
    keys = sorted(tensors, key=_natural)
    expected, c_in = [], 3
    for stage in VGG16_STAGES:
        for c_out in stage:
            expected.append((c_out, c_in))
            c_in = c_out
    convs, e = [], 0
    for k in keys:
        t = tensors[k]
        if e < len(expected) and t.ndim == 4 and tuple(t.shape) == (*expected[e], 3, 3):
            bias_key = next((b for b in (k[:-len("weight")] + "bias" if k.endswith("weight") else None,)
                             if b in tensors), None)
            if bias_key is None:
                raise LPIPSLoadError(f"{path}: conv weight {k!r} has no bias next to it")
            convs.append((t.float(), tensors[bias_key].float().reshape(-1)))
            e += 1
    if len(convs) != len(expected):
        raise LPIPSLoadError(f"{path}: found {len(convs)} of VGG16's 13 conv layers (by shape); "
                             "expected NVIDIA's vgg16.pt or torchvision's vgg16 state dict")
    lins, li = [], 0
    for k in keys:
        t = tensors[k]
        if li < len(LPIPS_CHANNELS) and t.numel() == LPIPS_CHANNELS[li] and (
                t.ndim == 1 or (t.ndim == 4 and t.shape[0] == 1)) and "bias" not in k.rsplit(".", 1)[-1] \
                and not any(t is b for _, b in convs) and not any(torch.equal(t.reshape(-1), b) for _, b in convs):
            lins.append(t.float().reshape(-1))
            li += 1
    return convs, lins if len(lins) == len(LPIPS_CHANNELS) else []


def load_lpips(path, device="cpu") -> LPIPS:
    """Our LPIPS with the VGG16 (and, when present, LPIPS) weights of a local file."""
    path = os.fspath(path)
    convs, lins = _match_layers(read_tensors(path), path)
    net = LPIPS(source=f"{os.path.basename(path)}" + ("" if lins else ", unit channel weights"))
    with torch.no_grad():
        for conv, (w, b) in zip(net.convs, convs):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        for param, w in zip(net.lin, lins):
            param.copy_(w)
    return net.eval().requires_grad_(False).to(device)
