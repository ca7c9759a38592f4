"""A synthetic EG3D dataset with ground truth: procedural 3D objects ray cast on the CPU.

    python -m training.synthetic --dest data.zip --count 1000 --resolution 64 --cameras portrait --seed 0 --bias 0.8

Every image shows one procedural object: a body (ellipsoid or box) with parts (ears, horns, eyes,
legs, tail, a snout), each part an ellipsoid or an oriented box, coloured with a solid texture
(plain, stripes, spots or sinusoid noise) and shaded Lambertian + ambient under a directional
light fixed in the object's frame. Rays are cast analytically (exact ray-ellipsoid and ray-box
intersections of the union of the parts, vectorised in numpy float64), only for rays that
enter the EG3D box [-0.5, 0.5]^3 (box_warp = 1), which contains every object. Images are 2x2
supersampled; the ground truth is taken at the pixel centres.

Camera distributions (`CAMERA_DISTRIBUTIONS`):
- `portrait` (FFHQ-like): yaw = pi/2 + N(0, 0.25) clipped to +-0.5, pitch = pi/2 + N(0, 0.1)
  clipped to +-0.25, radius 2.7, fov 18.837 deg (focal 4.2634), pivot (0, 0, 0.2), black
  background; objects lie within 0.45 of the origin, so inside the FFHQ ray range [2.25, 3.3].
- `360` (ShapeNet-cars-like): yaw uniform on the circle, camera elevation uniform in
  [-0.15, 0.9] rad, radius 1.3 (the SRN-cars camera distance of the official ShapeNet labels; the
  official config's avg_camera_radius 1.7 only drives its visualiser), focal 1.025390625
  (the official ShapeNet labels' 525 / 512; fov 69.18 deg in EG3D's convention), pivot (0, 0, 0),
  white background; objects fill up to the box. Rendering with the official ShapeNet
  ray range (0.1, 2.6) or 'auto' covers them.
Every object's bounding box lies in [-0.48, 0.48]^3.

Pose-attribute bias: each object has an attribute a in (0, 1), the snout size (radius
0.03 + 0.07 a relative to the head before fitting). With bias b in [0, 1],
a = Phi(b z + sqrt(1 - b^2) n) where z is the standardised yaw offset from frontal, n ~ N(0, 1)
and Phi the normal CDF, so corr(a, yaw) ~ b (b = 0: independent). The correlation is with the
signed yaw: x-flip augmentation (which mirrors yaw but not the symmetric snout) cancels it, so
bias experiments should train without `xflip`.

Output (EG3D format, opens with `training.dataset.ImageFolderDataset`):
- `00000/img00000000.png` ... and `dataset.json` with the 25-float labels;
- `gt/00000/img00000000.npz` with `depth` (float32 [R, R], distance along the unit ray from the
  camera centre, 0 where the ray misses), `mask` (uint8 [R, R], 1 = the pixel-centre ray hits
  the object) and `object_json` (the object's full description as UTF-8 JSON bytes;
  `load_gt_object` rebuilds it, `.sdf(points)` evaluates it); `.npz` so that loaders which take
  every image file as a sample ignore them;
- `ground_truth.json`: settings and, per image, the image and gt names, attribute, yaw, pitch,
  radius and mask coverage. `load_ground_truth` / `load_gt_arrays` / `load_gt_object` read them
  back (a loaded record's `["object"]` is fetched from its npz on first use).

Deterministic: image i depends only on (seed, i, cameras, resolution, bias, supersample); the same
arguments give a byte-identical archive, whatever the number of worker processes (`workers`).
"""
from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import signal
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from model.camera import fov_to_intrinsics, look_at_pose, make_label
from model.cli_errors import Parser, add_debug_flag, bounded_int, finite_float, run_guarded
from training.dataset_tool import MAX_RESOLUTION, DatasetWriter, encode_png

MAX_COUNT = 10_000_000
MAX_SUPERSAMPLE = 8
GT_FILE = "ground_truth.json"

BOX_HALF = 0.5                      # the EG3D tri-plane box with box_warp = 1
OBJECT_HALF = 0.48                  # every object's bounding box lies in [-OBJECT_HALF, OBJECT_HALF]^3
ATTRIBUTE_NAME = "snout_size"
FOCAL_SHAPENET = 1.025390625        # 525 / 512, the normalised focal of the official ShapeNet labels


def _fov_for_focal(focal: float) -> float:
    """EG3D-convention fov (official constants) whose `fov_to_intrinsics` focal is `focal`."""
    return math.atan(1.0 / (focal * 1.414)) * 360 / 3.14159


@dataclass(frozen=True)
class CameraDistribution:
    name: str
    radius: float
    fov_degrees: float
    pivot: Tuple[float, float, float]
    background: Tuple[float, float, float]
    object_radius: Optional[float]  # objects are scaled to lie within this distance of the origin
    yaw_std: float                  # portrait: gaussian std around pi/2; 360: unused (uniform)
    yaw_clip: float                 # portrait: |yaw - pi/2| <= yaw_clip; 360: pi (full circle)
    pitch_std: float = 0.0          # portrait: gaussian std around pi/2
    pitch_clip: float = 0.0
    elevation_range: Optional[Tuple[float, float]] = None   # 360: camera elevation, radians
    kind: str = "portrait"

    @property
    def yaw_scale(self) -> float:
        """Std of the yaw offset from frontal, used to standardise it for the attribute bias."""
        return self.yaw_std if self.kind == "portrait" else math.pi / math.sqrt(3.0)


