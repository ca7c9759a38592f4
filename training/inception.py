"""Inception-v3 feature network for FID / KID: our own PyTorch code, weights from a local file.

The network is the Inception-v3 of the TensorFlow graph `inception-2015-12-05` that every FID
number since TTUR (and StyleGAN / EG3D's metrics) is computed with: 2048-d features from the
final average pool. Two variants share the torchvision module names:

- ``variant="fid"`` (default): the 2015-12-05 graph. Its average pools ignore the zero padding
  (TF's ``count_include_pad=False``), the last block (Mixed_7c) max-pools its pool branch, the
  classifier has 1008 classes, BatchNorm eps is 1e-3. Input: uint8-range images resized to 299
  with bilinear sampling (align_corners=False, no antialias, clamped borders) and normalised as
  ``(x - 128) / 128``, exactly as NVIDIA's TorchScript port used by StyleGAN2-ADA/3 and EG3D.
- ``variant="torchvision"``: torchvision's ``inception_v3`` ImageNet weights
  (``inception_v3_google-*.pth``; 1000 classes, count_include_pad=True average pools, an average
  pool in Mixed_7c). Input normalised to [-1, 1] (``x / 127.5 - 1``), which is what torchvision's
  ``transform_input=True`` feeds the convolutions. Its features are NOT the standard FID features:
  numbers computed with it are only comparable with each other.

Weight files accepted by `load_inception(path)` (the layout is detected from the keys):

1. NVIDIA's TorchScript ``inception-2015-12-05.pt`` (the StyleGAN2-ADA metrics network; opened
   with ``torch.jit.load``, only its tensors are used), or its state dict. Keys:
   ``layers.conv.weight`` / ``.beta`` / ``.mean`` / ``.var`` (BatchNorm without a scale),
   ``layers.conv_1`` .. ``layers.conv_4``, ``layers.mixed`` .. ``layers.mixed_10`` with towers
   ``conv``, ``tower.conv[_k]``, ``tower_1.conv[_k]``, ``tower_2.conv`` (Mixed_7b/7c:
   ``conv``, ``tower_conv``, ``tower_mixed_conv[_1]``, ``tower_1_conv[_1]``,
   ``tower_1_mixed_conv[_1]``, ``tower_2_conv``), ``output.weight`` [1008, 2048], ``output.bias``.
2. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a plain state dict in torchvision
   layout: ``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.{weight,bias,running_mean,
   running_var}``, ..., ``Mixed_7c.branch_pool.bn.running_var``, ``fc.weight`` [1008, 2048]).
   Same weights as 1; with our (x - 128) / 128 input its features match NVIDIA's port.
3. torchvision's ``inception_v3_google-0cc3c7bd.pth`` (torchvision layout, ``fc.weight``
   [1000, 2048], ``AuxLogits.*`` ignored) -> ``variant="torchvision"``.
4. The StyleGAN3/EG3D ``inception-2015-12-05.pkl``: never unpickled with code execution; the
   pickle's opcodes are scanned for an embedded TorchScript archive, and otherwise it is read with
   a restricted unpickler that only rebuilds tensors and collects named parameters. If neither
   works the error says how to convert it (``torch.jit.save`` it where you trust it).

State dicts may be ``.pt``/``.pth`` (read with ``torch.load(weights_only=True)``) or
``.safetensors``; a ``module.`` / ``model.`` prefix is stripped. ``num_batches_tracked``,
``AuxLogits.*`` and the classifier are optional (the classifier is loaded when present).

Inputs smaller than 299 are allowed (``input_size`` >= 75, the smallest size the strides allow);
tests use that with randomly initialised weights (`random_inception`) to check the maths fast.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
import zipfile
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 2048
VARIANTS = ("fid", "torchvision")


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, inference statistics) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor, tf_pool: bool) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=not tf_pool)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int, tf_pool: bool):
        super().__init__()
        self.tf_pool = tf_pool
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x, self.tf_pool))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int, tf_pool: bool):
        super().__init__()
        c7 = channels_7x7
        self.tf_pool = tf_pool
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        bp = self.branch_pool(_avg_pool(x, self.tf_pool))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """pool: 'avg_tf' (count_include_pad=False), 'avg' (torchvision) or 'max' (FID Mixed_7c)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            p = _avg_pool(x, self.pool == "avg_tf")
        return torch.cat([b1, self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(p)], 1)


