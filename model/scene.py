"""Fitted single scenes (`training.sso`): the field representations, their file format and
`load_scene`, everything needed to load and render a fitted scene without `training/`.

- representations, all mapping a point in the box [-box/2, box/2]^3 to a raw density and an RGB
  colour (density zero outside the box): `TriPlaneField` (three N x N x C planes + a small
  decoder MLP on the summed features and Gaussian Fourier features), `VoxelField` (a dense V^3 x C
  volume + the same decoder), `ImplicitField` (a fully implicit MLP); their config `FieldConfig`,
  the equal-parameter-budget solver (`resolve_budget`, `budget_table`) and `build_field`;
- the run config `SSOConfig` (field, training, rendering, background) stored in each file's
  header, and the safetensors format (`save_checkpoint`, `read_checkpoint`: format "eg3d-sso/1");
- `load_scene(path) -> SceneField` (`scene.safetensors`, `checkpoint.safetensors` or the run
  folder) with `.render(labels [B, 25], resolution)`, `.density`, `.sample_density`,
  `.density_grid`, `.orbit_label`, `.surface_level`, `.info['camera']`;
- `SceneGenerator`: a `SceneField` behind the generator interface the viewer and the exports use
  (`mapping` / `planes` / `render` / `sample_density`, `cfg.rendering` with the scene's average
  camera), so `app/` renders, exports and meshes a scene through its usual code paths;
  `is_scene(path)` tells a scene file (or run folder) from a generator by its header.

The fitting loop, the multi-view data and the test scenes stay in `training/`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .camera import generate_rays, intrinsics_to_fov, look_at_pose, make_label, split_label
from .checkpoint import CheckpointError, copy_state_dict
from .device import module_device
from .config import DecoderConfig, GeneratorConfig, RenderingConfig, from_dict, to_dict
from .config_check import check_config
from .output import atomic_write
from .rendering import render_rays
from .triplane import colour_activation, sample_planes

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
    return {"sigma": out[..., :1], "rgb": colour_activation(out[..., 1:4])}


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



# ------------------------------------------------------------------------------------------------
# Checkpoints

def _atomic_save(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    from safetensors.torch import save_file
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


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
    state = {k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")}
    try:                                    # the header is the user's data: check it before allocating
        check_config(cfg.field, "field")
        need, stored = param_count(cfg.field), sum(v.numel() for v in state.values())
    except (ValueError, TypeError, OverflowError) as e:
        raise SSOError(f"{where}: bad field config ({str(e)[:200]})") from None
    if need > stored:
        raise SSOError(f"{where}: the field config asks for {need:,} parameters but the file holds only "
                       f"{stored:,} values")
    fld = build_field(cfg.field)
    try:
        copy_state_dict(fld, state, f"{where}: field")
    except CheckpointError as e:
        raise SSOError(f"{e} (the field's config does not match its tensors)") from None
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
        # the training cameras' field of view in EG3D's convention (model.camera.fov_to_intrinsics)
        fov = camera.get("fov_degrees")
        if fov is None:
            fov = float(intrinsics_to_fov(torch.tensor([[self.focal, 0.0, 0.5], [0.0, self.focal, 0.5],
                                                        [0.0, 0.0, 1.0]])))
        self.fov = float(fov)

    @property
    def device(self) -> torch.device:
        return module_device(self.field)

    def to(self, device) -> "SceneField":
        self.field.to(device)
        return self

    @property
    def repr(self) -> str:
        return self.cfg.field.repr

    def param_count(self) -> int:
        return self.field.param_count()

    def as_generator(self, resolution: Optional[int] = None) -> "SceneGenerator":
        """This scene behind the generator interface of the viewer and the exports."""
        return SceneGenerator(self, resolution)

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
    p = scene_file(path)
    cfg, tensors, meta = read_checkpoint(p)
    fld = _load_field(cfg, tensors, str(p))
    return SceneField(fld, cfg, meta["info"], str(p)).to(device)




# ------------------------------------------------------------------------------------------------
# Telling scenes from generators, and a scene behind the generator interface (viewer, exports)

def scene_file(path: PathLike) -> Path:
    """The file a scene path names: itself, or a run folder's scene.safetensors / checkpoint."""
    p = Path(os.fspath(path))
    if p.is_dir():
        p = p / SCENE_NAME if (p / SCENE_NAME).is_file() else p / CHECKPOINT_NAME
    return p


