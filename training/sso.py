"""Single-scene fitting ("SSO"): tri-plane vs. dense voxel grid vs. implicit MLP.

    python -m training.sso --data scene.zip --repr triplane --outdir runs/sso-triplane --cpu-scale
    python -m training.sso --data nerf_synthetic/lego --repr voxel --outdir runs/lego-voxel --resolution 100

EG3D motivated the tri-plane by overfitting one scene from many posed views: planes N = 512,
C = 48, a 4-layer decoder MLP with 128 hidden units and a Fourier feature encoding, against a dense
feature volume and a fully implicit network of the same capacity. This module reproduces that
experiment on any multi-view dataset:

- data: an EG3D dataset (zip or folder with `dataset.json`; held-out views from its `split.json`
  when present, e.g. the scenes of `training.sso_scene`, else every `--heldout-every`-th view, or
  a separate dataset given with `--heldout`), or a NeRF folder with `transforms.json` (or
  `transforms_{train,val,test}.json`; OpenGL poses are converted to our OpenCV labels).
- representations (`--repr`), all mapping a point in the box [-box/2, box/2]^3 to a raw density
  and an RGB colour; density is zero outside the box:
  - `triplane`: three axis-aligned N x N x C feature planes (xy, xz, yz), bilinearly sampled and
    summed, concatenated with Gaussian Fourier features of the position [Tancik et al. 2020],
    decoded by a `decoder_layers`-layer ReLU MLP of width `decoder_hidden`;
  - `voxel`: a dense V^3 x C feature volume, trilinearly sampled, with the same decoder; V is
    solved so that the parameter count equals the tri-plane's;
  - `mlp`: a fully implicit `mlp_layers`-layer ReLU MLP on Gaussian Fourier features of the
    position; its width is solved so that the parameter count equals the tri-plane's.
  Budgets are matched to within one voxel slice / one unit of width (printed at start).
- rendering: `model.rendering.render_rays` (stratified + importance samples inside the box,
  EG3D's midpoint compositing with softplus(sigma - 1) densities), composited over the scene's
  background colour.
- training: Adam, per-ray MSE on random rays of all training views, the learning rate decaying
  exponentially to `lr_final_ratio` of its initial value; a tqdm bar with the loss, the running
  training PSNR and the latest held-out PSNR (every `--eval-every` steps); `metrics.jsonl`.
- checkpoints: `checkpoint.safetensors` (field, Adam state, RNG states; the config JSON and the
  counters in the header) written atomically every `--checkpoint-every` steps, on Ctrl-C and at
  the end; `--resume` continues bit-exactly. At the end `scene.safetensors` (the field only) and
  `metrics.json`.
- viewing and exporting: `load_scene(path)` -> `SceneField` with `.render(labels, resolution)`,
  `.density(points)`, `.sample_density(points)` and `.density_grid(resolution)`.

`--cpu-scale K` (K = 8 when given without a value) scales the paper-sized defaults down for a CPU
(`scaled_defaults`): plane resolution N / K, channels 48 / K (at least 4), rays per step 4096 / K,
steps 20000 / K, decoder width 128 / sqrt(K / 2), samples per ray (48 + 48) / sqrt(K).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.camera import generate_rays, intrinsics_to_fov, look_at_pose, make_label, split_label
from model.config import RenderingConfig, from_dict, to_dict
from model.rendering import render_rays
from model.triplane import sample_planes

FORMAT = "eg3d-sso/1"
REPRS = ("triplane", "voxel", "mlp")
OUTSIDE_SIGMA = -20.0                   # raw density outside the box: softplus(-21) ~ 1e-9
CHECKPOINT_NAME = "checkpoint.safetensors"
SCENE_NAME = "scene.safetensors"
PathLike = Union[str, os.PathLike]


class SSOError(ValueError):
    """A user-facing problem (bad data, bad arguments, unreadable checkpoint)."""


# ------------------------------------------------------------------------------------------------
# Configuration

@dataclass
class FieldConfig:
    """The representation and its size. 0 = solved for the tri-plane's parameter budget."""
    repr: str = "triplane"
    box_size: float = 1.0                   # side of the cube [-box/2, box/2]^3 holding the scene
    plane_resolution: int = 512             # N (the tri-plane budget is defined by N and C)
    plane_channels: int = 48                # C
    voxel_resolution: int = 0               # V; 0 = solved for the budget
    voxel_channels: int = 0                 # 0 = plane_channels
    decoder_layers: int = 4                 # linear layers of the tri-plane / voxel decoder
    decoder_hidden: int = 128
    decoder_fourier: int = 16               # Gaussian Fourier frequencies (2x as many features)
    decoder_fourier_scale: float = 1.0      # std of the frequencies, cycles per half box
    mlp_layers: int = 8                     # linear layers of the implicit network
    mlp_width: int = 0                      # 0 = solved for the budget
    mlp_fourier: int = 128
    mlp_fourier_scale: float = 8.0          # cycles per half box; 8 / K with --cpu-scale K
    feature_init: float = 0.1               # std of the initial plane / voxel features
    fourier_seed: int = 0


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_rays: int = 4096
    lr: float = 5e-3                        # networks (decoder, implicit MLP)
    lr_features: float = 2e-2               # feature planes / volume
    lr_final_ratio: float = 0.1             # exponential decay to lr * ratio at the last step
    eval_every: int = 1000
    eval_views: int = 8                     # held-out views in periodic evaluations (all at the end)
    checkpoint_every: int = 1000
    seed: int = 0
    eval_chunk: int = 8192                  # rays per render_rays call when rendering images


@dataclass
class SSOConfig:
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    rendering: RenderingConfig = dataclasses.field(default_factory=lambda: default_rendering(1.0))
    background: List[float] = dataclasses.field(default_factory=lambda: [1.0, 1.0, 1.0])
    cpu_scale: float = 1.0
    data: str = ""
    heldout_data: str = ""
    resolution: int = 0                     # training image size (0 = the dataset's)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SSOConfig":
        return from_dict(cls, json.loads(text))


def default_rendering(box_size: float, coarse: int = 48, fine: int = 48) -> RenderingConfig:
    """Rays sampled inside the scene box only ('auto' limits), clean (non-official) behaviour."""
    return RenderingConfig(ray_start="auto", ray_end="auto", depth_resolution=coarse,
                           depth_resolution_importance=fine, box_warp=float(box_size), white_back=False,
                           density_noise=0.0, plane_axes="clean", official_compat=False)