CAMERA_DISTRIBUTIONS: Dict[str, CameraDistribution] = {
    "portrait": CameraDistribution(
        name="portrait", radius=2.7, fov_degrees=18.837, pivot=(0.0, 0.0, 0.2), background=(0.0, 0.0, 0.0),
        object_radius=0.45, yaw_std=0.25, yaw_clip=0.5, pitch_std=0.1, pitch_clip=0.25, kind="portrait"),
    "360": CameraDistribution(
        name="360", radius=1.3, fov_degrees=_fov_for_focal(FOCAL_SHAPENET), pivot=(0.0, 0.0, 0.0),
        background=(1.0, 1.0, 1.0), object_radius=None, yaw_std=0.0, yaw_clip=math.pi,
        elevation_range=(-0.15, 0.9), kind="360"),
}


def _wrap(angle):
    return np.remainder(np.asarray(angle) + math.pi, 2 * math.pi) - math.pi


def sample_camera(rng: np.random.Generator, dist: CameraDistribution) -> Tuple[float, float]:
    """(yaw, pitch) in the conventions of `model.camera.look_at_pose`."""
    if dist.kind == "portrait":
        yaw = math.pi / 2 + float(np.clip(rng.normal(0.0, dist.yaw_std), -dist.yaw_clip, dist.yaw_clip))
        pitch = math.pi / 2 + float(np.clip(rng.normal(0.0, dist.pitch_std), -dist.pitch_clip, dist.pitch_clip))
    else:
        yaw = float(rng.uniform(-math.pi, math.pi))
        lo, hi = dist.elevation_range
        elevation = float(rng.uniform(lo, hi))
        pitch = math.pi / 2 * (1.0 - math.sin(elevation))    # polar angle pi/2 - elevation
    return yaw, pitch


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def sample_attribute(rng: np.random.Generator, yaw: float, dist: CameraDistribution, bias: float) -> float:
    """Attribute in (0, 1) with corr(attribute, yaw offset) ~ bias."""
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"pose_attribute_bias must be in [0, 1], got {bias}")
    z = float(_wrap(yaw - math.pi / 2)) / dist.yaw_scale
    latent = bias * z + math.sqrt(1.0 - bias * bias) * float(rng.normal())
    return _normal_cdf(latent)


# ------------------------------------------------------------------------------------------------
# Procedural objects