def is_scene(path: PathLike) -> bool:
    """True if path is a fitted-scene safetensors file (header format "eg3d-sso/1") or a run folder
    holding one. Reads only the header; never raises."""
    try:
        p = scene_file(path)
        if not p.is_file():
            return False
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return False
            n = int.from_bytes(head, "little")
            if not 2 <= n <= 100_000_000:
                return False
            header = json.loads(f.read(n).decode("utf-8"))
        return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == FORMAT
    except (OSError, ValueError, UnicodeDecodeError):
        return False


class SceneGenerator(nn.Module):
    """A fitted scene behind `model.interface.Renderable`, the interface the viewer and the
    exports call.

    A scene has no latent: `mapping` returns zeros [B, 1, 1] (z_dim = w_dim = num_ws = 1), `planes`
    an empty placeholder, and `render(planes, ws, c, ...)` renders the cameras c with the field.
    `cfg` is a `GeneratorConfig` whose `rendering` holds the scene's rendering settings and its
    average camera (distance of the training cameras, pivot at the origin, their fov), so camera
    defaults, depth-sample multipliers and the mesh box (box_warp = the scene box) work unchanged.
    The image is the composited colour in [-1, 1]; `image` = `image_raw` = `feature_image` (3
    channels); `sample_density` gives the raw sigma and RGB in [0, 1] as `G.sample_density` does.
    """

    has_latent = False

    def __init__(self, scene: SceneField, resolution: Optional[int] = None, chunk: int = 16384):
        super().__init__()
        self.scene = scene
        self.field = scene.field                   # registered: parameters() / device work
        self.chunk = int(chunk)
        res = int(resolution or scene.info.get("resolution") or 128)
        rendering = dataclasses.replace(scene.rendering, avg_camera_radius=float(scene.camera_radius),
                                        avg_camera_pivot=[0.0, 0.0, 0.0], avg_camera_fov=float(scene.fov),
                                        box_warp=float(scene.box_size))
        self.cfg = GeneratorConfig(z_dim=1, c_dim=25, w_dim=1, img_resolution=res, neural_rendering_resolution=res,
                                   c_gen_conditioning_zero=True, rendering=rendering,
                                   decoder=DecoderConfig(output_features=3))
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = 1, 25, 1, 1
        self.img_resolution = self.neural_rendering_resolution = res
        self.surface_level = float(scene.surface_level)

    @property
    def repr(self) -> str:
        return self.scene.repr

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, **_):
        return torch.zeros(z.shape[0], 1, 1, device=z.device)

    def planes(self, ws, noise_mode="const", **_):
        return ws.new_zeros(ws.shape[0], 0)

    @torch.no_grad()
    def render(self, planes, ws, c, neural_rendering_resolution: Optional[int] = None, deterministic: bool = False,
               depth_resolution: Optional[int] = None, depth_resolution_importance: Optional[int] = None,
               superresolution: bool = True) -> Dict[str, torch.Tensor]:
        r = self.cfg.rendering
        rendering = dataclasses.replace(
            self.scene.rendering, depth_resolution=int(depth_resolution or r.depth_resolution),
            depth_resolution_importance=int(r.depth_resolution_importance if depth_resolution_importance is None
                                            else depth_resolution_importance))
        res = int(neural_rendering_resolution or self.neural_rendering_resolution)
        out = render_labels(self.field, c.to(self.scene.device, torch.float32), res, rendering, self.scene.background,
                            self.chunk, deterministic=bool(deterministic))
        image = out["image"] * 2 - 1
        result = {"image_raw": image, "image_depth": out["depth"], "image_alpha": out["alpha"],
                  "feature_image": image}
        if superresolution:
            result["image"] = image
        return result

    @torch.no_grad()
    def sample_density(self, planes, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.field(points.to(self.scene.device, torch.float32))

    def synthesis(self, ws, c, noise_mode="const", **kwargs):
        """planes(ws) then render(...): the generator's official entry point."""
        return self.render(self.planes(ws), ws, c, **kwargs)


def load_scene_generator(path: PathLike, device="cpu", resolution: Optional[int] = None) -> SceneGenerator:
    """`load_scene(path)` behind the generator interface (see `SceneGenerator`)."""
    return SceneGenerator(load_scene(path, device), resolution)