class InceptionV3(nn.Module):
    """Inception-v3 up to the 2048-d average-pool features (plus the optional classifier).

    forward(images) takes [N, 3, H, W] images with values in [0, 255] (uint8 or float; 1-channel
    images are repeated to 3) and returns float32 features [N, 2048].
    """

    def __init__(self, variant: str = "fid", input_size: int = 299):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if input_size < 75:
            raise ValueError(f"input_size must be >= 75 (the network's strides need it), got {input_size}")
        self.variant, self.input_size = variant, int(input_size)
        tf = variant == "fid"
        self.num_classes = 1008 if tf else 1000
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32, tf)
        self.Mixed_5c = InceptionA(256, 64, tf)
        self.Mixed_5d = InceptionA(288, 64, tf)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, tf)
        self.Mixed_6c = InceptionC(768, 160, tf)
        self.Mixed_6d = InceptionC(768, 160, tf)
        self.Mixed_6e = InceptionC(768, 192, tf)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg_tf" if tf else "avg")
        self.Mixed_7c = InceptionE(2048, "max" if tf else "avg")
        self.fc = nn.Linear(FEATURE_DIM, self.num_classes)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 255] -> resized, normalised float32 [N, 3, S, S]."""
        x = images.to(torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        elif x.shape[1] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            # Plain bilinear (align_corners=False, borders clamped): NVIDIA's affine_grid +
            # grid_sample(border) resize and TF's ResizeBilinear(half_pixel) give the same values.
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=False)
        if self.variant == "fid":
            return (x - 128.0) / 128.0
        return x / 127.5 - 1.0

    def features_from_normalised(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))              # = the 8x8 average pool at 299 px

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_from_normalised(self.preprocess(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward(images))


# ------------------------------------------------------------------------------------------------
# Random weights (tests) and loading

def random_inception(seed: int = 0, variant: str = "fid", input_size: int = 299) -> InceptionV3:
    """A randomly initialised network of the same architecture (deterministic for a seed).

    Convolutions get He-normal weights and BatchNorm identity statistics with small random
    shifts, so activations keep a useful scale through the ~95 layers and features are O(1).
    """
    gen = torch.Generator().manual_seed(int(seed))
    net = _empty_network(variant, input_size)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * FEATURE_DIM ** -0.5)
                m.bias.zero_()
    return net.eval().requires_grad_(False)


def _empty_network(variant: str, input_size: int) -> InceptionV3:
    """The network with uninitialised storage (skips the default init of 24M parameters)."""
    with torch.device("meta"):
        net = InceptionV3(variant, input_size)
    net = net.to_empty(device="cpu")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.zero_()
    return net


class InceptionLoadError(ValueError):
    """The Inception weight file could not be used; the message names the file and the problem."""


# NVIDIA TorchScript layout -> torchvision layout (per BasicConv2d).
_NV_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_NV_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
              "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
              "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
              "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
_NV_TOWERS = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
          "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_NV_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def nvidia_key_map() -> Dict[str, str]:
    """{NVIDIA TorchScript key: our (torchvision-layout) key} for every tensor of the network."""
    layers = dict(_NV_STEM)
    for nv, (ours, kind) in _NV_BLOCKS.items():
        for tower, branch in _NV_TOWERS[kind].items():
            layers[f"{nv}.{tower}"] = f"{ours}.{branch}"
    out = {f"layers.{nv}.{p}": f"{ours}.{q}" for nv, ours in layers.items() for p, q in _NV_PARAMS.items()}
    out["output.weight"] = "fc.weight"
    out["output.bias"] = "fc.bias"
    return out


def _strip_prefix(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in ("module.", "model.", "base."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def convert_state_dict(sd: Dict[str, torch.Tensor], where: str = "state dict"
                       ) -> Tuple[Dict[str, torch.Tensor], str]:
    """Any accepted layout -> (our state dict, variant). Raises InceptionLoadError on mismatch."""
    sd = _strip_prefix({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})
    if "layers.conv.weight" in sd:                              # NVIDIA TorchScript port
        key_map = nvidia_key_map()
        missing = [k for k in key_map if k not in sd and not k.startswith("output.")]
        if missing:
            raise InceptionLoadError(f"{where}: NVIDIA Inception layout but {len(missing)} tensor(s) missing, "
                                     f"e.g. {missing[:3]}")
        out = {ours: sd[nv] for nv, ours in key_map.items() if nv in sd}
        with torch.device("meta"):
            ref = InceptionV3("fid", 299)
        for name, module in ref.named_modules():
            if isinstance(module, nn.BatchNorm2d):              # the TF graph has no BN scale
                out[f"{name}.weight"] = torch.ones(module.num_features)
        return out, "fid"
    if "Conv2d_1a_3x3.conv.weight" in sd:                       # pytorch-fid / torchvision
        fc = sd.get("fc.weight")
        variant = "torchvision" if fc is not None and fc.shape[0] == 1000 else "fid"
        out = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.") and not k.endswith("num_batches_tracked")}
        for k in [k for k in out if k.endswith(".bn.bias")]:  # a converted TF graph may omit the BN scale
            out.setdefault(k[:-len("bias")] + "weight", torch.ones_like(out[k]))
        return out, variant
    sample = sorted(sd)[:5]
    raise InceptionLoadError(f"{where}: not an Inception-v3 state dict in a known layout "
                             f"(expected 'layers.conv.weight' or 'Conv2d_1a_3x3.conv.weight'; first keys {sample})")


def _load_into(net: InceptionV3, sd: Dict[str, torch.Tensor], where: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing:
        raise InceptionLoadError(f"{where}: {len(missing)} tensor(s) missing, e.g. {missing[:3]}")
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        raise InceptionLoadError(f"{where}: unexpected tensor(s) {unexpected[:3]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise InceptionLoadError(f"{where}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    net.load_state_dict(sd, strict=False)


def _embedded_torchscript(data: bytes) -> Optional[bytes]:
    """The first bytes constant of a pickle that is a zip archive (a TorchScript module), if any."""
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, (bytes, bytearray)) and bytes(arg[:4]) == b"PK\x03\x04":
                return bytes(arg)
    except Exception:
        return None
    return None


class _Stub:
    """Stands in for any class of a restricted pickle; keeps its state so tensors can be found."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state


