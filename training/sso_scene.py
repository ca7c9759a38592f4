"""A multi-view test scene for single-scene fitting: one procedural object, many cameras.

    python -m training.sso_scene --dest scene.zip --views 64 --heldout 16 --resolution 64 --seed 0

The object and its renderer are those of `training.synthetic` (a procedural creature or vehicle
made of ellipsoids and boxes, solid-textured, Lambertian + ambient lighting, ray cast analytically
on the CPU, 2x2 supersampled), but the same object is seen from many cameras on a sphere around
the origin, all looking at the origin, instead of one object per image:

- training cameras: a Fibonacci spiral over the band of elevations [-0.5, 1.2] rad (evenly spread,
  deterministic);
- held-out cameras: random positions (seeded) in the same band, i.e. views never used for fitting
  and, in general, not close to a training view.

Cameras default to the `360` distribution of the synthetic generator (radius 1.3, normalised focal
1.025 = 525/512, white background); the object lies within 0.48 of the origin, inside the box
[-0.5, 0.5]^3 (box_warp = 1).

Output: an EG3D dataset (zip or folder, written atomically) readable by
`training.dataset.ImageFolderDataset` and by `training.sso`:
- `train/img00000000.png` ..., `heldout/img00000000.png` ... and `dataset.json` with every label;
- `split.json`: `{"train": [names], "heldout": [names]}`: the held-out views are kept apart,
  `training.sso` never fits them;
- `gt/<split>/img00000000.npz`: `depth` (float32, distance along the unit ray, 0 = miss) and `mask`;
- `ground_truth.json`: settings, the background, per-image cameras and the object description
  (`training.synthetic.ProceduralObject.from_dict(d["object"]).sdf(points)` is its signed
  distance, e.g. to compare a mesh extracted from a fitted scene).
"""
from __future__ import annotations

import io
import math
import os
import sys
import time
from typing import List, Tuple

import numpy as np
import torch

from model.camera import look_at, make_label

SPLIT_FILE = "split.json"
GT_FILE = "ground_truth.json"
ELEVATION_RANGE = (-0.5, 1.2)          # radians; stays away from the look-at singularity at the poles


