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
- viewing and exporting: `model.scene.load_scene(path)` -> `SceneField` with `.render(labels, resolution)`,
  `.density(points)`, `.sample_density(points)` and `.density_grid(resolution)`.

`--cpu-scale K` (K = 8 when given without a value) scales the paper-sized defaults down for a CPU
(`scaled_defaults`): plane resolution N / K, channels 48 / K (at least 4), rays per step 4096 / K,
steps 20000 / K, decoder width 128 / sqrt(K / 2), samples per ray (48 + 48) / sqrt(K).
"""
from __future__ import annotations

import argparse
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
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from model.camera import intrinsics_to_fov, make_label, split_label
from model.config import RenderingConfig, to_dict
from model.output import OutputRefused, atomic_write, check_replace
from model.device import DeviceError, resolve_device
from model.rendering import render_rays
# The representations, their config and file format, and SceneField / load_scene live in
# model/scene.py (the viewer imports model/ only); re-exported here for the fitting code and users.
from model.scene import (CHECKPOINT_NAME, FIELDS, FORMAT, OUTSIDE_SIGMA, REPRS, SCENE_NAME,  # noqa: F401
                         FieldConfig, FourierFeatures, ImplicitField, PathLike, SceneField, SceneGenerator,
                         SSOConfig, SSOError, SSOField, TrainConfig, TriPlaneField, VoxelField, _atomic_save,
                         _decode, _decoder_params, _load_field, budget_table, build_field, default_rendering,
                         is_scene, load_scene, mlp, mlp_param_count, param_budget, param_count, read_checkpoint,
                         render_labels, resolve_budget, save_checkpoint)


# ------------------------------------------------------------------------------------------------
# Configuration (the defaults; the dataclasses are in model/scene.py)

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
# Evaluation

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
    atomic_write(path, lambda tmp: PIL.Image.fromarray(img).save(tmp, format="PNG"))


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
        config_text = json.dumps(to_dict(cfg), indent=1, sort_keys=True)
        atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(config_text))
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
        summary_text = json.dumps(summary, indent=1)
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(summary_text))
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
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --outdir that is not a run folder of this tool (its files "
                        "of the same names are replaced; never a folder holding --data)")
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


def _is_run_folder(path: Path) -> bool:
    """A folder this tool fitted into: it holds our scene or checkpoint file."""
    return is_scene(path) or is_scene(path / CHECKPOINT_NAME)


def main(argv=None) -> int:
    """`python -m training.sso ...` and `train.py sso ...`. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        out = Path(args.outdir)
        check_replace(out, args.overwrite, _is_run_folder, protect=[args.data], what="run folder")
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
        summary = fit(cfg, data, out, resume, progress=not args.no_progress, device=resolve_device(args.device))
    except (SSOError, DeviceError, OutputRefused) as e:
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
