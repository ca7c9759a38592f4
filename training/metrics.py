"""Quality metrics for tri-plane generators: FID, KID, SWD, multi-view consistency, pose effect.

    python -m training.metrics --network checkpoints/portrait.safetensors --data data.zip \
        --metrics fid50k_full,kid50k_full,swd,mvc,pose_effect --inception inception-2015-12-05.pt
    python -m training.metrics --reference-only --data data.zip --metrics fid5k_full,swd --inception ...

Prints one JSON line per metric (progress bars go to stderr). From Python (the training loop):

    from training import metrics
    out = metrics.compute_metrics(G, "data.zip", ["fid50k_full", "swd"], num_images=2000,
                                  device="cpu", inception_path="inception-2015-12-05.pt")
    out["fid50k_full"]["results"]["fid50k_full"]; metrics.flatten(out) -> {key: value}

Metric names
- ``fid{N}k_full`` / ``kid{N}k_full``: N*1000 generated images against every dataset image
  (at most 1M for KID), as the official ``fid50k_full`` / ``kid50k_full``; ``fid{N}k`` /
  ``kid{N}k``: N*1000 of each. Inception-v3 2048-d pool features (`training.inception`; weights
  from a local file). FID = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^1/2) with the biased
  (1/n) covariances the official code accumulates. KID = the unbiased MMD^2 with the kernel
  k(x, y) = (x.y / d + 1)^3, averaged over 100 subsets of min(1000, n_r, n_g) images each (the
  official estimator; subsets drawn from numpy RandomState(seed)).
- ``swd`` (= ``swd16k``) / ``swd{N}k``: ProGAN's sliced Wasserstein distance on Laplacian-pyramid
  patches, N*1000 images of each (levels from the image resolution down to 16 px; 128 random 7x7
  neighbourhoods per image and level; descriptors normalised per channel within each set; 4
  repeats of 128 random unit directions). Reported x1e3 per level (``swd64`` ...) and averaged
  (``swd_avg``). No pretrained network.
- ``mvc`` (multi-view consistency, default 1024 latents): render two nearby views (the label's
  camera and the camera moved by ``yaw_delta`` around the vertical axis, alternately +/-) of one
  latent with deterministic sampling, warp view A into view B through A's rendered depth, keep the
  pixels visible in both (inside B, alpha > 0.5 in both, B's rendered depth agrees with the
  distance from B's centre within 1 %), report the mean absolute photometric error (RGB in [0, 1])
  on those pixels for the raw neural render (``mvc_raw``) and the super-resolved image (``mvc``),
  and the valid-pixel fractions (``mvc_valid_raw``, ``mvc_valid``). ``mvc_lowpass`` is ``mvc`` of
  the super-resolved image cut to the raw render's band (resized down to its resolution,
  antialiased, and back up, bilinear): the error the finer detail of the super-resolution adds
  is ``mvc - mvc_lowpass``.
- ``pose_effect`` (default 1024 latents): with the camera fixed, move only the conditioning pose
  by ``yaw_delta``; with the conditioning fixed, move only the camera by the same amount. Reports
  the mean absolute pixel change of each (``pose_cond_change``, ``pose_cam_change``, also
  ``_raw``), their ratio (``pose_ratio``), and with an attribute predictor the same for its
  output (``pose_attr_cond_change`` ...). Both renders of a pair use the same noise, so the
  conditioning change is exactly 0 for a model with ``c_gen_conditioning_zero``.

Generation samples z ~ N(0, I) and c = random dataset labels (conditioning and camera), truncation
psi 1, as the official metrics; images are quantised to uint8 like the official code and, when the
generator's resolution differs from the dataset's, resized (bilinear, antialiased) to it.

``--reference-only`` gives the floor: the dataset is split at random into two disjoint halves and
the first plays the dataset, the second the generator (FID/KID/SWD). For ``mvc`` on a synthetic
dataset (``training.synthetic``, with ``ground_truth.json``) each dataset image is reprojected
through its ground-truth depth into a fresh ground-truth render of the same object from the moved
camera; ``pose_effect`` has no dataset counterpart.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from model import camera

# ------------------------------------------------------------------------------------------------
# Metric names


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str                      # 'fid' | 'kid' | 'swd' | 'mvc' | 'pose_effect'
    num_gen: int
    max_real: Optional[int]        # None = the whole dataset


DEFAULT_MVC = 1024
DEFAULT_POSE = 1024
KID_MAX_REAL = 1_000_000


def parse_metric(name: str, num_images: Optional[int] = None) -> MetricSpec:
    """Metric name -> spec; num_images overrides the generated count (and the real count where
    the metric does not use the whole dataset)."""
    m = re.fullmatch(r"(fid|kid)(\d+)k(_full)?", name)
    if m:
        kind, n, full = m.group(1), int(m.group(2)) * 1000, bool(m.group(3))
        n = num_images or n
        max_real = (KID_MAX_REAL if kind == "kid" else None) if full else n
        return MetricSpec(name, kind, n, max_real)
    m = re.fullmatch(r"swd(?:(\d+)k)?", name)
    if m:
        n = num_images or (int(m.group(1)) * 1000 if m.group(1) else 16384)
        return MetricSpec(name, "swd", n, n)
    if name == "mvc":
        return MetricSpec(name, "mvc", num_images or DEFAULT_MVC, None)
    if name == "pose_effect":
        return MetricSpec(name, "pose_effect", num_images or DEFAULT_POSE, None)
    raise ValueError(f"unknown metric {name!r}; use fid<N>k[_full], kid<N>k[_full], swd[<N>k], mvc, pose_effect")


def is_valid_metric(name: str) -> bool:
    try:
        parse_metric(name)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------
# Small helpers


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] exactly as the official metrics quantise them."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] with C in (1, 3, 4) -> 3 channels (grey repeated, alpha dropped)."""
    if images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    return images[:, :3]


@contextlib.contextmanager
def _same_noise(seed: int, device):
    """Fork the RNGs and seed them, so two renders in such blocks draw identical noise."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def open_dataset(path, xflip: bool = False):
    from training.dataset import ImageFolderDataset
    return ImageFolderDataset(path, xflip=xflip)


def iterate_dataset(dataset, indices: Sequence[int], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 RGB batches [B, 3, H, W] of dataset items `indices`, in order."""
    for start in range(0, len(indices), batch_size):
        images = [dataset[int(i)][0] for i in indices[start:start + batch_size]]
        yield _rgb(torch.from_numpy(np.stack(images)))