def _restricted_tensors(data: bytes) -> Dict[str, torch.Tensor]:
    """Named tensors of a pickled nn.Module without running any of its code."""
    from collections import OrderedDict

    def rebuild_from_bytes(b):
        return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")

    def rebuild_tensor_v2(storage, offset, size, stride, *args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # TypedStorage deprecation notices
            t = torch.empty(0, dtype=getattr(storage, "dtype", torch.float32))
            untyped = getattr(storage, "_untyped_storage", storage)
            return t.set_(untyped, offset, size, stride)

    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): lambda data, requires_grad, hooks, *a: data,
        ("torch._utils", "_rebuild_parameter_with_state"): lambda data, requires_grad, hooks, *a: data,
        ("torch.storage", "_load_from_bytes"): rebuild_from_bytes,
        ("collections", "OrderedDict"): OrderedDict,
    }

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            return _Stub

    obj = Unpickler(io.BytesIO(data)).load()
    found: Dict[str, torch.Tensor] = {}

    def walk(o, prefix, depth):
        if depth > 64:
            return
        if isinstance(o, torch.Tensor):
            found[prefix.rstrip(".")] = o
            return
        state = getattr(o, "_state", None) if isinstance(o, _Stub) else o
        if isinstance(state, tuple):                     # (state, slotstate)
            state = next((s for s in state if isinstance(s, dict)), None)
        if isinstance(state, dict):
            if any(k in state for k in ("_parameters", "_buffers", "_modules")):
                for key in ("_parameters", "_buffers"):
                    for n, t in (state.get(key) or {}).items():
                        if isinstance(t, torch.Tensor):
                            found[prefix + n] = t
                for n, m in (state.get("_modules") or {}).items():
                    walk(m, prefix + n + ".", depth + 1)
            else:
                for n, v in state.items():
                    if isinstance(n, str):
                        walk(v, prefix + n + ".", depth + 1)

    walk(obj, "", 0)
    return found


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Tensors of an Inception weight file in any accepted container (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InceptionLoadError(f"{path}: no such file (pass the Inception weights with --inception PATH)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
        if is_script:
            try:
                return dict(torch.jit.load(path, map_location="cpu").state_dict())
            except Exception as e:
                raise InceptionLoadError(f"{path}: TorchScript archive could not be opened ({e})") from e
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InceptionLoadError(f"{path}: not a plain state dict ({e})") from e
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise InceptionLoadError(f"{path}: expected a state dict, found {type(sd).__name__}")
        return sd
    with open(path, "rb") as f:
        data = f.read()
    script = _embedded_torchscript(data)
    if script is not None:
        try:
            return dict(torch.jit.load(io.BytesIO(script), map_location="cpu").state_dict())
        except Exception as e:
            raise InceptionLoadError(f"{path}: embedded TorchScript archive could not be opened ({e})") from e
    try:
        sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)   # legacy torch.save
        if isinstance(sd, dict):
            return sd
    except Exception:
        pass
    try:
        found = _restricted_tensors(data)
    except Exception as e:
        found, err = {}, e
    else:
        err = None
    if found:
        return found
    raise InceptionLoadError(
        f"{path}: could not find Inception tensors in this file ({err or 'no tensors found'}). Accepted: "
        "NVIDIA's TorchScript inception-2015-12-05.pt, pytorch-fid's pt_inception-2015-12-05-*.pth, "
        "torchvision's inception_v3_google-*.pth or a .safetensors of one of them. A pickle can be "
        "converted where you trust it: torch.jit.save(pickle.load(open(pkl, 'rb')), 'inception.pt').")


def load_inception(path: str, device="cpu", variant: Optional[str] = None, input_size: int = 299) -> InceptionV3:
    """Build our InceptionV3 and load weights from `path` (layout and variant detected).

    variant overrides the detected one (e.g. to evaluate torchvision weights with the TF pools).
    """
    sd, detected = convert_state_dict(read_state_dict(path), where=os.fspath(path))
    net = _empty_network(variant or detected, input_size)
    if "fc.weight" in sd and sd["fc.weight"].shape != net.fc.weight.shape:   # variant overridden
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    if "fc.weight" not in sd:                         # the classifier is optional (not used for features)
        with torch.no_grad():
            net.fc.weight.zero_()
            net.fc.bias.zero_()
    _load_into(net, sd, os.fspath(path))
    return net.eval().requires_grad_(False).to(device)