def _rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """R = Rz @ Ry @ Rx; columns are the local axes in world coordinates."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def _hsv_to_rgb(h: float, s: float, v: float) -> List[float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return list([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


@dataclass
class Primitive:
    type: str                       # 'ellipsoid' (size = radii) | 'box' (size = half extents)
    center: List[float]
    rotation: List[List[float]]     # 3x3, columns = local axes in world coordinates
    size: List[float]
    material: int
    part: str


@dataclass
class ProceduralObject:
    primitives: List[Primitive]
    materials: List[dict]           # {'color', 'color2', 'texture', ...texture parameters}
    light: List[float]              # unit direction towards the light
    ambient: float
    diffuse: float
    attribute: float
    family: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProceduralObject":
        d = dict(d)
        d["primitives"] = [Primitive(**p) for p in d["primitives"]]
        return cls(**d)

    def arrays(self):
        centers = np.array([p.center for p in self.primitives], dtype=np.float64)
        rots = np.array([p.rotation for p in self.primitives], dtype=np.float64)
        sizes = np.array([p.size for p in self.primitives], dtype=np.float64)
        return centers, rots, sizes

    def bounding_radius(self) -> float:
        """Radius about the origin of a sphere holding every primitive."""
        out = 0.0
        for p in self.primitives:
            extent = max(p.size) if p.type == "ellipsoid" else float(np.linalg.norm(p.size))
            out = max(out, float(np.linalg.norm(p.center)) + extent)
        return out

    def sdf(self, points) -> np.ndarray:
        """Signed distance (approximate for ellipsoids, exact on their surface) of points [..., 3]."""
        pts = np.asarray(points, dtype=np.float64)
        flat = pts.reshape(-1, 3)
        out = np.full(flat.shape[0], np.inf)
        for p in self.primitives:
            local = (flat - np.asarray(p.center)) @ np.asarray(p.rotation)
            size = np.asarray(p.size)
            if p.type == "ellipsoid":
                k0 = np.linalg.norm(local / size, axis=-1)
                k1 = np.maximum(np.linalg.norm(local / size ** 2, axis=-1), 1e-12)
                d = k0 * (k0 - 1.0) / k1
            else:
                q = np.abs(local) - size
                d = np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)
            out = np.minimum(out, d)
        return out.reshape(pts.shape[:-1])


def _random_color(rng, sat=(0.3, 0.85), val=(0.45, 0.95), hue=None) -> List[float]:
    h = float(rng.uniform()) if hue is None else hue % 1.0
    return _hsv_to_rgb(h, float(rng.uniform(*sat)), float(rng.uniform(*val)))


def _random_material(rng) -> dict:
    hue = float(rng.uniform())
    color = _random_color(rng, hue=hue)
    color2 = _random_color(rng, hue=hue + float(rng.uniform(0.3, 0.7)), val=(0.2, 0.9))
    texture = str(rng.choice(["plain", "stripes", "spots", "noise"], p=[0.25, 0.25, 0.25, 0.25]))
    mat = dict(color=color, color2=color2, texture=texture)
    if texture == "stripes":
        axis = rng.normal(size=3)
        mat.update(axis=(axis / np.linalg.norm(axis)).tolist(), frequency=float(rng.uniform(15.0, 40.0)),
                   phase=float(rng.uniform(0, 2 * math.pi)), width=float(rng.uniform(-0.4, 0.4)))
    elif texture == "spots":
        n = int(rng.integers(8, 20))
        mat.update(centers=rng.uniform(-0.45, 0.45, size=(n, 3)).tolist(), spot_radius=float(rng.uniform(0.04, 0.09)))
    elif texture == "noise":
        k = 6
        dirs = rng.normal(size=(k, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        mat.update(directions=dirs.tolist(), frequencies=rng.uniform(8.0, 30.0, size=k).tolist(),
                   phases=rng.uniform(0, 2 * math.pi, size=k).tolist(), amplitude=float(rng.uniform(0.5, 1.0)))
    return mat


class _Builder:
    def __init__(self):
        self.primitives: List[Primitive] = []

    def add(self, type_, center, size, material, part, rot=(0.0, 0.0, 0.0)):
        self.primitives.append(Primitive(type=type_, center=[float(v) for v in center],
                                         rotation=_rotation(*rot).tolist(), size=[float(v) for v in size],
                                         material=int(material), part=part))

    def mirrored(self, type_, center, size, material, part, rot=(0.0, 0.0, 0.0)):
        """A left/right pair, symmetric about x = 0 (rot given for the +x one)."""
        x, y, z = center
        rx, ry, rz = rot
        self.add(type_, (x, y, z), size, material, part, (rx, ry, rz))
        self.add(type_, (-x, y, z), size, material, part, (rx, -ry, -rz))


def _add_head(b: _Builder, rng, center, radii, skin: int, accent: int, dark: int, snout_mat: int,
              attribute: float, allow_box: bool):
    cx, cy, cz = center
    rx, ry, rz = radii
    box = allow_box and rng.uniform() < 0.2
    if box:
        b.add("box", center, (rx * 0.85, ry * 0.85, rz * 0.85), skin, "head")
        front = lambda x, y: cz + rz * 0.85
    else:
        b.add("ellipsoid", center, radii, skin, "head")

        def front(x, y):
            u = 1.0 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2
            return cz + rz * math.sqrt(max(u, 0.0))
    scale = min(radii) / 0.2
    if rng.uniform() < 0.5 and not box:                               # jaw / cheeks
        b.add("ellipsoid", (cx, cy - 0.35 * ry, cz + 0.2 * rz), (0.8 * rx, 0.6 * ry, 0.8 * rz), skin, "jaw")
    ear = rng.uniform()
    if ear < 0.35:                                                    # round ears
        s = float(rng.uniform(0.05, 0.09)) * scale
        b.mirrored("ellipsoid", (cx + 0.85 * rx, cy + 0.5 * ry, cz - 0.1 * rz), (0.35 * s, s, 0.8 * s),
                   accent if rng.uniform() < 0.5 else skin, "ear", (0.0, 0.0, -float(rng.uniform(0.2, 0.7))))
    elif ear < 0.6:                                                   # pointy ears (diamond boxes)
        s = float(rng.uniform(0.04, 0.07)) * scale
        b.mirrored("box", (cx + 0.6 * rx, cy + 0.85 * ry, cz - 0.1 * rz), (s, s, 0.3 * s),
                   accent if rng.uniform() < 0.5 else skin, "ear", (0.0, 0.0, math.pi / 4 - float(rng.uniform(0, 0.3))))
    elif ear < 0.8:                                                   # long ears
        s = float(rng.uniform(0.1, 0.16)) * scale
        b.mirrored("ellipsoid", (cx + 0.45 * rx, cy + 0.9 * ry + 0.6 * s, cz - 0.1 * rz), (0.25 * s, s, 0.12 * s),
                   accent, "ear", (0.0, 0.0, -float(rng.uniform(0.1, 0.5))))
    if rng.uniform() < 0.35:                                          # horns
        s = float(rng.uniform(0.08, 0.14)) * scale
        b.mirrored("ellipsoid", (cx + 0.4 * rx, cy + 0.85 * ry + 0.5 * s, cz + 0.1 * rz), (0.2 * s, s, 0.2 * s),
                   dark if rng.uniform() < 0.5 else accent, "horn", (0.3, 0.0, -float(rng.uniform(0.2, 0.6))))
    if rng.uniform() < 0.9:                                           # eyes
        s = float(rng.uniform(0.02, 0.035)) * scale
        ex, ey = 0.38 * rx, cy + 0.2 * ry
        b.mirrored("ellipsoid", (cx + ex, ey, front(cx + ex, ey) - 0.4 * s), (s, s, 0.7 * s), dark, "eye")
    s = (0.03 + 0.07 * attribute) * scale                             # snout: the attribute
    sy = cy - 0.12 * ry
    b.add("ellipsoid", (cx, sy, front(cx, sy) - 0.15 * s), (s, 0.8 * s, 0.9 * s), snout_mat, "snout")


def sample_object(rng: np.random.Generator, kind: str, attribute: float) -> ProceduralObject:
    """A random object for the camera distribution kind ('portrait' or '360')."""
    materials = [_random_material(rng), _random_material(rng)]
    materials[1]["texture"] = "plain" if rng.uniform() < 0.6 else materials[1]["texture"]
    materials.append(dict(color=_random_color(rng, sat=(0.0, 0.4), val=(0.03, 0.15)), color2=[0, 0, 0], texture="plain"))
    materials.append(dict(color=_random_color(rng, sat=(0.4, 0.9), val=(0.3, 0.95)), color2=[0, 0, 0], texture="plain"))
    skin, accent, dark, snout_mat = 0, 1, 2, 3
    b = _Builder()
    if kind == "portrait":
        radii = (float(rng.uniform(0.19, 0.26)), float(rng.uniform(0.21, 0.28)), float(rng.uniform(0.18, 0.25)))
        _add_head(b, rng, (0.0, float(rng.uniform(-0.03, 0.03)), 0.0), radii, skin, accent, dark, snout_mat,
                  attribute, allow_box=True)
        if rng.uniform() < 0.5:                                       # neck / shoulders
            b.add("ellipsoid", (0.0, -radii[1] - 0.12, -0.05), (0.6 * radii[0], 0.2, 0.6 * radii[2]), accent, "neck")
        family = "head"
    elif kind == "360":
        if rng.uniform() < 0.7:
            family = "creature"
            length, width, height = (float(rng.uniform(0.28, 0.42)), float(rng.uniform(0.13, 0.21)),
                                     float(rng.uniform(0.12, 0.19)))
            body_y = float(rng.uniform(0.0, 0.08))
            if rng.uniform() < 0.75:
                b.add("ellipsoid", (0.0, body_y, 0.0), (width, height, length), skin, "body")
            else:
                b.add("box", (0.0, body_y, 0.0), (0.85 * width, 0.85 * height, 0.85 * length), skin, "body")
            leg_len = float(rng.uniform(0.1, 0.2))
            leg_type = "ellipsoid" if rng.uniform() < 0.7 else "box"
            for z in (0.6 * length, -0.6 * length):
                b.mirrored(leg_type, (0.6 * width, body_y - height - 0.5 * leg_len + 0.03, z),
                           (0.045, 0.5 * leg_len + 0.03, 0.045), accent if rng.uniform() < 0.3 else skin, "leg")
            if rng.uniform() < 0.6:
                tl = float(rng.uniform(0.08, 0.16))
                b.add("ellipsoid", (0.0, body_y + 0.5 * height, -length - 0.4 * tl), (0.025, 0.025, tl), accent, "tail",
                      (float(rng.uniform(0.3, 0.9)), 0.0, 0.0))
            hr = float(rng.uniform(0.11, 0.16))
            head_c = (0.0, body_y + 0.7 * height + 0.3 * hr, 0.85 * length + 0.5 * hr)
            _add_head(b, rng, head_c, (hr, 1.05 * hr, hr), skin, accent, dark, snout_mat, attribute, allow_box=False)
        else:
            family = "vehicle"
            length, width, height = (float(rng.uniform(0.36, 0.48)), float(rng.uniform(0.18, 0.26)),
                                     float(rng.uniform(0.08, 0.13)))
            base_y = float(rng.uniform(-0.08, 0.0))
            b.add("box", (0.0, base_y, 0.0), (width, height, length), skin, "body")
            cabin = float(rng.uniform(0.4, 0.7))
            b.add("box" if rng.uniform() < 0.5 else "ellipsoid", (0.0, base_y + height + 0.06, -0.1 * length),
                  (0.85 * width, 0.09, cabin * length), accent, "cabin")
            wr = float(rng.uniform(0.07, 0.1))
            for z in (0.65 * length, -0.65 * length):
                b.mirrored("ellipsoid", (width + 0.01, base_y - height + 0.02, z), (0.04, wr, wr), dark, "wheel")
            s = 0.02 + 0.05 * attribute                                  # front light: the attribute
            b.add("ellipsoid", (0.0, base_y, length + 0.2 * s), (2 * s, s, s), snout_mat, "snout")
    else:
        raise ValueError(f"unknown object kind {kind!r}")

    if kind == "360":                                                 # centre the bounding box
        lo, hi = _aabb(b.primitives)
        shift = -(lo + hi) / 2
        for p in b.primitives:
            p.center = [float(c + s) for c, s in zip(p.center, shift)]
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0) if kind == "portrait"
                      else rng.uniform(-1.0, 1.0)])
    obj = ProceduralObject(primitives=b.primitives, materials=materials,
                           light=(light / np.linalg.norm(light)).tolist(), ambient=float(rng.uniform(0.25, 0.4)),
                           diffuse=float(rng.uniform(0.55, 0.75)), attribute=float(attribute), family=family)
    return obj


def _aabb(primitives: Sequence[Primitive]) -> Tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for p in primitives:
        rot, size, c = np.asarray(p.rotation), np.asarray(p.size), np.asarray(p.center)
        half = np.sqrt((rot ** 2) @ size ** 2) if p.type == "ellipsoid" else np.abs(rot) @ size
        lo, hi = np.minimum(lo, c - half), np.maximum(hi, c + half)
    return lo, hi


def fit_object(obj: ProceduralObject, radius: Optional[float] = None, half: float = OBJECT_HALF) -> ProceduralObject:
    """Scale the object about the origin (never enlarging it) so that its bounding box lies in
    [-half, half]^3 and, if radius is given, it lies within `radius` of the origin."""
    lo, hi = _aabb(obj.primitives)
    k = min(1.0, half / max(float(np.abs(lo).max()), float(np.abs(hi).max())))
    if radius is not None:
        k = min(k, radius / obj.bounding_radius())
    if k < 1.0:
        for p in obj.primitives:
            p.center = [c * k for c in p.center]
            p.size = [s * k for s in p.size]
    return obj


# ------------------------------------------------------------------------------------------------
# Ray casting

def _matmul3(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """a [N, 3] @ m [3, K], column by column (small-axis matmuls and reductions are slow in numpy)."""
    return np.stack([a[:, 0] * m[0, j] + a[:, 1] * m[1, j] + a[:, 2] * m[2, j] for j in range(m.shape[1])], axis=-1)


def _normalize(a: np.ndarray) -> np.ndarray:
    return a / np.sqrt(a[:, 0] * a[:, 0] + a[:, 1] * a[:, 1] + a[:, 2] * a[:, 2])[:, None]


def _ray_box(origin: np.ndarray, dirs: np.ndarray, lo, hi):
    """Slab test of rays (origin [3], dirs [N, 3]) against the box [lo, hi]: (t_in [N], t_out [N])."""
    t_in = np.full(dirs.shape[0], -np.inf)
    t_out = np.full(dirs.shape[0], np.inf)
    for j in range(3):
        d = dirs[:, j]
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1, t2 = (lo[j] - origin[j]) / d, (hi[j] - origin[j]) / d
        t_in = np.maximum(t_in, np.minimum(t1, t2))
        t_out = np.minimum(t_out, np.maximum(t1, t2))
    return t_in, t_out


_RAY_CHUNK = 16384


def cast_rays(obj: ProceduralObject, origin: np.ndarray, dirs: np.ndarray):
    """Nearest hit of the rays of a pinhole camera with the union of the object's primitives.

    origin [3] (the camera centre), dirs [N, 3] unit directions, float64. Returns t [N] (distance
    along the ray, inf = miss), primitive index [N] (-1 = miss) and world normals [N, 3]. Only rays
    that enter the EG3D box are cast (the camera is outside it).
    """
    origin = np.asarray(origin, dtype=np.float64).reshape(3)
    n = dirs.shape[0]
    if n > _RAY_CHUNK:                                         # keep the work arrays in cache
        parts = [cast_rays(obj, origin, dirs[i:i + _RAY_CHUNK]) for i in range(0, n, _RAY_CHUNK)]
        return tuple(np.concatenate(arrays) for arrays in zip(*parts))
    t_best = np.full(n, np.inf)
    idx = np.full(n, -1, dtype=np.int64)
    normals = np.zeros((n, 3))
    t_in, t_out = _ray_box(origin, dirs, (-BOX_HALF,) * 3, (BOX_HALF,) * 3)
    sel = np.nonzero((t_in <= t_out) & (t_out > 0))[0]
    if sel.size == 0:
        return t_best, idx, normals
    dx_all, dy_all, dz_all = (np.ascontiguousarray(dirs[sel, j]) for j in range(3))
    tb = np.full(sel.size, np.inf)
    ib = np.full(sel.size, -1, dtype=np.int64)
    centers, rots, sizes = obj.arrays()
    for k, p in enumerate(obj.primitives):
        rot, size = rots[k], sizes[k]
        # cull with the primitive's bounding sphere: only rays inside its cone are tested
        v = centers[k] - origin
        dist = float(np.linalg.norm(v))
        bound = float(size.max() if p.type == "ellipsoid" else np.linalg.norm(size)) * (1 + 1e-6) + 1e-9
        if dist > bound:
            cone = np.nonzero(dx_all * v[0] + dy_all * v[1] + dz_all * v[2] >= math.sqrt(dist * dist - bound * bound)
                              - 1e-9 * dist)[0]
            if cone.size == 0:
                continue
            dx, dy, dz = dx_all[cone], dy_all[cone], dz_all[cone]
        else:
            cone = slice(None)
            dx, dy, dz = dx_all, dy_all, dz_all
        ol = (origin - centers[k]) @ rot                       # the same for every ray
        if p.type == "ellipsoid":
            m = rot / size[None, :]                            # world dir -> scaled local dir
            q0 = ol / size
            qx = dx * m[0, 0] + dy * m[1, 0] + dz * m[2, 0]
            qy = dx * m[0, 1] + dy * m[1, 1] + dz * m[2, 1]
            qz = dx * m[0, 2] + dy * m[1, 2] + dz * m[2, 2]
            a = qx * qx + qy * qy + qz * qz
            b = qx * q0[0] + qy * q0[1] + qz * q0[2]
            c = float(q0 @ q0) - 1.0
            disc = b * b - a * c
            ok = disc >= 0
            t = (-b - np.sqrt(np.where(ok, disc, 0.0))) / a
            ok &= t > 0
        else:
            t_near = np.full(dx.size, -np.inf)
            t_far = np.full(dx.size, np.inf)
            for j in range(3):
                dl = dx * rot[0, j] + dy * rot[1, j] + dz * rot[2, j]
                dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
                t1, t2 = (-size[j] - ol[j]) / dl, (size[j] - ol[j]) / dl
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
            t = t_near
            ok = (t_near <= t_far) & (t_near > 0)
        cur = tb[cone]
        closer = ok & (t < cur)
        tb[cone] = np.where(closer, t, cur)
        cur_i = ib[cone]
        ib[cone] = np.where(closer, k, cur_i)
    t_best[sel], idx[sel] = tb, ib
    hit = np.nonzero(idx >= 0)[0]
    for k in np.unique(idx[hit]):
        rays = hit[idx[hit] == k]
        rot = rots[k]
        local = _matmul3(origin + t_best[rays, None] * dirs[rays] - centers[k], rot)
        if obj.primitives[k].type == "ellipsoid":
            g = local / sizes[k] ** 2
        else:
            rel = np.abs(local) / sizes[k]
            axis = np.where(rel[:, 0] >= rel[:, 1], 0, 1)
            axis = np.where(rel[:, 2] > rel[np.arange(rays.size), axis], 2, axis)
            g = np.zeros_like(local)
            g[np.arange(rays.size), axis] = np.sign(local[np.arange(rays.size), axis])
        normals[rays] = _normalize(_matmul3(g, rot.T))
    return t_best, idx, normals


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _albedo(mat: dict, points: np.ndarray) -> np.ndarray:
    c1, c2 = np.asarray(mat["color"]), np.asarray(mat["color2"])
    tex = mat["texture"]
    if tex == "plain":
        return np.broadcast_to(c1, points.shape).copy()
    if tex == "stripes":
        s = np.sin(mat["frequency"] * _matmul3(points, np.asarray(mat["axis"])[:, None])[:, 0] + mat["phase"])
        w = _smoothstep(mat["width"] - 0.25, mat["width"] + 0.25, s)
    elif tex == "spots":
        centers = np.asarray(mat["centers"])
        dist2 = np.full(points.shape[0], np.inf)
        for c in centers:
            dist2 = np.minimum(dist2, (points[:, 0] - c[0]) ** 2 + (points[:, 1] - c[1]) ** 2 + (points[:, 2] - c[2]) ** 2)
        dist = np.sqrt(dist2)
        r = mat["spot_radius"]
        w = 1.0 - _smoothstep(0.8 * r, r, dist)
    elif tex == "noise":
        phase = _matmul3(points, np.asarray(mat["directions"]).T) * np.asarray(mat["frequencies"]) + np.asarray(mat["phases"])
        v = sum(np.sin(phase[:, j]) for j in range(phase.shape[1])) / math.sqrt(len(mat["phases"]))
        w = np.clip(0.5 + 0.5 * mat["amplitude"] * v, 0.0, 1.0)
    else:
        raise ValueError(f"unknown texture {tex!r}")
    return c1 * (1 - w[:, None]) + c2 * w[:, None]


def shade(obj: ProceduralObject, points: np.ndarray, idx: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambertian + ambient colour [N, 3] in [0, 1] of hit points."""
    out = np.zeros_like(points)
    mat_of = np.array([p.material for p in obj.primitives])[idx]
    for m in np.unique(mat_of):
        sel = mat_of == m
        out[sel] = _albedo(obj.materials[m], points[sel])
    lambert = np.maximum(_matmul3(normals, np.asarray(obj.light)[:, None])[:, 0], 0.0)
    return np.clip(out * (obj.ambient + obj.diffuse * lambert)[:, None], 0.0, 1.0)