class GeneratorSampler:
    """Batches of generated uint8 images: z ~ N(0, I), c = random dataset labels, psi = 1.

    The stream is a function of (seed, batch size): z from a CPU torch.Generator, label indices
    from numpy RandomState, the synthesis noise from the global RNG forked and seeded for the
    duration (so the caller's RNG state, e.g. the training loop's, is neither used nor advanced).
    """

    def __init__(self, G, labels: np.ndarray, device, seed: int = 0, batch_size: int = 8,
                 resolution: Optional[int] = None, noise_mode: str = "random"):
        self.G, self.device, self.batch_size = G, torch.device(device), int(batch_size)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
        if self.labels.ndim != 2 or len(self.labels) == 0:
            raise ValueError("the dataset has no labels to condition the generator on")
        self.resolution, self.noise_mode, self.seed = resolution, noise_mode, seed

    @torch.no_grad()
    def batches(self, num: int) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        rng = np.random.RandomState(self.seed)
        done = 0
        with _same_noise(self.seed, self.device):
            while done < num:
                b = min(self.batch_size, num - done)
                z = torch.randn([b, self.G.z_dim], generator=gen).to(self.device)
                c = self.labels[rng.randint(len(self.labels), size=b)].to(self.device)
                img = self.G(z, c, truncation_psi=1, noise_mode=self.noise_mode)["image"]
                if self.resolution is not None:
                    img = _resize_antialiased(img, self.resolution)
                yield to_uint8(img).cpu()
                done += b


# ------------------------------------------------------------------------------------------------
# FID / KID maths