def scaled_defaults(cpu_scale: float = 1.0) -> SSOConfig:
    """The paper-sized settings (cpu_scale = 1) or those scaled down by K = cpu_scale for a CPU.

    K divides the plane resolution (512 / K), the channels (48 / K, at least 4), the rays per step
    (4096 / K) and the steps (20000 / K); the decoder width (128) and the samples per ray (48 + 48)
    are divided by sqrt(K / 2) and sqrt(K) (K = 8: 64 hidden units, 17 + 17 samples); the implicit
    MLP's Fourier features: 128 / sqrt(K / 2) frequencies of scale 8 / K.
    """
    k = float(cpu_scale)
    if not k >= 1:
        raise SSOError(f"--cpu-scale must be >= 1, got {cpu_scale}")
    cfg = SSOConfig(cpu_scale=k)
    f, t = cfg.field, cfg.train
    f.plane_resolution = max(8, int(round(512 / k)))
    f.plane_channels = max(4, int(round(48 / k)))
    f.decoder_hidden = max(16, int(round(128 / math.sqrt(max(k / 2, 1.0)))))
    f.mlp_fourier = max(16, int(round(128 / math.sqrt(max(k / 2, 1.0)))))
    f.mlp_fourier_scale = 8.0 / k
    t.batch_rays = max(64, int(round(4096 / k)))
    t.steps = max(100, int(round(20000 / k)))
    t.eval_every = max(50, int(round(1000 / k)))
    t.checkpoint_every = t.eval_every
    samples = max(8, int(round(48 / math.sqrt(k))))
    cfg.rendering = default_rendering(f.box_size, samples, samples)
    return cfg


# ------------------------------------------------------------------------------------------------
# Representations