def _focal_intrinsics(focal: float) -> torch.Tensor:
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _direction(yaw: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Unit vectors [N, 3]; world +y is up."""
    return np.stack([np.cos(elevation) * np.sin(yaw), np.sin(elevation), np.cos(elevation) * np.cos(yaw)], axis=-1)


def training_directions(count: int) -> np.ndarray:
    """Fibonacci spiral over the elevation band: count evenly spread unit vectors [count, 3]."""
    lo, hi = (math.sin(e) for e in ELEVATION_RANGE)
    i = np.arange(count) + 0.5
    elevation = np.arcsin(lo + (hi - lo) * i / count)               # uniform in area
    yaw = i * math.pi * (3.0 - math.sqrt(5.0))                      # golden angle
    return _direction(yaw, elevation)


def heldout_directions(count: int, seed: int) -> np.ndarray:
    """Random unit vectors [count, 3], uniform in area over the elevation band."""
    rng = np.random.default_rng([int(seed), 7])
    lo, hi = (math.sin(e) for e in ELEVATION_RANGE)
    elevation = np.arcsin(rng.uniform(lo, hi, size=count))
    yaw = rng.uniform(-math.pi, math.pi, size=count)
    return _direction(yaw, elevation)


def scene_cameras(directions: np.ndarray, radius: float, focal: float) -> torch.Tensor:
    """Labels [N, 25] of cameras at radius * directions looking at the origin."""
    origins = torch.as_tensor(directions * radius, dtype=torch.float32)
    cam2world = look_at(origins, torch.zeros(1, 3))
    return make_label(cam2world, _focal_intrinsics(focal))


def make_object(seed: int, kind: str = "360"):
    """The scene's procedural object (deterministic in seed)."""
    from training import synthetic

    dist = synthetic.CAMERA_DISTRIBUTIONS[kind]
    rng = np.random.default_rng([int(seed), 0x550])
    obj = synthetic.sample_object(rng, dist.kind, 0.5)
    return synthetic.fit_object(obj, dist.object_radius)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def generate_scene(dest, views: int = 64, heldout: int = 16, resolution: int = 64, seed: int = 0,
                   radius: float = 1.3, focal: float = 1.025390625, supersample: int = 2,
                   kind: str = "360", progress: bool = False, overwrite: bool = False) -> dict:
    """Write the scene dataset to dest (.zip or folder); an existing dest is replaced only if we
    wrote it, or with overwrite. Returns stats (dest, counts, seconds)."""
    from training import synthetic
    from training.dataset_tool import DatasetWriter, encode_png

    if views < 1 or heldout < 0 or resolution < 4:
        raise ValueError("need views >= 1, heldout >= 0 and resolution >= 4")
    if radius <= math.sqrt(3) / 2:
        raise ValueError(f"radius {radius} puts cameras inside the scene box (need > {math.sqrt(3) / 2:.3f})")
    dist = synthetic.CAMERA_DISTRIBUTIONS[kind]
    obj = make_object(seed, kind)
    background = list(dist.background)
    splits: List[Tuple[str, torch.Tensor]] = [("train", scene_cameras(training_directions(views), radius, focal)),
                                              ("heldout", scene_cameras(heldout_directions(heldout, seed), radius, focal))]
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=views + heldout, desc=f"scene {resolution}px", unit="view")
    labels, names, records = [], {"train": [], "heldout": []}, []
    intrinsics = _focal_intrinsics(focal)[None]
    try:
        with DatasetWriter(dest, overwrite=overwrite) as writer:
            for split, cams in splits:
                for i in range(cams.shape[0]):
                    cam2world = cams[i:i + 1, :16].reshape(1, 4, 4)
                    image, depth, mask = synthetic.render(obj, cam2world, intrinsics, resolution, background,
                                                          supersample)
                    name = f"{split}/img{i:08d}.png"
                    gt = f"gt/{split}/img{i:08d}.npz"
                    writer.write(name, encode_png(image))
                    writer.write(gt, _npz_bytes(depth=depth, mask=mask))
                    label = [float(v) for v in cams[i]]
                    labels.append([name, label])
                    names[split].append(name)
                    records.append(dict(image=name, gt=gt, split=split, coverage=float(mask.mean())))
                    if bar is not None:
                        bar.update(1)
            writer.write_json("dataset.json", {"labels": labels})
            writer.write_json(SPLIT_FILE, names)
            writer.write_json(GT_FILE, dict(
                version=1, generator="training.sso_scene", seed=int(seed), views=int(views), heldout=int(heldout),
                resolution=int(resolution), supersample=int(supersample), radius=float(radius), focal=float(focal),
                background=background, box_size=1.0, elevation_range=list(ELEVATION_RANGE),
                object=obj.to_dict(), images=records))
    finally:
        if bar is not None:
            bar.close()
    return dict(dest=os.fspath(dest), views=views, heldout=heldout, seconds=time.perf_counter() - start)


def main(argv=None) -> int:
    from model.cli_errors import Parser, add_debug_flag
    p = Parser(prog="python -m training.sso_scene",
                                description="Generate a multi-view scene (one object, many views, held-out views).")
    p.add_argument("--dest", required=True, help="output .zip or folder")
    p.add_argument("--views", type=int, default=64, help="training views")
    p.add_argument("--heldout", type=int, default=16, help="held-out views")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--radius", type=float, default=1.3, help="camera distance from the origin")
    p.add_argument("--focal", type=float, default=1.025390625, help="normalised focal length")
    p.add_argument("--supersample", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dest that this tool did not write")
    add_debug_flag(p)
    args = p.parse_args(argv)
    from training.synthetic import run_writer_cli
    return run_writer_cli(
        lambda: generate_scene(args.dest, args.views, args.heldout, args.resolution, args.seed, args.radius,
                               args.focal, args.supersample, progress=True, overwrite=args.overwrite),
        lambda stats: f"wrote {stats['views']} training + {stats['heldout']} held-out views to "
                      f"{stats['dest']} in {stats['seconds']:.1f} s", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