class FeatureStats:
    """Streaming mean / covariance (float64, biased 1/n as the official code) and all features."""

    def __init__(self, capture_all: bool = True, capture_mean_cov: bool = True):
        self.capture_all, self.capture_mean_cov = capture_all, capture_mean_cov
        self.num_items, self.dim = 0, None
        self.raw_mean = self.raw_cov = None
        self.all_features: List[np.ndarray] = []

    def append(self, x) -> None:
        x = np.asarray(x, dtype=np.float32)
        if self.dim is None:
            self.dim = x.shape[1]
            if self.capture_mean_cov:
                self.raw_mean = np.zeros([self.dim], dtype=np.float64)
                self.raw_cov = np.zeros([self.dim, self.dim], dtype=np.float64)
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def get_all(self) -> np.ndarray:
        return np.concatenate(self.all_features, axis=0)

    def get_mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2).

    tr((S1 S2)^1/2) is computed as the sum of the square roots of the eigenvalues of the symmetric
    PSD matrix S1^1/2 S2 S1^1/2 (similar to S1 S2), which is exact for covariance matrices and,
    unlike a general sqrtm of the non-symmetric product, stable for rank-deficient ones.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_distance_from_features(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """frechet_distance(mean(features), cov(features), mu2, sigma2) without a d x d decomposition.

    With X = (features - mean) / sqrt(n) (so cov = X^T X, biased as the official code), the
    non-zero eigenvalues of cov @ sigma2 are those of the n x n PSD matrix X sigma2 X^T, so
    tr((cov sigma2)^1/2) = sum sqrt(eigvalsh(X sigma2 X^T)): O(n d^2), exact, and much faster than
    the d x d route when n < d (e.g. a few hundred generated images against 2048-d features).
    """
    f = np.asarray(features, np.float64)
    mu1 = f.mean(axis=0)
    x = (f - mu1) / math.sqrt(f.shape[0])
    s2 = np.asarray(sigma2, np.float64)
    s2 = (s2 + s2.T) / 2
    m = x @ s2 @ x.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    mu2 = np.asarray(mu2, np.float64)
    return float(np.square(mu1 - mu2).sum() + np.square(x).sum() + np.trace(s2) - 2 * tr_covmean)


def fid_from_features(gen: np.ndarray, mu_real: np.ndarray, sigma_real: np.ndarray) -> float:
    """FID of generated features against real statistics: the n x n route when n < d."""
    if gen.shape[0] < gen.shape[1]:
        return frechet_distance_from_features(gen, mu_real, sigma_real)
    stats = FeatureStats(capture_all=False)
    stats.append(gen)
    return frechet_distance(*stats.get_mean_cov(), mu_real, sigma_real)


def kernel_inception_distance(real: np.ndarray, gen: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:
    """The official KID estimator: mean over subsets of the unbiased MMD^2, cubic kernel.

    Per subset: x = gen[rng.choice(n_gen, m, replace=False)], then
    y = real[rng.choice(n_real, m, replace=False)] with rng = RandomState(seed).
    """
    real, gen = np.asarray(real, np.float64), np.asarray(gen, np.float64)
    n = real.shape[1]
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.RandomState(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


_DETECTORS: Dict[tuple, torch.nn.Module] = {}


def get_detector(inception_path: str, device, input_size: int = 299):
    from training.inception import load_inception
    st = os.stat(inception_path)
    key = (os.path.abspath(inception_path), st.st_mtime_ns, st.st_size, str(device), input_size)
    if key not in _DETECTORS:
        _DETECTORS[key] = load_inception(inception_path, device=device, input_size=input_size)
    return _DETECTORS[key]


@torch.no_grad()
def detector_features(detector, images: torch.Tensor, device) -> np.ndarray:
    return detector(images.to(device)).to(torch.float32).cpu().numpy()


# ------------------------------------------------------------------------------------------------
# SWD (ProGAN's sliced Wasserstein distance on Laplacian-pyramid patches)

SWD_NHOOD_SIZE = 7
SWD_NHOODS_PER_IMAGE = 128
SWD_DIR_REPEATS = 4
SWD_DIRS_PER_REPEAT = 128
SWD_MIN_RESOLUTION = 16
_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_GAUSS = (_GAUSS[:, None] * _GAUSS[None, :] / 256.0).to(torch.float32)


def swd_resolutions(resolution: int, min_resolution: int = SWD_MIN_RESOLUTION) -> List[int]:
    res, out = int(resolution), []
    while res >= min_resolution:
        out.append(res)
        res //= 2
    if not out:
        raise ValueError(f"SWD needs images of at least {min_resolution} px, got {resolution}")
    return out


def _blur_mirror(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")        # scipy.ndimage 'mirror' = torch 'reflect'
    return F.conv2d(x, kernel.to(x).expand(c, 1, 5, 5), groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: 5x5 binomial blur (mirror borders), keep even pixels."""
    return _blur_mirror(x, _GAUSS)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrUp: zero-insert to twice the size, blur with 4x the kernel."""
    n, c, h, w = x.shape
    up = x.new_zeros([n, c, h * 2, w * 2])
    up[:, :, ::2, ::2] = x
    return _blur_mirror(up, _GAUSS * 4.0)


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> List[torch.Tensor]:
    """float32 [N, C, H, W] (values 0..255) -> [band-pass levels..., low-pass residual]."""
    pyramid = [images.to(torch.float32)]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


class SWDDescriptors:
    """Collects the random 7x7 neighbourhoods of every pyramid level of a stream of images.

    Patch centres are drawn as ProGAN does (uniform over the positions where the patch fits), from
    one numpy RandomState([seed, level]) per level, image by image: x = rng.randint(h, W - h, K)
    then y = rng.randint(h, H - h, K) (h = 3, K = nhoods_per_image), so the first n images get
    the same patches whatever the batch split.
    """

    def __init__(self, resolution: int, seed: int = 0, nhood_size: int = SWD_NHOOD_SIZE,
                 nhoods_per_image: int = SWD_NHOODS_PER_IMAGE):
        self.resolutions = swd_resolutions(resolution)
        self.resolution, self.nhood_size, self.nhoods_per_image = resolution, nhood_size, nhoods_per_image
        self.rngs = [np.random.RandomState([seed, lod]) for lod in range(len(self.resolutions))]
        self.descriptors: List[List[torch.Tensor]] = [[] for _ in self.resolutions]
        self.num_images = 0
        self._final: Optional[List[torch.Tensor]] = None

    def feed(self, images: torch.Tensor) -> None:
        if self._final is not None:
            raise RuntimeError("SWDDescriptors: feed() after finalize()")
        images = _rgb(images).cpu()
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            raise ValueError(f"SWD: images are {tuple(images.shape[-2:])}, expected {self.resolution} px")
        self.num_images += images.shape[0]
        for lod, level in enumerate(laplacian_pyramid(images, len(self.resolutions))):
            self.descriptors[lod].append(self._patches(level, self.rngs[lod]))

    def _patches(self, level: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
        b, c, h, w = level.shape
        n, half = self.nhoods_per_image * b, self.nhood_size // 2
        xs, ys = [], []
        for _ in range(b):                       # per image, so batching does not change the draws
            xs.append(rng.randint(half, w - half, size=self.nhoods_per_image))
            ys.append(rng.randint(half, h - half, size=self.nhoods_per_image))
        x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
        off = torch.arange(-half, half + 1)
        img = (torch.arange(n) // self.nhoods_per_image)[:, None, None, None]
        chan = torch.arange(c)[None, :, None, None]
        rows = (y[:, None] + off[None, :])[:, None, :, None]
        cols = (x[:, None] + off[None, :])[:, None, None, :]
        return level[img, chan, rows, cols]                       # [n, c, k, k]

    def finalize(self) -> List[torch.Tensor]:
        """Per level: descriptors [M, c*k*k], normalised per channel over this set (computed once;
        feeding stops here)."""
        if self._final is not None:
            return self._final
        out = []
        for lod, parts in enumerate(self.descriptors):
            desc = torch.cat(parts, dim=0)                      # float32, normalised in place
            self.descriptors[lod] = []
            for c in range(desc.shape[1]):
                chan = desc[:, c]
                mean = chan.to(torch.float64).mean()
                std = (chan.to(torch.float64) - mean).square().mean().sqrt()
                chan.sub_(mean).div_(std)
            out.append(desc.reshape(desc.shape[0], -1))
        self._final = out
        return out


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, rng: np.random.RandomState,
                       dir_repeats: int = SWD_DIR_REPEATS, dirs_per_repeat: int = SWD_DIRS_PER_REPEAT,
                       chunk: int = 32) -> float:
    """Mean over repeats of the mean |sorted(a @ d) - sorted(b @ d)| over points and directions.

    Each repeat draws dirs = rng.randn(D, dirs_per_repeat), normalised per direction (ProGAN).
    Directions are processed `chunk` at a time to bound memory (exact: each is independent).
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"sliced_wasserstein: need two [M, D] sets of equal size, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    results = []
    for _ in range(dir_repeats):
        dirs = rng.randn(a.shape[1], dirs_per_repeat)
        dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
        dirs = torch.from_numpy(dirs.astype(np.float32))
        total = 0.0
        for start in range(0, dirs_per_repeat, chunk):
            d = dirs[:, start:start + chunk]
            pa = torch.sort(a @ d, dim=0).values
            pb = torch.sort(b @ d, dim=0).values
            total += float((pa - pb).abs().to(torch.float64).sum())
        results.append(total / (a.shape[0] * dirs_per_repeat))
    return float(np.mean(results))


def swd_from_descriptors(real: List[torch.Tensor], fake: List[torch.Tensor], resolutions: Sequence[int],
                         seed: int = 0, dir_repeats: int = SWD_DIR_REPEATS,
                         dirs_per_repeat: int = SWD_DIRS_PER_REPEAT) -> Dict[str, float]:
    """{'swd<res>': SWD x1e3 per level, 'swd_avg': their mean}; directions from RandomState(seed + 1)."""
    rng = np.random.RandomState(seed + 1)
    dists = [sliced_wasserstein(r, f, rng, dir_repeats, dirs_per_repeat) * 1e3 for r, f in zip(real, fake)]
    out = {f"swd{res}": d for res, d in zip(resolutions, dists)}
    out["swd_avg"] = float(np.mean(dists))
    return out


def compute_swd(real_batches: Iterable[torch.Tensor], fake_batches: Iterable[torch.Tensor],
                resolution: int, seed: int = 0, nhoods_per_image: int = SWD_NHOODS_PER_IMAGE,
                dir_repeats: int = SWD_DIR_REPEATS, dirs_per_repeat: int = SWD_DIRS_PER_REPEAT) -> Dict[str, float]:
    """SWD between two streams of uint8 images of the same count and resolution.

    Both sets draw their patch positions from identical RandomState([seed, level]) streams (common
    random numbers: paired positions), so SWD(x, x) is exactly 0; directions come from RandomState(seed + 1).
    """
    sets = []
    for batches in (real_batches, fake_batches):
        acc = SWDDescriptors(resolution, seed, nhoods_per_image=nhoods_per_image)
        for batch in batches:
            acc.feed(batch)
        sets.append(acc)
    if sets[0].num_images != sets[1].num_images:
        raise ValueError(f"SWD needs equal image counts, got {sets[0].num_images} and {sets[1].num_images}")
    return swd_from_descriptors(sets[0].finalize(), sets[1].finalize(), sets[0].resolutions, seed,
                                dir_repeats, dirs_per_repeat)


# ------------------------------------------------------------------------------------------------
# Multi-view consistency: reprojection through rendered depth


def unproject(depth: torch.Tensor, label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """depth [B, 1, R, R] (distance along the unit ray) -> world points [B, R*R, 3], origins [B, 1, 3]."""
    cam2world, intrinsics = camera.split_label(label)
    origins, dirs = camera.generate_rays(cam2world, intrinsics, depth.shape[-1])
    return origins + depth.reshape(depth.shape[0], -1, 1) * dirs, origins[:, :1]


def project(points: torch.Tensor, label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """World points [B, M, 3] -> normalised image coords uv [B, M, 2] (0..1, pixel centres at
    (i + .5) / R as in `generate_rays`) and camera-space z [B, M]."""
    cam2world, intrinsics = camera.split_label(label)
    world2cam = torch.linalg.inv(cam2world)
    p = points @ world2cam[:, :3, :3].transpose(1, 2) + world2cam[:, None, :3, 3]
    z = p[..., 2]
    xy = p[..., :2] / z.clamp(min=1e-8)[..., None]
    uv = xy @ intrinsics[:, :2, :2].transpose(1, 2) + intrinsics[:, None, :2, 2]
    return uv, z


def _sample(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [B, C, M] of image [B, C, R, R] at normalised coords uv [B, M, 2]."""
    grid = (uv * 2 - 1)[:, :, None, :]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]


def _resize(t: torch.Tensor, res: int) -> torch.Tensor:
    if t.shape[-1] == res:
        return t
    return F.interpolate(t, size=(res, res), mode="bilinear", align_corners=False)


def _resize_antialiased(t: torch.Tensor, res: int) -> torch.Tensor:
    """t [B, C, S, S] resized to res x res, bilinear, antialiased (downsizing keeps the band that
    res pixels can hold)."""
    if t.shape[-1] == res:
        return t
    return F.interpolate(t, size=(res, res), mode="bilinear", align_corners=False, antialias=True)


def reprojection_error(image_a: torch.Tensor, depth_a: torch.Tensor, alpha_a: torch.Tensor, label_a: torch.Tensor,
                       image_b: torch.Tensor, depth_b: torch.Tensor, alpha_b: torch.Tensor, label_b: torch.Tensor,
                       depth_tolerance: float = 0.01, alpha_threshold: float = 0.5,
                       return_maps: bool = False) -> Dict[str, torch.Tensor]:
    """Warp view A into view B through A's depth and compare colours where both see the surface.

    images [B, C, S, S] in [-1, 1] (clamped); depths / alphas [B, 1, R, R] (resized bilinearly to S
    when R != S); labels [B, 25]. A pixel p of A is valid when alpha_A(p) > alpha_threshold, its
    3D point X = o_A + depth_A(p) dir_A(p) projects in front of B and inside B's pixel-centre
    hull, alpha_B(uv) > alpha_threshold and |depth_B(uv) - |X - o_B|| <= depth_tolerance |X - o_B|
    (B sees the same surface: not occluded, not off the silhouette). Error at p: mean over channels
    of |I_A(p) - I_B(uv)| / 2 (i.e. RGB in [0, 1]); B's values are sampled bilinearly.

    Returns per batch item: error_sum, valid (count), foreground (alpha_A count), total (pixels);
    with return_maps also error_map and valid_map [B, 1, S, S].
    """
    bsz, _, s, _ = image_a.shape
    depth_a, alpha_a = _resize(depth_a, s), _resize(alpha_a, s)
    depth_b, alpha_b = _resize(depth_b, s), _resize(alpha_b, s)
    points, _ = unproject(depth_a, label_a)
    uv, z = project(points, label_b)
    origin_b = camera.split_label(label_b)[0][:, None, :3, 3]
    dist_b = (points - origin_b).norm(dim=-1)
    lo, hi = 0.5 / s, 1 - 0.5 / s
    inside = (z > 1e-6) & (uv >= lo).all(-1) & (uv <= hi).all(-1)
    fg_a = alpha_a.reshape(bsz, -1) > alpha_threshold
    sampled_depth = _sample(depth_b, uv)[:, 0]
    sampled_alpha = _sample(alpha_b, uv)[:, 0]
    agree = (sampled_depth - dist_b).abs() <= depth_tolerance * dist_b
    valid = fg_a & inside & (sampled_alpha > alpha_threshold) & agree
    col_a = image_a.clamp(-1, 1).reshape(bsz, image_a.shape[1], -1)
    col_b = _sample(image_b.clamp(-1, 1), uv)
    err = (col_a - col_b).abs().mean(dim=1) / 2                 # [B, M], RGB in [0, 1]
    err = torch.where(valid, err, torch.zeros_like(err))
    out = dict(error_sum=err.sum(dim=1).double(), valid=valid.sum(dim=1).double(),
               foreground=fg_a.sum(dim=1).double(), total=torch.full([bsz], float(s * s), dtype=torch.float64))
    if return_maps:
        out["error_map"] = err.reshape(bsz, 1, s, s)
        out["valid_map"] = valid.reshape(bsz, 1, s, s)
    return out


def orbit_pair(labels: torch.Tensor, yaw_delta, pivot: Sequence[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(c0, c1) [B, 25]: each label's camera rebuilt as a look-at camera at the same yaw, pitch and
    radius (looking at `pivot`, the label's intrinsics) and the same camera with yaw + yaw_delta
    (a scalar or [B]). Both are built the same way, so they differ only by the yaw move."""
    cam2world, intrinsics = camera.split_label(labels)
    yaw, pitch, radius = camera.yaw_pitch_radius(cam2world)
    delta = torch.as_tensor(yaw_delta, dtype=yaw.dtype, device=yaw.device).expand_as(yaw)
    c0 = camera.make_label(camera.look_at_pose(yaw, pitch, radius, pivot, device=labels.device), intrinsics)
    c1 = camera.make_label(camera.look_at_pose(yaw + delta, pitch, radius, pivot, device=labels.device), intrinsics)
    return c0, c1


def _label_batches(labels: np.ndarray, num: int, batch_size: int, seed: int) -> Iterator[Tuple[torch.Tensor, np.ndarray]]:
    rng = np.random.RandomState(seed)
    idx = rng.randint(len(labels), size=num)
    for start in range(0, num, batch_size):
        sel = idx[start:start + batch_size]
        yield torch.from_numpy(np.asarray(labels, dtype=np.float32)[sel]), np.arange(start, start + len(sel))


def alternating(positions: np.ndarray, delta: float) -> torch.Tensor:
    return torch.from_numpy(np.where(positions % 2 == 0, delta, -delta).astype(np.float32))


class _Accumulator:
    def __init__(self):
        self.sums: Dict[str, float] = {}

    def add(self, key: str, value) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def get(self, key: str) -> float:
        return self.sums.get(key, 0.0)

    def ratio(self, num: str, den: str) -> float:
        d = self.get(den)
        return self.get(num) / d if d > 0 else float("nan")


def _view_pairs(G, labels: np.ndarray, num: int, batch_size: int, seed: int, yaw_delta: float,
                device, desc: str, progress: bool) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches (z, c0, c1) for paired-view metrics: seeded z, dataset cameras c0 and the same
    cameras orbited by +-yaw_delta around the model's pivot (c1); drives the progress bar."""
    pivot = list(G.cfg.rendering.avg_camera_pivot)
    gen = torch.Generator().manual_seed(seed)
    bar = _bar(num, desc, progress)
    for c, pos in _label_batches(labels, num, batch_size, seed):
        z = torch.randn([len(pos), G.z_dim], generator=gen).to(device)
        c0, c1 = (t.to(device) for t in orbit_pair(c, alternating(pos, yaw_delta), pivot))
        yield z, c0, c1
        bar.update(len(pos))
    bar.close()


@torch.no_grad()
def compute_mvc(G, labels: np.ndarray, num: int, device="cpu", batch_size: int = 8, seed: int = 0,
                yaw_delta: float = 0.1, depth_tolerance: float = 0.01, alpha_threshold: float = 0.5,
                progress: bool = True) -> Dict[str, float]:
    """Multi-view consistency of G (see the module docstring): mvc, mvc_raw, mvc_lowpass,
    mvc_valid, mvc_valid_raw."""
    device = torch.device(device)
    acc = _Accumulator()
    for z, c0, c1 in _view_pairs(G, labels, num, batch_size, seed, yaw_delta, device, "mvc", progress):
        ws = G.mapping(z, c0, truncation_psi=1)
        planes = G.planes(ws, noise_mode="const")
        views = []
        for cam in (c0, c1):
            with _same_noise(seed, device):
                views.append(G.render(planes, ws, cam, deterministic=True))
        va, vb = views
        for v in views:
            v["image_lowpass"] = _resize(_resize_antialiased(v["image"], v["image_raw"].shape[-1]), v["image"].shape[-1])
        for key, suffix in (("image_raw", "_raw"), ("image", ""), ("image_lowpass", "_lowpass")):
            r = reprojection_error(va[key], va["image_depth"], va["image_alpha"], c0,
                                   vb[key], vb["image_depth"], vb["image_alpha"], c1,
                                   depth_tolerance, alpha_threshold)
            acc.add("err" + suffix, r["error_sum"].sum())
            acc.add("valid" + suffix, r["valid"].sum())
            acc.add("total" + suffix, r["total"].sum())
    return {"mvc": acc.ratio("err", "valid"), "mvc_raw": acc.ratio("err_raw", "valid_raw"),
            "mvc_lowpass": acc.ratio("err_lowpass", "valid_lowpass"),
            "mvc_valid": acc.ratio("valid", "total"), "mvc_valid_raw": acc.ratio("valid_raw", "total_raw")}


def _as_attributes(out) -> torch.Tensor:
    out = torch.as_tensor(out).to(torch.float64)
    return out.reshape(out.shape[0], -1)


@torch.no_grad()
def compute_pose_effect(G, labels: np.ndarray, num: int, device="cpu", batch_size: int = 8, seed: int = 0,
                        yaw_delta: float = 0.25, attribute_predictor: Optional[Callable] = None,
                        progress: bool = True) -> Dict[str, float]:
    """How much a render changes when only the conditioning pose moves vs. only the camera moves.

    For each latent: c0 = the label's camera, c1 = c0 with yaw +/- yaw_delta (alternating),
    I(cond, cam) = render of mapping(z, cond) from cam (deterministic sampling, const noise, the
    same seed for every render). cond change = |I(c1, c0) - I(c0, c0)|, camera change =
    |I(c0, c1) - I(c0, c0)|, mean absolute difference of RGB in [0, 1] (final and raw image).
    attribute_predictor(images in [-1, 1] [B, 3, S, S]) -> [B] or [B, K] gives the attribute
    versions (mean absolute change over items and attributes).
    """
    device = torch.device(device)
    acc = _Accumulator()
    for z, c0, c1 in _view_pairs(G, labels, num, batch_size, seed, yaw_delta, device, "pose_effect", progress):

        ws0, ws1 = G.mapping(z, c0, truncation_psi=1), G.mapping(z, c1, truncation_psi=1)
        planes0, planes1 = G.planes(ws0, noise_mode="const"), G.planes(ws1, noise_mode="const")

        def render(planes, ws, cam):
            with _same_noise(seed, device):
                return G.render(planes, ws, cam, deterministic=True)

        base = render(planes0, ws0, c0)
        cond_moved = render(planes1, ws1, c0)            # only the conditioning pose moved
        cam_moved = render(planes0, ws0, c1)             # only the camera moved
        for key, suffix in (("image", ""), ("image_raw", "_raw")):
            ref = base[key].clamp(-1, 1)
            acc.add("cond" + suffix, ((cond_moved[key].clamp(-1, 1) - ref).abs() / 2).mean(dim=(1, 2, 3)).sum())
            acc.add("cam" + suffix, ((cam_moved[key].clamp(-1, 1) - ref).abs() / 2).mean(dim=(1, 2, 3)).sum())
        if attribute_predictor is not None:
            a0, a_cond, a_cam = (_as_attributes(attribute_predictor(v["image"])) for v in (base, cond_moved, cam_moved))
            acc.add("attr_cond", (a_cond - a0).abs().mean(dim=1).sum())
            acc.add("attr_cam", (a_cam - a0).abs().mean(dim=1).sum())
        acc.add("n", len(z))
    n = acc.get("n")
    out = {"pose_cond_change": acc.get("cond") / n, "pose_cam_change": acc.get("cam") / n,
           "pose_cond_change_raw": acc.get("cond_raw") / n, "pose_cam_change_raw": acc.get("cam_raw") / n}
    out["pose_ratio"] = out["pose_cond_change"] / out["pose_cam_change"] if out["pose_cam_change"] > 0 else float("nan")
    if attribute_predictor is not None:
        out["pose_attr_cond_change"] = acc.get("attr_cond") / n
        out["pose_attr_cam_change"] = acc.get("attr_cam") / n
        out["pose_attr_ratio"] = (out["pose_attr_cond_change"] / out["pose_attr_cam_change"]
                                  if out["pose_attr_cam_change"] > 0 else float("nan"))
    return out


def compute_dataset_mvc(dataset_path, num: int, indices: Optional[Sequence[int]] = None, seed: int = 0,
                        yaw_delta: float = 0.1, depth_tolerance: float = 0.01, alpha_threshold: float = 0.5,
                        progress: bool = True) -> Dict[str, float]:
    """The mvc floor of a synthetic dataset (`training.synthetic`, with ground truth): each image is
    warped through its ground-truth depth into a ground-truth render of the same object from the
    camera moved by +/- yaw_delta (same renderer settings as the dataset)."""
    from training import synthetic
    gt = synthetic.load_ground_truth(dataset_path)
    records = gt["images"]
    dist = gt["camera_distribution"]
    res, ss = int(gt["resolution"]), int(gt.get("supersample", 1))
    dataset = open_dataset(dataset_path)                  # no xflip / max_size: item i = file i
    record_of = {rec["image"]: rec for rec in records}
    if indices is None:
        indices = np.random.RandomState(seed).permutation(len(dataset))
    indices = list(indices)[:num]
    acc = _Accumulator()
    bar = _bar(len(indices), "mvc (dataset)", progress)
    for k, i in enumerate(indices):
        image, label = dataset[int(i)]
        rec = record_of[dataset.image_fnames[int(i)]]
        depth, mask = synthetic.load_gt_arrays(dataset_path, rec)
        label = torch.from_numpy(label)[None]
        image = torch.from_numpy(image[None, :3]).float() / 127.5 - 1
        delta = yaw_delta if k % 2 == 0 else -yaw_delta
        cam2world, intrinsics = camera.split_label(label)
        yaw, pitch, radius = camera.yaw_pitch_radius(cam2world)
        cam_b = camera.look_at_pose(yaw + delta, pitch, radius, dist["pivot"])
        label_b = camera.make_label(cam_b, intrinsics)
        obj = synthetic.ProceduralObject.from_dict(rec["object"])
        img_b, depth_b, mask_b = synthetic.render(obj, cam_b, intrinsics, res, dist["background"], ss)
        r = reprojection_error(
            image, torch.from_numpy(depth)[None, None], torch.from_numpy(mask)[None, None].float(), label,
            torch.from_numpy(img_b).permute(2, 0, 1)[None].float() / 127.5 - 1,
            torch.from_numpy(depth_b)[None, None], torch.from_numpy(mask_b)[None, None].float(), label_b,
            depth_tolerance, alpha_threshold)
        acc.add("err", r["error_sum"].sum())
        acc.add("valid", r["valid"].sum())
        acc.add("total", r["total"].sum())
        bar.update(1)
    bar.close()
    return {"mvc": acc.ratio("err", "valid"), "mvc_valid": acc.ratio("valid", "total")}


# ------------------------------------------------------------------------------------------------
# The driver


def flatten(results: Dict[str, dict]) -> Dict[str, float]:
    """{metric: {'results': {key: value}}} -> {key: value} (for logging)."""
    out = {}
    for entry in results.values():
        out.update(entry.get("results", {}))
    return out


def _format_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s" if s >= 3600 else (
        f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s")


class _FeatureCache:
    """In-process cache of dataset Inception features, keyed by file identity and selection."""

    def __init__(self):
        self.entries: Dict[tuple, FeatureStats] = {}

    @staticmethod
    def key(path, indices: Sequence[int], detector) -> tuple:
        st = os.stat(path)
        idx = np.asarray(indices, dtype=np.int64)
        return (os.path.abspath(path), st.st_mtime_ns, st.st_size, len(idx), hash(idx.tobytes()),
                id(detector), getattr(detector, "input_size", None))


_REAL_CACHE = _FeatureCache()


def _inception_stats(batches: Iterator[torch.Tensor], num: int, detector, device, desc: str,
                     progress: bool, capture_all: bool = True) -> FeatureStats:
    stats = FeatureStats(capture_all=capture_all, capture_mean_cov=True)
    bar = _bar(num, desc, progress)
    for images in batches:
        stats.append(detector_features(detector, images, device))
        bar.update(images.shape[0])
    bar.close()
    return stats


def _tee(batches: Iterator[torch.Tensor], consumers: List[Tuple[int, Callable[[torch.Tensor], None]]]
         ) -> None:
    """Feed the first n images of a stream to each (n, consumer)."""
    done = 0
    for images in batches:
        for n, fn in consumers:
            if done < n:
                fn(images[: n - done])
        done += images.shape[0]


def compute_metrics(G, dataset_path, names: Sequence[str], num_images: Optional[int] = None, device="cpu",
                    inception_path: Optional[str] = None, progress: bool = True, *, batch_size: int = 8,
                    seed: int = 0, detector=None, attribute_predictor: Optional[Callable] = None,
                    reference_only: bool = False, xflip: bool = False, mvc_yaw_delta: float = 0.1,
                    pose_yaw_delta: float = 0.25) -> Dict[str, dict]:
    """Compute metrics `names` for generator G (already on `device`) against the dataset.

    num_images: overrides every metric's generated-image count (and the real count where the
    metric does not use the whole dataset). inception_path: Inception weights for FID/KID
    (`training.inception.load_inception`); or pass `detector` (a network mapping uint8-range
    [N, 3, H, W] to [N, D] features, e.g. `training.inception.random_inception()` in tests).
    reference_only: G is ignored (may be None); half A of the dataset is compared with half B.
    Returns {name: {'metric', 'results': {key: float}, 'num_gen', 'num_real', 'total_time', ...}};
    the total_time of FID/KID/SWD includes the shared feature / generation time.
    Generated images for FID/KID/SWD come from one seeded stream, shared between the metrics.
    """
    device = torch.device(device)
    specs = [parse_metric(n, num_images) for n in names]
    dataset = open_dataset(dataset_path, xflip=xflip)
    resolution = dataset.resolution
    labels = dataset.labels
    if reference_only:
        perm = np.random.RandomState(seed).permutation(len(dataset))
        half = len(dataset) // 2
        real_pool, fake_pool = perm[:half], perm[half:2 * half]
    else:
        if G is None:
            raise ValueError("compute_metrics needs a generator unless reference_only=True")
        real_pool, fake_pool = np.arange(len(dataset)), None
    needs_inception = any(s.kind in ("fid", "kid") for s in specs)
    if needs_inception and detector is None:
        if inception_path is None:
            raise ValueError("FID/KID need the Inception weights: pass inception_path (--inception PATH); "
                             "see training/inception.py for the accepted files")
        detector = get_detector(inception_path, device)

    results: Dict[str, dict] = {}
    timings: Dict[str, float] = {}

    # ---- FID / KID / SWD: one generated stream, features shared between metrics.
    stream_specs = [s for s in specs if s.kind in ("fid", "kid", "swd")]
    if stream_specs:
        t0 = time.perf_counter()
        real_inc: Dict[int, FeatureStats] = {}
        inc_specs = [s for s in stream_specs if s.kind in ("fid", "kid")]
        keep_all = any(s.kind == "kid" for s in inc_specs)     # all real features only for KID
        for n_real in sorted({min(s.max_real or len(real_pool), len(real_pool)) for s in inc_specs}):
            idx = real_pool[:n_real]
            key = _FeatureCache.key(dataset_path, idx, detector) + (xflip,)
            cached = _REAL_CACHE.entries.get(key)
            if cached is None or (keep_all and not cached.capture_all):
                cached = _inception_stats(iterate_dataset(dataset, idx, batch_size), n_real, detector, device,
                                          "dataset features", progress, capture_all=keep_all)
                _REAL_CACHE.entries[key] = cached
            real_inc[n_real] = cached
        swd_specs = [s for s in stream_specs if s.kind == "swd"]
        swd_n = {s.name: min(s.num_gen, len(real_pool), len(fake_pool) if fake_pool is not None else s.num_gen)
                 for s in swd_specs}
        swd_real: Dict[int, SWDDescriptors] = {}
        for n in sorted(set(swd_n.values())):
            acc = SWDDescriptors(resolution, seed)
            bar = _bar(n, "swd dataset", progress)
            for images in iterate_dataset(dataset, real_pool[:n], batch_size):
                acc.feed(images)
                bar.update(images.shape[0])
            bar.close()
            swd_real[n] = acc
        timings["real"] = time.perf_counter() - t0

        gen_inc_n = max((s.num_gen for s in inc_specs), default=0)
        if fake_pool is not None:
            gen_inc_n = min(gen_inc_n, len(fake_pool))
        gen_stats = FeatureStats(capture_all=True, capture_mean_cov=True)
        swd_fake = {n: SWDDescriptors(resolution, seed) for n in swd_real}
        consumers: List[Tuple[int, Callable]] = []
        if gen_inc_n:
            consumers.append((gen_inc_n, lambda im: gen_stats.append(detector_features(detector, im, device))))
        for n, acc in swd_fake.items():
            consumers.append((n, acc.feed))
        total = max(n for n, _ in consumers)
        t0 = time.perf_counter()
        if reference_only:
            stream = iterate_dataset(dataset, fake_pool[:total], batch_size)
        else:
            stream = GeneratorSampler(G, labels, device, seed, batch_size, resolution).batches(total)
        bar = _bar(total, "reference half" if reference_only else "generated", progress)

        def counted(it):
            for images in it:
                bar.update(images.shape[0])
                yield images
        _tee(counted(stream), consumers)
        bar.close()
        timings["gen"] = time.perf_counter() - t0
        if gen_inc_n:
            # Sub-streams for metrics that asked for fewer generated images than the longest one.
            all_gen = gen_stats.get_all()
        for s in stream_specs:
            t0 = time.perf_counter()
            if s.kind in ("fid", "kid"):
                n_real = min(s.max_real or len(real_pool), len(real_pool))
                feats = all_gen[: min(s.num_gen, gen_inc_n)]
                if s.kind == "fid":
                    res = {s.name: fid_from_features(feats, *real_inc[n_real].get_mean_cov())}
                else:
                    res = {s.name: kernel_inception_distance(real_inc[n_real].get_all(), feats, seed=seed)}
                num_gen, num_real = len(feats), n_real
            else:
                n = swd_n[s.name]
                res = swd_from_descriptors(swd_real[n].finalize(), swd_fake[n].finalize(),
                                           swd_real[n].resolutions, seed)
                num_gen = num_real = n
            results[s.name] = dict(results=res, num_gen=num_gen, num_real=num_real,
                                   seconds_metric=time.perf_counter() - t0)

    # ---- Rendering metrics.
    for s in specs:
        if s.kind not in ("mvc", "pose_effect"):
            continue
        t0 = time.perf_counter()
        if reference_only:
            if s.kind == "mvc" and _has_ground_truth(dataset_path):
                res = compute_dataset_mvc(dataset_path, s.num_gen, indices=fake_pool, seed=seed,
                                          yaw_delta=mvc_yaw_delta, progress=progress)
                results[s.name] = dict(results=res, num_gen=min(s.num_gen, len(fake_pool)), num_real=0)
            else:
                why = ("no ground_truth.json (not a training.synthetic dataset)" if s.kind == "mvc"
                       else "the pose-conditioning effect has no dataset counterpart")
                results[s.name] = dict(results={}, skipped=why, num_gen=0, num_real=0)
        elif s.kind == "mvc":
            res = compute_mvc(G, labels, s.num_gen, device, batch_size, seed, mvc_yaw_delta, progress=progress)
            results[s.name] = dict(results=res, num_gen=s.num_gen, num_real=0)
        else:
            res = compute_pose_effect(G, labels, s.num_gen, device, batch_size, seed, pose_yaw_delta,
                                      attribute_predictor, progress)
            results[s.name] = dict(results=res, num_gen=s.num_gen, num_real=0)
        results[s.name]["seconds_metric"] = time.perf_counter() - t0

    shared = timings.get("real", 0.0) + timings.get("gen", 0.0)
    out = {}
    for s in specs:
        entry = dict(metric=s.name, **results[s.name])
        seconds = entry.pop("seconds_metric") + (shared if s.kind in ("fid", "kid", "swd") else 0.0)
        entry["total_time"] = seconds
        entry["total_time_str"] = _format_time(seconds)
        entry["reference_only"] = bool(reference_only)
        out[s.name] = entry
    return out


def _has_ground_truth(path) -> bool:
    try:
        from training import synthetic
        synthetic.load_ground_truth(path)
        return True
    except Exception:
        return False


# ------------------------------------------------------------------------------------------------
# CLI


def load_attribute_predictor(spec: str, device) -> Callable:
    """A TorchScript file, or 'package.module:callable' (imported; called on images in [-1, 1])."""
    if os.path.isfile(spec):
        net = torch.jit.load(spec, map_location=device).eval()
        return lambda images: net(images)
    if ":" not in spec:
        raise ValueError(f"--attr-predictor: {spec!r} is neither a file nor 'module:callable'")
    import importlib
    module, name = spec.split(":", 1)
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def is_metrics_log(path) -> bool:
    """A --json-out file this tool wrote: JSON lines, each an object with a 'metric' key."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        return bool(lines) and all(isinstance(e, dict) and "metric" in e for e in map(json.loads, lines))
    except (OSError, ValueError, RecursionError):
        return False


def append_metrics_log(path: str, lines: List[str], overwrite: bool = False) -> None:
    """Add JSON lines to a --json-out file atomically: an existing file is kept and appended to
    only if it is a metrics log we wrote; anything else is refused unless overwrite (replaced)."""
    from model.output import atomic_write, check_replace
    check_replace(path, overwrite, is_metrics_log, what="--json-out")
    old = ""
    if os.path.isfile(path) and is_metrics_log(path):
        with open(path, "r", encoding="utf-8") as f:
            old = f.read()
        if old and not old.endswith("\n"):
            old += "\n"
    text = old + "".join(line + "\n" for line in lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def main(argv=None) -> int:
    from model.cli_errors import Parser, add_debug_flag, run_guarded
    parser = Parser(prog="python -m training.metrics", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", help="generator checkpoint (.safetensors or official .pkl)")
    parser.add_argument("--data", required=True, help="dataset folder or zip (EG3D format)")
    parser.add_argument("--metrics", default="fid50k_full",
                        help="comma-separated: fid<N>k[_full], kid<N>k[_full], swd[<N>k], mvc, pose_effect")
    parser.add_argument("--inception", help="Inception-v3 weights for FID/KID (see training/inception.py)")
    parser.add_argument("--num", type=int, default=None, help="override the number of generated images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mirror", action="store_true", help="add x-flipped dataset images (as training did)")
    parser.add_argument("--reference-only", action="store_true",
                        help="dataset vs. dataset floor: two disjoint random halves (no --network)")
    parser.add_argument("--attr-predictor", help="attribute predictor for pose_effect: TorchScript file or module:callable")
    parser.add_argument("--mvc-yaw", type=float, default=0.1, help="camera yaw move for mvc (radians)")
    parser.add_argument("--pose-yaw", type=float, default=0.25, help="pose move for pose_effect (radians)")
    parser.add_argument("--inception-size", type=int, default=299, help=argparse.SUPPRESS)   # tests only
    parser.add_argument("--json-out", help="also append the JSON lines to this file (a metrics log it wrote)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a --json-out file that is not a metrics log written by this tool")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    bad = [n for n in names if not is_valid_metric(n)]
    if bad:
        parser.error(f"unknown metric(s) {bad}")
    if not args.reference_only and not args.network:
        parser.error("--network is required (or use --reference-only)")
    if any(parse_metric(n).kind in ("fid", "kid") for n in names) and not args.inception:
        parser.error("FID/KID need --inception PATH (the weights cannot be downloaded here)")
    return run_guarded(lambda: _run(args, names), debug=args.debug)


def _run(args, names: List[str]) -> int:
    if args.json_out:
        from model.output import check_replace
        check_replace(args.json_out, args.overwrite, is_metrics_log, what="--json-out")   # before the work
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    G = None
    if not args.reference_only:
        import model
        G = model.load(args.network, net="G_ema", device=device).eval().requires_grad_(False)
    detector = None
    if any(parse_metric(n).kind in ("fid", "kid") for n in names):
        detector = get_detector(args.inception, device, args.inception_size)
    predictor = load_attribute_predictor(args.attr_predictor, device) if args.attr_predictor else None
    out = compute_metrics(G, args.data, names, args.num, device, args.inception, not args.no_progress,
                          batch_size=args.batch, seed=args.seed, detector=detector,
                          attribute_predictor=predictor, reference_only=args.reference_only,
                          xflip=args.mirror, mvc_yaw_delta=args.mvc_yaw, pose_yaw_delta=args.pose_yaw)
    lines = []
    for name in names:
        entry = dict(out[name], network=args.network, dataset=args.data, timestamp=time.time())
        lines.append(json.dumps(entry, sort_keys=False))
        print(lines[-1], flush=True)
    if args.json_out:
        append_metrics_log(args.json_out, lines, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