class FourierFeatures(nn.Module):
    """Gaussian random Fourier features [sin(2 pi x B), cos(2 pi x B)] of x in [-1, 1]^3.

    B [3, count] ~ N(0, scale^2), drawn from `seed` and stored (a buffer) with the field.
    """

    def __init__(self, count: int, scale: float, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("matrix", torch.randn(3, int(count), generator=gen) * float(scale))

    @property
    def out_features(self) -> int:
        return 2 * self.matrix.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix.shape[1] == 0:
            return x.new_zeros(x.shape[:-1] + (0,))
        proj = (2 * math.pi) * (x @ self.matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def mlp(in_features: int, hidden: int, layers: int, out_features: int = 4) -> nn.Sequential:
    """`layers` linear layers with ReLU between them; in -> hidden -> ... -> out."""
    if layers < 1:
        raise SSOError(f"an MLP needs at least one layer, got {layers}")
    dims = [in_features] + [hidden] * (layers - 1) + [out_features]
    mods: List[nn.Module] = []
    for i in range(layers):
        lin = nn.Linear(dims[i], dims[i + 1])
        # He initialisation keeps deep ReLU stacks (the implicit MLP) from fading out at the start.
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu" if i > 0 else "linear")
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i < layers - 1:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


def mlp_param_count(in_features: int, hidden: int, layers: int, out_features: int = 4) -> int:
    dims = [in_features] + [hidden] * (layers - 1) + [out_features]
    return sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(layers))


def _decode(net: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    out = net(x)
    # The colour activation of EG3D's decoder (MipNeRF's widened sigmoid).
    return {"sigma": out[..., :1], "rgb": torch.sigmoid(out[..., 1:4]) * (1 + 2 * 0.001) - 0.001}


class SSOField(nn.Module):
    """Base: points [B, K, 3] (world units) -> {'sigma' [B, K, 1] raw, 'rgb' [B, K, 3] in [0, 1]}."""

    def __init__(self, cfg: FieldConfig):
        super().__init__()
        self.cfg = cfg
        self.box_size = float(cfg.box_size)

    def query(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x [M, 3] normalised to [-1, 1]^3 -> sigma [M, 1], rgb [M, 3]."""
        raise NotImplementedError

    def forward(self, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        shape = points.shape[:-1]
        x = points.reshape(-1, 3) * (2 / self.box_size)
        out = self.query(x)
        inside = (x.abs() <= 1 + 1e-4).all(dim=-1, keepdim=True)
        sigma = torch.where(inside, out["sigma"], torch.full_like(out["sigma"], OUTSIDE_SIGMA))
        return {"sigma": sigma.reshape(shape + (1,)), "rgb": out["rgb"].reshape(shape + (3,))}

    def feature_parameters(self) -> List[nn.Parameter]:
        return []

    def network_parameters(self) -> List[nn.Parameter]:
        ids = {id(p) for p in self.feature_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TriPlaneField(SSOField):
    """Three N x N x C planes (xy, xz, yz: `model.triplane`'s 'clean' axes), summed, + decoder."""

    def __init__(self, cfg: FieldConfig):
        super().__init__(cfg)
        n, c = cfg.plane_resolution, cfg.plane_channels
        self.planes = nn.Parameter(torch.randn(1, 3, c, n, n) * cfg.feature_init)
        self.fourier = FourierFeatures(cfg.decoder_fourier, cfg.decoder_fourier_scale, cfg.fourier_seed)
        self.decoder = mlp(c + self.fourier.out_features, cfg.decoder_hidden, cfg.decoder_layers)

    def query(self, x):
        # sample_planes expects world units in a box of side box_warp; x is in [-1, 1] (box 2).
        feats = sample_planes(self.planes, x[None], 2.0, "clean")[0].sum(dim=0)     # [M, C]
        return _decode(self.decoder, torch.cat([feats, self.fourier(x)], dim=-1))

    def feature_parameters(self):
        return [self.planes]


class VoxelField(SSOField):
    """A dense V^3 x C feature volume (trilinear, zero outside) + the tri-plane's decoder."""

    def __init__(self, cfg: FieldConfig):
        super().__init__(cfg)
        v, c = cfg.voxel_resolution, cfg.voxel_channels or cfg.plane_channels
        if v < 2:
            raise SSOError(f"voxel_resolution must be >= 2 (resolve the budget first), got {v}")
        self.volume = nn.Parameter(torch.randn(1, c, v, v, v) * cfg.feature_init)
        self.fourier = FourierFeatures(cfg.decoder_fourier, cfg.decoder_fourier_scale, cfg.fourier_seed)
        self.decoder = mlp(c + self.fourier.out_features, cfg.decoder_hidden, cfg.decoder_layers)

    def query(self, x):
        # grid_sample's last grid axis is (x -> W, y -> H, z -> D) of the volume [1, C, D, H, W].
        feats = F.grid_sample(self.volume, x.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                              align_corners=False)                                   # [1, C, 1, 1, M]
        feats = feats.reshape(self.volume.shape[1], -1).t()
        return _decode(self.decoder, torch.cat([feats, self.fourier(x)], dim=-1))

    def feature_parameters(self):
        return [self.volume]


class ImplicitField(SSOField):
    """A fully implicit MLP on Gaussian Fourier features (and the raw coordinates) of the position."""

    def __init__(self, cfg: FieldConfig):
        super().__init__(cfg)
        if cfg.mlp_width < 1:
            raise SSOError(f"mlp_width must be >= 1 (resolve the budget first), got {cfg.mlp_width}")
        self.fourier = FourierFeatures(cfg.mlp_fourier, cfg.mlp_fourier_scale, cfg.fourier_seed)
        self.net = mlp(3 + self.fourier.out_features, cfg.mlp_width, cfg.mlp_layers)

    def query(self, x):
        return _decode(self.net, torch.cat([x, self.fourier(x)], dim=-1))


FIELDS = {"triplane": TriPlaneField, "voxel": VoxelField, "mlp": ImplicitField}


def _decoder_params(cfg: FieldConfig, channels: int) -> int:
    return mlp_param_count(channels + 2 * cfg.decoder_fourier, cfg.decoder_hidden, cfg.decoder_layers)


def param_budget(cfg: FieldConfig) -> int:
    """The tri-plane's parameter count (planes + decoder): the budget of all representations."""
    return 3 * cfg.plane_resolution ** 2 * cfg.plane_channels + _decoder_params(cfg, cfg.plane_channels)


def param_count(cfg: FieldConfig, repr_: Optional[str] = None) -> int:
    """Parameter count of a representation under cfg (unresolved sizes are solved first)."""
    cfg = resolve_budget(dataclasses.replace(cfg, repr=repr_ or cfg.repr))
    if cfg.repr == "triplane":
        return param_budget(cfg)
    if cfg.repr == "voxel":
        c = cfg.voxel_channels or cfg.plane_channels
        return cfg.voxel_resolution ** 3 * c + _decoder_params(cfg, c)
    return mlp_param_count(3 + 2 * cfg.mlp_fourier, cfg.mlp_width, cfg.mlp_layers)


def resolve_budget(cfg: FieldConfig) -> FieldConfig:
    """A copy of cfg with voxel_resolution / mlp_width solved (where 0) for the tri-plane budget."""
    if cfg.repr not in REPRS:
        raise SSOError(f"repr must be one of {REPRS}, got {cfg.repr!r}")
    cfg = dataclasses.replace(cfg)
    budget = param_budget(cfg)
    if cfg.voxel_resolution <= 0:
        c = cfg.voxel_channels or cfg.plane_channels
        target = max(budget - _decoder_params(cfg, c), 8 * c) / c
        v0 = max(2, int(target ** (1 / 3)))
        cfg.voxel_resolution = min((v0, v0 + 1), key=lambda v: abs(v ** 3 * c - target * c))
    if cfg.mlp_width <= 0:
        d_in, layers = 3 + 2 * cfg.mlp_fourier, cfg.mlp_layers
        if layers == 1:
            cfg.mlp_width = 1
        else:
            # (layers - 2) W^2 + (d_in + layers - 2 + 1 + 4) W + 4 = budget
            a, b = layers - 2, d_in + (layers - 2) + 1 + 4
            w = (budget - 4) / b if a == 0 else (-b + math.sqrt(b * b + 4 * a * (budget - 4))) / (2 * a)
            w0 = max(1, int(w))
            cfg.mlp_width = min((w0, w0 + 1), key=lambda v: abs(mlp_param_count(d_in, v, layers) - budget))
    return cfg


def build_field(cfg: FieldConfig) -> SSOField:
    cfg = resolve_budget(cfg)
    return FIELDS[cfg.repr](cfg)


def budget_table(cfg: FieldConfig) -> List[Tuple[str, int, str]]:
    """(repr, parameter count, size description) of the three representations under cfg."""
    r = resolve_budget(cfg)
    c = r.voxel_channels or r.plane_channels
    dec = f"decoder {r.decoder_layers}x{r.decoder_hidden}, {r.decoder_fourier} Fourier freqs"
    return [("triplane", param_count(r, "triplane"), f"3 x {r.plane_resolution}^2 x {r.plane_channels}, {dec}"),
            ("voxel", param_count(r, "voxel"), f"{r.voxel_resolution}^3 x {c}, {dec}"),
            ("mlp", param_count(r, "mlp"), f"{r.mlp_layers} layers x {r.mlp_width}, {r.mlp_fourier} Fourier freqs")]


# ------------------------------------------------------------------------------------------------
# Data

@dataclass
class MultiViewData:
    images: torch.Tensor                # [V, R, R, 3] float32 in [0, 1] (training views)
    labels: torch.Tensor                # [V, 25]
    heldout_images: torch.Tensor        # [H, R, R, 3]
    heldout_labels: torch.Tensor        # [H, 25]
    background: List[float]
    box_size: float
    names: List[str] = field(default_factory=list)
    heldout_names: List[str] = field(default_factory=list)
    source: str = ""

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def camera_info(self) -> dict:
        """Mean camera distance from the origin, focal and fov (EG3D convention), for orbiting the scene."""
        cam2world, intrinsics = split_label(self.labels)
        radius = float(cam2world[:, :3, 3].norm(dim=-1).mean())
        focal = float(intrinsics[:, 1, 1].mean())
        fov = float(intrinsics_to_fov(intrinsics).mean())       # EG3D's convention, as model.camera.orbit_label
        return dict(radius=radius, focal=focal, fov_degrees=fov, pivot=[0.0, 0.0, 0.0])


def _read_image(data: bytes, where: str):
    import PIL.Image
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode not in ("RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
            return img.copy()
    except Exception as e:
        raise SSOError(f"{where}: unreadable image ({e})") from e


def _to_array(img, resolution: int, where: str) -> np.ndarray:
    """[R, R, 3] RGB or [R, R, 4] premultiplied RGBA float32 in [0, 1], resized to resolution."""
    import PIL.Image
    if img.size[0] != img.size[1]:
        raise SSOError(f"{where}: image is {img.size[0]}x{img.size[1]}; only square images are supported")
    a = np.asarray(img, dtype=np.float32) / 255.0
    if a.shape[-1] == 4:
        a = np.concatenate([a[..., :3] * a[..., 3:], a[..., 3:]], axis=-1)   # premultiply before resizing
    if resolution and a.shape[0] != resolution:
        method = PIL.Image.LANCZOS if resolution < a.shape[0] else PIL.Image.BICUBIC
        a = np.stack([np.asarray(PIL.Image.fromarray(a[..., i]).resize((resolution, resolution), method))
                      for i in range(a.shape[-1])], axis=-1).clip(0, 1)
    return a


def _composite(arrays: List[np.ndarray], background) -> np.ndarray:
    """Stack [R, R, 3|4] arrays into [N, R, R, 3], compositing (premultiplied) alpha over the background."""
    out = []
    bg = np.asarray(background, dtype=np.float32)
    for a in arrays:
        if a.shape[-1] == 4:
            a = a[..., :3] + bg * (1 - a[..., 3:])
        out.append(a[..., :3])
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.float32)


def _parse_background(text: Union[str, Sequence[float], None], arrays: List[np.ndarray]) -> List[float]:
    """'auto' (white for images with alpha, else the median border colour), 'black', 'white', 'r,g,b'."""
    if text is None or (isinstance(text, str) and text == "auto"):
        if any(a.shape[-1] == 4 for a in arrays):
            return [1.0, 1.0, 1.0]
        border = np.concatenate([np.concatenate([a[0, :, :3], a[-1, :, :3], a[:, 0, :3], a[:, -1, :3]])
                                 for a in arrays])
        med = np.median(border, axis=0)
        return [float(round(v * 255) / 255) for v in med]
    if isinstance(text, str):
        named = {"black": [0.0, 0.0, 0.0], "white": [1.0, 1.0, 1.0]}
        if text in named:
            return named[text]
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise SSOError(f"--background must be auto, black, white or r,g,b in [0, 1]; got {text!r}") from None
    else:
        values = [float(v) for v in text]
    if len(values) != 3 or not all(0 <= v <= 1 for v in values):
        raise SSOError(f"--background must be three values in [0, 1], got {text!r}")
    return values


def _load_eg3d(path: str, resolution: int):
    """(names, arrays, labels [N, 25], split dict or None) of an EG3D dataset."""
    from training.dataset import DatasetError, ImageFolderDataset
    try:
        ds = ImageFolderDataset(path, validate="header")
    except DatasetError as e:
        raise SSOError(str(e)) from e
    names, labels = ds.image_fnames, torch.as_tensor(ds.raw_labels)
    ds.close()
    arrays, split = [], None
    if os.path.isdir(path):
        read = lambda name: Path(path, *name.split("/")).read_bytes()
        has = lambda name: Path(path, *name.split("/")).is_file()
        archive = None
    else:
        archive = zipfile.ZipFile(path)
        read, has = archive.read, (lambda name: name in archive.NameToInfo)
    try:
        for name in names:
            where = f"{path}:{name}"
            arrays.append(_to_array(_read_image(read(name), where), resolution, where))
        if has("split.json"):
            try:
                split = json.loads(read("split.json").decode("utf-8"))
            except ValueError as e:
                raise SSOError(f"{path}: unreadable split.json ({e})") from None
    finally:
        if archive is not None:
            archive.close()
    if split is not None and not (isinstance(split, dict) and isinstance(split.get("train"), list)):
        raise SSOError(f"{path}: split.json must be {{\"train\": [names], \"heldout\": [names]}}")
    return names, arrays, labels, split


NERF_CONVENTION = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))   # OpenGL camera -> OpenCV camera


def _nerf_frames(path: Path, meta: dict, resolution: int, where: str):
    names, arrays, labels = [], [], []
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise SSOError(f"{where}: no 'frames'")
    for i, fr in enumerate(frames):
        rel = str(fr.get("file_path", ""))
        cand = [path / rel] + [path / (rel + ext) for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG")]
        file = next((c for c in cand if c.is_file()), None)
        if file is None:
            raise SSOError(f"{where}: frames[{i}]: image {rel!r} not found under {path}")
        img = _read_image(file.read_bytes(), str(file))
        w, h = img.size
        arrays.append(_to_array(img, resolution, str(file)))
        try:
            pose = torch.tensor(fr["transform_matrix"], dtype=torch.float32).reshape(4, 4)
        except Exception as e:
            raise SSOError(f"{where}: frames[{i}]: bad transform_matrix ({e})") from e
        get = lambda k, d=None: fr.get(k, meta.get(k, d))
        if get("fl_x") is not None:
            fx = float(get("fl_x")) / float(get("w", w))
            fy = float(get("fl_y", get("fl_x"))) / float(get("h", h))
        elif get("camera_angle_x") is not None:
            fx = 0.5 / math.tan(0.5 * float(get("camera_angle_x")))
            fy = 0.5 / math.tan(0.5 * float(get("camera_angle_y"))) if get("camera_angle_y") is not None else fx
        else:
            raise SSOError(f"{where}: no focal length (camera_angle_x or fl_x)")
        cx = float(get("cx", w / 2)) / float(get("w", w))
        cy = float(get("cy", h / 2)) / float(get("h", h))
        intr = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        labels.append(make_label((pose @ NERF_CONVENTION)[None], intr)[0])
        names.append(rel)
    return names, arrays, torch.stack(labels)


def load_multiview(path: PathLike, resolution: int = 0, background="auto", heldout_every: int = 8,
                   heldout_path: Optional[PathLike] = None, box_size: Optional[float] = None) -> MultiViewData:
    """Training and held-out views of an EG3D dataset or a NeRF `transforms*.json` folder.

    Held-out views: `heldout_path` (a second dataset) if given; else the dataset's `split.json`
    (EG3D) or `transforms_test.json` / `transforms_val.json` (NeRF); else every heldout_every-th
    view (0 = none). box_size defaults to 1 (EG3D) or 3 (NeRF's Blender scenes lie in [-1.5, 1.5]^3).
    """
    p = Path(os.fspath(path))
    if p.is_file() and p.suffix == ".json":
        p = p.parent
    nerf = p.is_dir() and any((p / f).is_file() for f in ("transforms.json", "transforms_train.json"))
    split_names: Optional[Tuple[List[int], List[int]]] = None
    if nerf:
        train_file = p / "transforms_train.json" if (p / "transforms_train.json").is_file() else p / "transforms.json"
        parts = [(train_file, "train")]
        for test in ("transforms_test.json", "transforms_val.json"):
            if train_file.name == "transforms_train.json" and (p / test).is_file():
                parts.append((p / test, "heldout"))
                break
        names, arrays, labels, which = [], [], [], []
        for file, kind in parts:
            try:
                meta = json.loads(file.read_text())
            except (OSError, ValueError) as e:
                raise SSOError(f"{file}: unreadable JSON ({e})") from e
            n, a, lab = _nerf_frames(p, meta, resolution, str(file))
            names += n
            arrays += a
            labels.append(lab)
            which += [kind] * len(n)
        labels = torch.cat(labels)
        if "heldout" in which:
            split_names = ([i for i, k in enumerate(which) if k == "train"],
                           [i for i, k in enumerate(which) if k == "heldout"])
        box = 3.0 if box_size is None else box_size
    elif p.exists():
        names, arrays, labels, split = _load_eg3d(str(p), resolution)
        if split is not None:
            index = {n: i for i, n in enumerate(names)}
            missing = [n for n in split["train"] + split.get("heldout", []) if n not in index]
            if missing:
                raise SSOError(f"{p}: split.json names {len(missing)} unknown image(s), e.g. {missing[0]!r}")
            split_names = ([index[n] for n in split["train"]], [index[n] for n in split.get("heldout", [])])
        box = 1.0 if box_size is None else box_size
    else:
        raise SSOError(f"{p}: no such dataset (an EG3D zip/folder or a folder with transforms.json)")

    sizes = {a.shape[0] for a in arrays}
    if len(sizes) != 1:
        raise SSOError(f"{p}: images of different sizes {sorted(sizes)}; pass --resolution")
    if heldout_path is not None:
        train_idx, held_idx = list(range(len(names))), []
    elif split_names is not None:
        train_idx, held_idx = split_names
    elif heldout_every and heldout_every > 0 and len(names) > 1:
        held_idx = [i for i in range(len(names)) if i % heldout_every == 0]
        train_idx = [i for i in range(len(names)) if i % heldout_every != 0]
    else:
        train_idx, held_idx = list(range(len(names))), []
    if not train_idx:
        raise SSOError(f"{p}: no training views")
    bg = _parse_background(background, [arrays[i] for i in train_idx])
    images = _composite(arrays, bg)
    h_images, h_labels, h_names = images[held_idx], labels[held_idx], [names[i] for i in held_idx]
    if heldout_path is not None:
        extra = load_multiview(heldout_path, resolution or images.shape[1], bg, 0, None, box)
        if extra.resolution != images.shape[1]:
            raise SSOError(f"{heldout_path}: held-out images are {extra.resolution}px, training images "
                           f"{images.shape[1]}px")
        h_images, h_labels, h_names = extra.images.numpy(), extra.labels, extra.names
    return MultiViewData(images=torch.from_numpy(np.ascontiguousarray(images[train_idx])),
                         labels=labels[train_idx].float(), heldout_images=torch.from_numpy(np.ascontiguousarray(h_images)),
                         heldout_labels=h_labels.float(), background=bg, box_size=float(box),
                         names=[names[i] for i in train_idx], heldout_names=h_names, source=os.fspath(path))


def pixel_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               resolution: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rays of chosen pixels, identical to those of `model.camera.generate_rays`.

    cam2world [M, 4, 4], intrinsics [M, 3, 3] (one camera per ray), rows / cols [M] ->
    origins [M, 3], unit directions [M, 3].
    """
    x = (cols.float() + 0.5) / resolution
    y = (rows.float() + 0.5) / resolution
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy, sk = intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 0, 1]
    x_cam = (x - cx + cy * sk / fy - sk * y / fy) / fx
    y_cam = (y - cy) / fy
    cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)
    world = torch.einsum("mij,mj->mi", cam2world[:, :3, :3], cam)
    return cam2world[:, :3, 3], F.normalize(world, dim=-1)


# ------------------------------------------------------------------------------------------------
# Rendering

def render_labels(field_fn, labels: torch.Tensor, resolution: int, rendering: RenderingConfig,
                  background: Sequence[float], chunk: int = 8192, deterministic: bool = True,
                  ) -> Dict[str, torch.Tensor]:
    """Render cameras labels [B, 25] -> image [B, 3, R, R] in [0, 1], depth, alpha [B, 1, R, R]."""
    cam2world, intrinsics = split_label(labels.float())
    origins, dirs = generate_rays(cam2world, intrinsics, resolution)
    bg = torch.as_tensor(background, dtype=torch.float32, device=labels.device)
    b, m = origins.shape[:2]
    rgb, depth, alpha = [], [], []
    o, d = origins.reshape(1, b * m, 3), dirs.reshape(1, b * m, 3)
    for s in range(0, b * m, chunk):
        res = render_rays(field_fn, o[:, s:s + chunk], d[:, s:s + chunk], rendering, deterministic=deterministic)
        rgb.append((res.features[..., :3] + 1) / 2 + (1 - res.opacity) * bg)
        depth.append(res.depth)
        alpha.append(res.opacity)
    to_img = lambda t: torch.cat(t, dim=1).reshape(b, resolution, resolution, -1).permute(0, 3, 1, 2)
    return {"image": to_img(rgb), "depth": to_img(depth), "alpha": to_img(alpha)}


def psnr(mse: Union[float, torch.Tensor]) -> float:
    mse = float(mse)
    return float("inf") if mse <= 0 else -10 * math.log10(mse)


@torch.no_grad()
def evaluate(fld: SSOField, images: torch.Tensor, labels: torch.Tensor, rendering: RenderingConfig,
             background: Sequence[float], chunk: int = 8192, max_views: Optional[int] = None,
             ) -> Tuple[float, torch.Tensor]:
    """Mean PSNR over views (images [V, R, R, 3] in [0, 1]) and the predictions [V, 3, R, R]."""
    n = images.shape[0] if max_views is None else min(images.shape[0], max_views)
    if n == 0:
        return float("nan"), images.new_zeros(0, 3, 1, 1)
    was = fld.training
    fld.eval()
    preds, scores = [], []
    try:
        for i in range(n):
            pred = render_labels(fld, labels[i:i + 1], images.shape[1], rendering, background, chunk)["image"]
            preds.append(pred.clamp(0, 1))
            scores.append(psnr(F.mse_loss(pred.clamp(0, 1)[0].permute(1, 2, 0), images[i])))
    finally:
        fld.train(was)
    return float(np.mean(scores)), torch.cat(preds)


# ------------------------------------------------------------------------------------------------
# Checkpoints

def _atomic_save(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_checkpoint(path: PathLike, fld: SSOField, cfg: SSOConfig, step: int, *, optimizer=None,
                    sampler: Optional[torch.Generator] = None, info: Optional[dict] = None) -> None:
    """Field (+ Adam state and RNG states when given) to one safetensors file, atomically."""
    tensors = {f"field.{k}": v for k, v in fld.state_dict().items()}
    if optimizer is not None:
        names = {id(p): n for n, p in fld.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state.get(p, {}).items():
                    value = value if torch.is_tensor(value) else torch.tensor(float(value))
                    tensors[f"optim.{names[id(p)]}.{key}"] = value
        tensors["rng.torch"] = torch.get_rng_state()
        if sampler is not None:
            tensors["rng.sampler"] = sampler.get_state()
    meta = {"format": FORMAT, "config": cfg.to_json(), "step": str(int(step)),
            "info": json.dumps(info or {}, sort_keys=True)}
    _atomic_save(Path(os.fspath(path)), tensors, meta)


def read_checkpoint(path: PathLike) -> Tuple[SSOConfig, Dict[str, torch.Tensor], dict]:
    """(config, tensors, metadata with 'step' int and 'info' dict) of an SSO checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SSOError(f"{path}: no such checkpoint")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(path)
    except Exception as e:
        raise SSOError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise SSOError(f"{path}: not a single-scene checkpoint (format={meta.get('format')!r}, expected {FORMAT!r})")
    try:
        cfg = SSOConfig.from_json(meta["config"])
        meta["step"] = int(meta.get("step", 0))
        meta["info"] = json.loads(meta.get("info", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise SSOError(f"{path}: bad header ({e})") from None
    return cfg, tensors, meta


def _load_field(cfg: SSOConfig, tensors: Dict[str, torch.Tensor], where: str) -> SSOField:
    fld = build_field(cfg.field)
    state = {k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")}
    try:
        fld.load_state_dict(state)
    except RuntimeError as e:
        raise SSOError(f"{where}: field tensors do not match its config ({e})") from None
    return fld


# ------------------------------------------------------------------------------------------------
# A fitted scene, for the viewer and the exports

class SceneField:
    """A fitted scene: render any camera, query density.

    - `render(camera_label [B, 25], resolution=128)` -> dict image [B, 3, R, R] in [-1, 1]
      (composited over the scene's background), depth [B, 1, R, R] (distance along the unit ray;
      meaningless where alpha ~ 0), alpha [B, 1, R, R] (accumulated opacity).
    - `density(points [N, 3] or [..., 3])` -> raw sigma [..., 1] (world units; density is
      softplus(sigma - 1) as in EG3D; zero-ish, OUTSIDE_SIGMA, outside the box).
    - `sample_density(points [B, N, 3])` -> {'sigma' [B, N, 1], 'rgb' [B, N, 3]}, like
      `TriPlaneGenerator.sample_density` without planes.
    - `density_grid(resolution)` -> raw sigma [R, R, R] indexed [x, y, z] at the cell centres of
      the box (`grid_coordinates(resolution)`), for marching cubes at e.g. `surface_level`.
    - `orbit_label(yaw, pitch)`: cameras like the training ones (same distance and focal),
      looking at the origin (model.camera conventions: yaw = pitch = pi/2 is frontal, +z).
    """

    # Raw sigma to mesh at (density softplus(9) ~ 9 per unit length): the level whose occupancy best
    # matches the test scene's true object (IoU 0.88 tri-plane, 0.86 voxel, fitted at 64px).
    surface_level = 10.0

    def __init__(self, fld: SSOField, cfg: SSOConfig, info: Optional[dict] = None, path: str = ""):
        self.field = fld.eval().requires_grad_(False)
        self.cfg = cfg
        self.info = dict(info or {})
        self.path = path
        self.rendering: RenderingConfig = cfg.rendering
        self.background = list(cfg.background)
        self.box_size = float(cfg.field.box_size)
        camera = self.info.get("camera") or {}
        self.camera_radius = float(camera.get("radius", 2.0 * self.box_size))
        self.focal = float(camera.get("focal", 1.025390625))

    @property
    def device(self) -> torch.device:
        return next(self.field.parameters()).device

    def to(self, device) -> "SceneField":
        self.field.to(device)
        return self

    @property
    def repr(self) -> str:
        return self.cfg.field.repr

    def param_count(self) -> int:
        return self.field.param_count()

    @torch.no_grad()
    def render(self, camera_label: torch.Tensor, resolution: int = 128, chunk: int = 16384,
               depth_resolution: Optional[int] = None, depth_resolution_importance: Optional[int] = None
               ) -> Dict[str, torch.Tensor]:
        rendering = self.rendering
        if depth_resolution or depth_resolution_importance is not None:
            rendering = dataclasses.replace(
                rendering, depth_resolution=depth_resolution or rendering.depth_resolution,
                depth_resolution_importance=(rendering.depth_resolution_importance
                                             if depth_resolution_importance is None else depth_resolution_importance))
        label = torch.as_tensor(camera_label, dtype=torch.float32, device=self.device)
        if label.ndim == 1:
            label = label[None]
        out = render_labels(self.field, label, int(resolution), rendering, self.background, chunk)
        out["image"] = out["image"] * 2 - 1
        return out

    @torch.no_grad()
    def sample_density(self, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.field(points.to(self.device, torch.float32))

    @torch.no_grad()
    def density(self, points: torch.Tensor, chunk: int = 262144) -> torch.Tensor:
        pts = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        flat = pts.reshape(-1, 3)
        out = [self.field(flat[s:s + chunk][None])["sigma"][0] for s in range(0, flat.shape[0], chunk)]
        sigma = torch.cat(out) if out else flat.new_zeros(0, 1)
        return sigma.reshape(pts.shape[:-1] + (1,))

    def grid_coordinates(self, resolution: int) -> torch.Tensor:
        """Cell-centre coordinates [R] along each axis of the box (world units)."""
        half = self.box_size / 2
        return (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * half - half

    @torch.no_grad()
    def density_grid(self, resolution: int = 128) -> torch.Tensor:
        c = self.grid_coordinates(resolution)
        pts = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1)
        return self.density(pts)[..., 0].cpu()

    def orbit_label(self, yaw, pitch, radius: Optional[float] = None) -> torch.Tensor:
        cam2world = look_at_pose(yaw, pitch, self.camera_radius if radius is None else radius, (0.0, 0.0, 0.0),
                                 device=self.device)
        intr = torch.tensor([[self.focal, 0, 0.5], [0, self.focal, 0.5], [0, 0, 1]], device=self.device)
        return make_label(cam2world, intr)


def load_scene(path: PathLike, device="cpu") -> SceneField:
    """A fitted scene from `scene.safetensors` or `checkpoint.safetensors` (a run folder works too)."""
    p = Path(os.fspath(path))
    if p.is_dir():
        p = p / SCENE_NAME if (p / SCENE_NAME).is_file() else p / CHECKPOINT_NAME
    cfg, tensors, meta = read_checkpoint(p)
    fld = _load_field(cfg, tensors, str(p))
    return SceneField(fld, cfg, meta["info"], str(p)).to(device)


# ------------------------------------------------------------------------------------------------
# Fitting

class _StopFlag:
    """SIGINT sets the flag (the loop stops after the current step); a second Ctrl-C interrupts."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                self.stop = True
                signal.signal(signal.SIGINT, self._old or signal.default_int_handler)
            self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _lr_scale(step: int, steps: int, final_ratio: float) -> float:
    return final_ratio ** (min(step, steps) / max(steps, 1))


def _save_grid(path: Path, preds: torch.Tensor, targets: torch.Tensor, max_views: int = 8) -> None:
    """PNG: predictions (top row) over ground truth (bottom row)."""
    import PIL.Image
    n = min(preds.shape[0], max_views)
    if n == 0:
        return
    top = torch.cat(list(preds[:n].permute(0, 2, 3, 1)), dim=1)
    bottom = torch.cat(list(targets[:n]), dim=1)
    img = (torch.cat([top, bottom], dim=0).clamp(0, 1) * 255 + 0.5).byte().numpy()
    tmp = path.with_name(f".{path.name}.tmp")
    PIL.Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, path)


def fit(cfg: SSOConfig, data: MultiViewData, outdir: Optional[PathLike] = None, resume: Optional[PathLike] = None,
        progress: bool = True, device="cpu", log=print, stop_at: Optional[int] = None) -> dict:
    """Fit cfg.field to data. Returns a summary dict (psnr_train, psnr_heldout, seconds, params, ...).

    outdir None: nothing is written (tests). resume: a checkpoint to continue from (its config
    wins except for train.steps / eval / checkpoint intervals, which come from cfg). stop_at: stop
    at that step as Ctrl-C would (checkpoint saved, summary with interrupted=True).
    """
    device = torch.device(device)
    out = Path(os.fspath(outdir)) if outdir is not None else None
    start_step, elapsed, cpu_seconds, history = 0, 0.0, 0.0, []
    if resume is not None:
        rcfg, tensors, meta = read_checkpoint(resume)
        rcfg.train = dataclasses.replace(rcfg.train, steps=cfg.train.steps, eval_every=cfg.train.eval_every,
                                         checkpoint_every=cfg.train.checkpoint_every, eval_views=cfg.train.eval_views)
        cfg = rcfg
        start_step = meta["step"]
        elapsed = float(meta["info"].get("train_seconds", 0.0))
        cpu_seconds = float(meta["info"].get("train_cpu_seconds", 0.0))
        history = list(meta["info"].get("heldout_history", []))
    cfg.field = resolve_budget(cfg.field)
    cfg.field.box_size = float(cfg.field.box_size)
    cfg.rendering.box_warp = cfg.field.box_size
    tc = cfg.train
    torch.manual_seed(tc.seed)
    fld = build_field(cfg.field).to(device)
    groups = [{"params": fld.feature_parameters(), "lr": tc.lr_features, "base_lr": tc.lr_features},
              {"params": fld.network_parameters(), "lr": tc.lr, "base_lr": tc.lr}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15 if device.type == "cuda" else 1e-10)
    sampler = torch.Generator().manual_seed(tc.seed + 1)
    if resume is not None:
        fld.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("field.")})
        params = dict(fld.named_parameters())
        for name, p in params.items():
            st = {key.rsplit(".", 1)[1]: v.to(device) for key, v in tensors.items()
                  if key.startswith(f"optim.{name}.") and key.count(".") == name.count(".") + 2}
            if st:
                st["step"] = st["step"].cpu() if "step" in st else torch.tensor(float(start_step))
                opt.state[p] = st
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
        if "rng.sampler" in tensors:
            sampler.set_state(tensors["rng.sampler"])

    images = data.images.to(device)
    n_views, res = images.shape[0], images.shape[1]
    cam2world, intrinsics = split_label(data.labels.to(device))
    bg = torch.tensor(data.background, dtype=torch.float32, device=device)
    held_images, held_labels = data.heldout_images.to(device), data.heldout_labels.to(device)
    flat_rgb = images.reshape(-1, 3)
    info = dict(camera=data.camera_info(), data=data.source, resolution=res, train_views=n_views,
                heldout_views=int(held_images.shape[0]), params=fld.param_count(), repr=cfg.field.repr)

    def summary_info(step, heldout_psnr=None):
        return dict(info, step=step, train_seconds=elapsed, train_cpu_seconds=cpu_seconds, heldout_history=history,
                    psnr_heldout=heldout_psnr)

    def checkpoint(step):
        if out is not None:
            save_checkpoint(out / CHECKPOINT_NAME, fld, cfg, step, optimizer=opt, sampler=sampler,
                            info=summary_info(step, history[-1]["psnr"] if history else None))

    def run_eval(step, max_views):
        t0 = time.perf_counter()
        score, preds = evaluate(fld, held_images, held_labels, cfg.rendering, data.background, tc.eval_chunk,
                                max_views)
        history.append(dict(step=step, psnr=score, views=int(preds.shape[0]), seconds=time.perf_counter() - t0))
        if out is not None:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(dict(kind="heldout", step=step, psnr=score, views=int(preds.shape[0]),
                                        train_seconds=round(elapsed, 3))) + "\n")
            _save_grid(out / "heldout.png", preds, held_images[:preds.shape[0]])
        return score

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1, sort_keys=True))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=tc.steps, initial=min(start_step, tc.steps), desc=f"sso {cfg.field.repr}", unit="step",
                   dynamic_ncols=True)
    step, interrupted = start_step, False
    run_mse, run_n, last_heldout = 0.0, 0, (history[-1]["psnr"] if history else None)
    ema_mse = None                                  # smoothed loss for the progress bar
    fld.train()
    try:
        with _StopFlag() as flag:
            while step < tc.steps:
                if flag.stop or (stop_at is not None and step >= stop_at):
                    interrupted = True
                    break
                t0, c0 = time.perf_counter(), time.process_time()
                scale = _lr_scale(step, tc.steps, tc.lr_final_ratio)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * scale
                idx = torch.randint(0, n_views * res * res, (tc.batch_rays,), generator=sampler).to(device)
                view, pix = idx // (res * res), idx % (res * res)
                origins, dirs = pixel_rays(cam2world[view], intrinsics[view], pix // res, pix % res, res)
                result = render_rays(fld, origins[None], dirs[None], cfg.rendering)
                pred = (result.features[0, :, :3] + 1) / 2 + (1 - result.opacity[0]) * bg
                loss = F.mse_loss(pred, flat_rgb[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                elapsed += time.perf_counter() - t0
                cpu_seconds += time.process_time() - c0
                mse = float(loss.detach())
                run_mse, run_n = run_mse + mse, run_n + 1
                ema_mse = mse if ema_mse is None else 0.95 * ema_mse + 0.05 * mse
                if bar is not None:
                    post = dict(loss=f"{mse:.4f}", psnr=f"{psnr(ema_mse):.2f}")
                    if last_heldout is not None:
                        post["heldout"] = f"{last_heldout:.2f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if tc.eval_every > 0 and step % tc.eval_every == 0 and step < tc.steps and held_images.shape[0]:
                    last_heldout = run_eval(step, tc.eval_views)
                    if out is not None:
                        with open(out / "metrics.jsonl", "a") as f:
                            f.write(json.dumps(dict(kind="train", step=step, psnr=psnr(run_mse / run_n),
                                                    loss=run_mse / run_n)) + "\n")
                    run_mse, run_n = 0.0, 0
                if tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0 and step < tc.steps:
                    checkpoint(step)
    finally:
        if bar is not None:
            bar.close()
    if interrupted:
        checkpoint(step)
        if out is not None:
            log(f"stopped at step {step}; saved {out / CHECKPOINT_NAME} (continue with --resume)")
        return dict(interrupted=True, step=step, train_seconds=elapsed)

    t_eval = time.perf_counter()
    heldout = run_eval(step, None) if held_images.shape[0] else float("nan")
    train_psnr, _ = evaluate(fld, images, data.labels.to(device), cfg.rendering, data.background, tc.eval_chunk,
                             tc.eval_views)
    eval_seconds = time.perf_counter() - t_eval
    summary = dict(repr=cfg.field.repr, params=fld.param_count(), step=step, train_seconds=elapsed,
                   train_cpu_seconds=cpu_seconds,
                   eval_seconds=eval_seconds, psnr_heldout=heldout, psnr_train=train_psnr,
                   train_views=n_views, heldout_views=int(held_images.shape[0]), resolution=res,
                   interrupted=False)
    if out is not None:
        checkpoint(step)
        save_checkpoint(out / SCENE_NAME, fld, cfg, step, info=summary_info(step, heldout))
        (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    summary["field"] = fld
    summary["config"] = cfg
    return summary


# ------------------------------------------------------------------------------------------------
# Command line

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (those are described in the help text)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.sso",
        description="Fit one scene from posed views with a tri-plane, a dense voxel grid or an implicit MLP "
                    "at equal parameter budgets (EG3D's representation experiment).",
        formatter_class=_HelpFormatter)
    p.add_argument("--data", required=True, help="EG3D dataset (zip/folder with dataset.json) or NeRF folder "
                                                 "with transforms.json")
    p.add_argument("--repr", choices=REPRS, default="triplane", help="representation")
    p.add_argument("--outdir", required=True, help="run folder (checkpoint, scene, metrics, held-out renders)")
    p.add_argument("--cpu-scale", type=float, nargs="?", const=8.0, default=1.0, metavar="K",
                   help="scale the paper-sized defaults down by K for a CPU (8 when given without a value): "
                        "N / K, C / K, rays / K, steps / K, decoder width / sqrt(K / 2), samples / sqrt(K)")
    p.add_argument("--steps", type=int, help="optimisation steps (default 20000 / K)")
    p.add_argument("--batch-rays", type=int, help="rays per step (default 4096 / K)")
    p.add_argument("--lr", type=float, help=f"learning rate of the networks (default {TrainConfig.lr})")
    p.add_argument("--lr-features", type=float, help=f"learning rate of the planes / volume "
                                                     f"(default {TrainConfig.lr_features})")
    p.add_argument("--eval-every", type=int, help="held-out PSNR every N steps (0 = only at the end)")
    p.add_argument("--eval-views", type=int, help="held-out views in periodic evaluations (all at the end)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0 = end and Ctrl-C only)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and ray sampling seed")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT (default: OUTDIR/checkpoint.safetensors)")
    g = p.add_argument_group("representation sizes (0 = solved for the tri-plane's parameter budget)")
    g.add_argument("--plane-resolution", type=int, help="N (default 512 / K)")
    g.add_argument("--plane-channels", type=int, help="C (default 48 / K, at least 4)")
    g.add_argument("--voxel-resolution", type=int, default=0, help="V")
    g.add_argument("--voxel-channels", type=int, default=0, help="0 = C")
    g.add_argument("--mlp-width", type=int, default=0, help="implicit MLP width")
    g.add_argument("--mlp-layers", type=int, help=f"implicit MLP depth (default {FieldConfig.mlp_layers})")
    g.add_argument("--mlp-fourier-scale", type=float, help="std of the implicit MLP's Fourier frequencies, in "
                                                           "cycles per half box (default 8 / K)")
    g.add_argument("--decoder-hidden", type=int, help="decoder width (default 128 / sqrt(K / 2))")
    g.add_argument("--decoder-layers", type=int, help=f"decoder depth (default {FieldConfig.decoder_layers})")
    d = p.add_argument_group("data and rendering")
    d.add_argument("--resolution", type=int, default=0, help="resize training images to this size (0 = as stored)")
    d.add_argument("--background", default="auto", help="auto | black | white | r,g,b in [0, 1]")
    d.add_argument("--box-size", type=float, help="side of the scene cube centred at the origin "
                                                  "(default 1 for EG3D datasets, 3 for NeRF folders)")
    d.add_argument("--heldout", metavar="PATH", help="a separate dataset of held-out views")
    d.add_argument("--heldout-every", type=int, default=8,
                   help="without split.json / transforms_test.json: hold out every N-th view (0 = none)")
    d.add_argument("--samples", type=int, help="stratified samples per ray (default 48 / sqrt(K))")
    d.add_argument("--importance-samples", type=int, help="importance samples per ray (default = --samples)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0 = torch's default; 1 is often fastest on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args, data: Optional[MultiViewData] = None) -> SSOConfig:
    cfg = scaled_defaults(args.cpu_scale)
    f, t = cfg.field, cfg.train
    f.repr = args.repr
    for name, value in (("plane_resolution", args.plane_resolution), ("plane_channels", args.plane_channels)):
        if value is not None:
            setattr(f, name, value)
    f.voxel_resolution, f.voxel_channels, f.mlp_width = args.voxel_resolution, args.voxel_channels, args.mlp_width
    for name in ("mlp_layers", "mlp_fourier_scale", "decoder_hidden", "decoder_layers"):
        if getattr(args, name) is not None:
            setattr(f, name, getattr(args, name))
    for name in ("steps", "batch_rays", "lr", "lr_features", "eval_every", "eval_views", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None:
            setattr(t, name, value)
    t.seed = args.seed
    if data is not None:
        f.box_size = data.box_size
        cfg.background = list(data.background)
        cfg.resolution = data.resolution
    coarse = args.samples or cfg.rendering.depth_resolution
    fine = args.importance_samples if args.importance_samples is not None else (args.samples or
                                                                                 cfg.rendering.depth_resolution_importance)
    cfg.rendering = default_rendering(f.box_size, coarse, fine)
    cfg.data, cfg.heldout_data = os.fspath(args.data), os.fspath(args.heldout or "")
    for name, value in (("steps", t.steps), ("batch_rays", t.batch_rays), ("plane_resolution", f.plane_resolution),
                        ("plane_channels", f.plane_channels), ("samples", coarse)):
        if value < 1:
            raise SSOError(f"{name} must be >= 1, got {value}")
    return cfg


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv=None) -> int:
    """`python -m training.sso ...` and `train.py sso ...`. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        out = Path(args.outdir)
        resume = None
        if args.resume is not None:
            resume = out / CHECKPOINT_NAME if args.resume == "auto" else Path(args.resume)
            if not resume.is_file():
                raise SSOError(f"{resume}: no checkpoint to resume from")
        data = load_multiview(args.data, args.resolution, args.background, args.heldout_every, args.heldout,
                              args.box_size)
        cfg = config_from_args(args, data)
        if resume is not None:
            rcfg, _, meta = read_checkpoint(resume)
            if rcfg.field.repr != cfg.field.repr:
                raise SSOError(f"{resume}: is a {rcfg.field.repr} checkpoint, not {cfg.field.repr}")
        print(f"data: {data.source}: {data.images.shape[0]} training + {data.heldout_images.shape[0]} held-out views, "
              f"{data.resolution}px, background {data.background}, box {data.box_size}")
        print("equal parameter budget:")
        for name, count, desc in budget_table(cfg.field):
            mark = "*" if name == cfg.field.repr else " "
            print(f" {mark} {name:8s} {count:>12,d}  {desc}")
        summary = fit(cfg, data, out, resume, progress=not args.no_progress, device=_device(args.device))
    except SSOError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if summary.get("interrupted"):
        return 130
    print(f"{summary['repr']}: {summary['params']:,d} parameters, {summary['step']} steps in "
          f"{summary['train_seconds']:.1f} s; PSNR train {summary['psnr_train']:.2f} dB, "
          f"held-out {summary['psnr_heldout']:.2f} dB ({summary['heldout_views']} views)")
    print(f"wrote {out / SCENE_NAME}, {out / CHECKPOINT_NAME}, {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