def pixel_rays(cam2world, intrinsics, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """Camera centre [3] and unit ray directions [R*R, 3] in float64 numpy.

    The same rays as `model.camera.generate_rays` (pixel centres, ray index = row * R + col, skew
    honoured), computed in double precision without torch threads. cam2world [4, 4] or [1, 4, 4],
    intrinsics [3, 3] or [1, 3, 3] (tensors or arrays).
    """
    c2w = np.asarray(cam2world, dtype=np.float64).reshape(4, 4)
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy, sk = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    centres = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
    y, x = np.meshgrid(centres, centres, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    x_cam = (x - cx + cy * sk / fy - sk * y / fy) / fx
    y_cam = (y - cy) / fy
    r = c2w[:3, :3]
    dirs = np.stack([r[j, 0] * x_cam + r[j, 1] * y_cam + r[j, 2] for j in range(3)], axis=-1)
    return c2w[:3, 3].copy(), _normalize(dirs)


def render(obj: ProceduralObject, cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int,
           background: Sequence[float] = (0.0, 0.0, 0.0), supersample: int = 2):
    """Render one object: (image uint8 [R, R, 3], depth float32 [R, R], mask uint8 [R, R]).

    cam2world [1, 4, 4], intrinsics [1, 3, 3] (normalised). The image is supersampled
    `supersample`^2 times; depth (distance along the unit ray, 0 = miss) and mask are those of the
    pixel-centre rays, i.e. the rays of `model.camera.generate_rays` at `resolution` (computed
    in float64 by `pixel_rays`).
    """
    bg = np.asarray(background, dtype=np.float64)
    o, d = pixel_rays(cam2world, intrinsics, resolution)
    t, idx, normals = cast_rays(obj, o, d)
    mask = idx >= 0
    depth = np.where(mask, t, 0.0).astype(np.float32).reshape(resolution, resolution)
    ss = max(int(supersample), 1)
    if ss > 1:
        o, d = pixel_rays(cam2world, intrinsics, resolution * ss)
        t, idx, normals = cast_rays(obj, o, d)
    hit = idx >= 0
    color = np.broadcast_to(bg, (idx.size, 3)).copy()
    if hit.any():
        points = o[None] + t[hit, None] * d[hit]
        color[hit] = shade(obj, points, idx[hit], normals[hit])
    color = color.reshape(resolution, ss, resolution, ss, 3)
    color = sum(color[:, i, :, j] for i in range(ss) for j in range(ss)) / (ss * ss)
    image = np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)
    return image, depth, mask.reshape(resolution, resolution).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Samples and datasets

@dataclass
class Sample:
    image: np.ndarray               # uint8 [R, R, 3]
    depth: np.ndarray               # float32 [R, R], distance along the unit ray, 0 = background
    mask: np.ndarray                # uint8 [R, R], 1 = object
    label: np.ndarray               # float32 [25]
    yaw: float
    pitch: float
    radius: float
    attribute: float
    object: ProceduralObject = field(repr=False)


def make_sample(index: int, resolution: int, cameras: str = "portrait", seed: int = 0,
                pose_attribute_bias: float = 0.0, supersample: int = 2) -> Sample:
    """Sample `index` of the dataset defined by (seed, cameras, pose_attribute_bias)."""
    if cameras not in CAMERA_DISTRIBUTIONS:
        raise ValueError(f"cameras must be one of {sorted(CAMERA_DISTRIBUTIONS)}, got {cameras!r}")
    dist = CAMERA_DISTRIBUTIONS[cameras]
    rng_cam = np.random.default_rng([int(seed), int(index), 0])
    rng_obj = np.random.default_rng([int(seed), int(index), 1])
    yaw, pitch = sample_camera(rng_cam, dist)
    attribute = sample_attribute(rng_cam, yaw, dist, pose_attribute_bias)
    obj = fit_object(sample_object(rng_obj, dist.kind, attribute), dist.object_radius)
    cam2world = look_at_pose(yaw, pitch, dist.radius, dist.pivot)
    intrinsics = fov_to_intrinsics(dist.fov_degrees)
    label = make_label(cam2world, intrinsics)[0].numpy().astype(np.float32)
    image, depth, mask = render(obj, cam2world, intrinsics[None], resolution, dist.background, supersample)
    return Sample(image=image, depth=depth, mask=mask, label=label, yaw=yaw, pitch=pitch, radius=dist.radius,
                  attribute=attribute, object=obj)


def image_name(index: int) -> str:
    return f"{index // 1000:05d}/img{index:08d}.png"


def gt_name(index: int) -> str:
    return f"gt/{index // 1000:05d}/img{index:08d}.npz"


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _encoded_sample(args) -> Tuple[str, bytes, str, bytes, List[float], dict]:
    """Render and encode one image: (image name, PNG, gt name, npz, label, ground-truth record)."""
    index, resolution, cameras, seed, bias, supersample = args
    s = make_sample(index, resolution, cameras, seed, bias, supersample)
    obj_json = np.frombuffer(json.dumps(s.object.to_dict()).encode("utf-8"), dtype=np.uint8)
    record = dict(image=image_name(index), gt=gt_name(index), attribute=s.attribute, yaw=s.yaw, pitch=s.pitch,
                  radius=s.radius, coverage=float(s.mask.mean()))
    return (image_name(index), encode_png(s.image), gt_name(index),
            _npz_bytes(depth=s.depth, mask=s.mask, object_json=obj_json), [float(v) for v in s.label], record)


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the parent handles Ctrl-C
    torch.set_num_threads(1)                              # the workers are the parallelism


def generate_dataset(dest, count: int, resolution: int, cameras: str = "portrait", seed: int = 0,
                     pose_attribute_bias: float = 0.0, progress: bool = True, supersample: int = 2,
                     overwrite: bool = False, workers: int = 1) -> dict:
    """Write a synthetic EG3D dataset with ground truth to `dest` (.zip or folder), atomically.

    workers > 1 renders in that many processes; the output is byte-identical for any workers.
    An existing `dest` is replaced only if it is a dataset we wrote, or with overwrite.
    Returns stats: dest, count, seconds, images_per_second.
    """
    if not 1 <= count <= MAX_COUNT or not 4 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"count must be in [1, {MAX_COUNT}] and resolution in [4, {MAX_RESOLUTION}], "
                         f"got {count} and {resolution}")
    if not 1 <= supersample <= MAX_SUPERSAMPLE:
        raise ValueError(f"supersample must be in [1, {MAX_SUPERSAMPLE}], got {supersample}")
    if cameras not in CAMERA_DISTRIBUTIONS:
        raise ValueError(f"cameras must be one of {sorted(CAMERA_DISTRIBUTIONS)}, got {cameras!r}")
    if not 0.0 <= pose_attribute_bias <= 1.0:
        raise ValueError(f"pose_attribute_bias must be in [0, 1], got {pose_attribute_bias}")
    dist = CAMERA_DISTRIBUTIONS[cameras]
    jobs = [(i, int(resolution), cameras, int(seed), float(pose_attribute_bias), int(supersample)) for i in range(count)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=count, desc=f"synthetic {cameras} {resolution}px", unit="img")
    start = time.perf_counter()
    labels, records = [], []
    pool = None
    try:
        writer = DatasetWriter(dest, overwrite=overwrite)      # refuses a foreign dest before any work
        with writer:
            if workers > 1 and count > 1:
                pool = multiprocessing.Pool(min(int(workers), count), initializer=_worker_init)
                results = pool.imap(_encoded_sample, jobs, chunksize=max(1, min(16, count // (4 * workers))))
            else:
                results = map(_encoded_sample, jobs)
            for name, png, gt, npz, label, record in results:
                writer.write(name, png)
                writer.write(gt, npz)
                labels.append([name, label])
                records.append(record)
                if bar is not None:
                    bar.update(1)
            writer.write_json("dataset.json", {"labels": labels})
            writer.write_json(GT_FILE, dict(
                version=1, generator="training.synthetic", seed=int(seed), count=int(count),
                resolution=int(resolution), supersample=int(supersample), cameras=cameras,
                camera_distribution=asdict(dist), pose_attribute_bias=float(pose_attribute_bias),
                attribute=ATTRIBUTE_NAME, box_half=BOX_HALF,
                depth="float32 distance along the unit ray from the camera centre at pixel centres; 0 = miss",
                mask="uint8, 1 = the pixel-centre ray hits the object",
                images=records))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    return dict(dest=os.fspath(dest), count=count, seconds=seconds, images_per_second=count / max(seconds, 1e-9))


# ------------------------------------------------------------------------------------------------
# Reading the ground truth back

def _open_member(path: str, name: str) -> bytes:
    if os.path.isdir(path):
        with open(os.path.join(path, *name.split("/")), "rb") as f:
            return f.read()
    with zipfile.ZipFile(path) as z:
        return z.read(name)


class GroundTruthRecord(dict):
    """One image's ground-truth record; `record["object"]` (the object's description as a dict) is
    read on first use from the image's `gt/*.npz`, so ground_truth.json stays small."""

    def __init__(self, data: dict, dataset_path: str):
        super().__init__(data)
        self.dataset_path = dataset_path

    def __missing__(self, key):
        if key == "object" and "gt" in self:
            value = _load_object_dict(self.dataset_path, self["gt"])
            self[key] = value
            return value
        raise KeyError(key)


def load_ground_truth(path) -> dict:
    """`ground_truth.json` of a synthetic dataset (zip or folder); `["images"]` holds one
    `GroundTruthRecord` per image."""
    path = os.fspath(path)
    gt = json.loads(_open_member(path, GT_FILE).decode("utf-8"))
    gt["images"] = [GroundTruthRecord(r, path) for r in gt.get("images", [])]
    return gt


def load_gt_arrays(path, record_or_name) -> Tuple[np.ndarray, np.ndarray]:
    """(depth float32 [R, R], mask uint8 [R, R]) of one image (a ground-truth record or gt name)."""
    name = record_or_name["gt"] if isinstance(record_or_name, dict) else record_or_name
    with np.load(io.BytesIO(_open_member(os.fspath(path), name))) as data:
        return data["depth"], data["mask"]


def _load_object_dict(path, name: str) -> dict:
    with np.load(io.BytesIO(_open_member(os.fspath(path), name))) as data:
        return json.loads(data["object_json"].tobytes().decode("utf-8"))


def load_gt_object(path, record_or_name) -> ProceduralObject:
    """The procedural object shown in one image (a ground-truth record or gt name)."""
    name = record_or_name["gt"] if isinstance(record_or_name, dict) else record_or_name
    return ProceduralObject.from_dict(_load_object_dict(path, name))


def main(argv=None) -> int:
    parser = Parser(prog="python -m training.synthetic",
                    description="Generate a synthetic EG3D dataset with ground truth.")
    parser.add_argument("--dest", required=True, help="output .zip or folder")
    parser.add_argument("--count", type=bounded_int(1, MAX_COUNT), default=1000)
    parser.add_argument("--resolution", type=bounded_int(4, MAX_RESOLUTION), default=64)
    parser.add_argument("--cameras", choices=sorted(CAMERA_DISTRIBUTIONS), default="portrait")
    parser.add_argument("--seed", type=bounded_int(0, 2 ** 32 - 1), default=0)
    parser.add_argument("--bias", type=finite_float(0, 1), default=0.0, help="pose-attribute bias in [0, 1]")
    parser.add_argument("--supersample", type=bounded_int(1, MAX_SUPERSAMPLE), default=2,
                        help="image supersampling per axis (1 = off)")
    parser.add_argument("--workers", type=bounded_int(0, 256), default=1,
                        help="rendering processes (0 = one per CPU core)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --dest that this tool did not write")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_writer_cli(
        lambda: generate_dataset(args.dest, args.count, args.resolution, args.cameras, args.seed, args.bias,
                                 progress=not args.no_progress, supersample=args.supersample,
                                 overwrite=args.overwrite, workers=args.workers or (os.cpu_count() or 1)),
        lambda stats: f"wrote {stats['count']} images to {stats['dest']} in {stats['seconds']:.1f} s "
                      f"({stats['images_per_second']:.1f} images/s)", debug=args.debug)


def run_writer_cli(write, describe, debug: bool = False) -> int:
    """Exit code of a dataset-writing command: 0 with `describe(stats)` printed, else the one-line
    error and exit code of `model.cli_errors.run_guarded` (130 on Ctrl-C: the atomic writers
    leave nothing behind)."""
    def body() -> int:
        print(describe(write()))
        return 0
    return run_guarded(body, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
