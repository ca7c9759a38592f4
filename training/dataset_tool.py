"""Write EG3D datasets (zip or folder + dataset.json) from images and a camera file; summarise one.

    python -m training.dataset_tool --source IMAGES_DIR --cameras CAMERAS.json --dest out.zip [--resolution N]
    python -m training.dataset_tool --summary out.zip

The camera file is JSON mapping an image's path (relative to --source, '/' separators; a bare file
name is accepted when it is unique) to either 25 floats (the EG3D label) or an object
`{"cam2world": 4x4 or 16 floats, "intrinsics": 3x3 or 9 floats}` (`"pose"` is accepted for
`"cam2world"`). An official `dataset.json` (`{"labels": [[path, label], ...]}`) is accepted too.
Intrinsics with cx or cy above 1.5 are taken to be in pixels and are normalised by the source
image size. Images are written as RGB PNGs under their source path (extension `.png`); with
--resolution square images are resized (Lanczos), which keeps normalised intrinsics valid.
The output is written to a temporary file first and renamed, so an interrupted run leaves nothing.
"""
from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image

from model.cli_errors import Parser, add_debug_flag, run_guarded
from model.output import AtomicOutput, check_replace
from training.dataset import CAMERA_LABEL_DIM, LABEL_FILE, DatasetError, ImageFolderDataset, image_extensions


# ------------------------------------------------------------------------------------------------
# Atomic writers shared with training/synthetic.py

MIN_RESOLUTION, MAX_RESOLUTION = 4, 8192
MAX_CAMERA_VALUE = 1e6                      # no pose or normalised intrinsic is anywhere near this
DATASET_MARKER = ".eg3d_dataset"          # in a folder we wrote; a zip we wrote has it as its comment


class DatasetWriter:
    """Writes files into a zip (ZIP_STORED) or a folder at a temporary path; `commit` renames it.

    Use as a context manager: leaving the block with an exception (Ctrl-C included) removes the
    temporary output, so a partial dataset never appears at `dest`. An existing `dest` is
    replaced only if it is a dataset we wrote (`is_own_dataset`) or an empty folder, or with
    overwrite=True; a `dest` that is or contains one of `protect` (the inputs) never is.
    """

    def __init__(self, dest, overwrite: bool = False, protect: Sequence = ()):
        self.dest = os.path.abspath(os.fspath(dest))
        self.is_zip = self.dest.lower().endswith(".zip")
        if os.path.isdir(self.dest) and self.is_zip:
            raise DatasetError(f"{self.dest}: is a folder")
        check_replace(self.dest, overwrite, is_own_dataset, protect=protect, what="dataset")
        self._out = AtomicOutput(self.dest, directory=not self.is_zip)
        self.tmp = self._out.tmp
        if self.is_zip:
            self._zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED)
            self._zip.comment = DATASET_MARKER.encode()
        else:
            self._zip = None
        self._names = set()
        self._done = False

    def write(self, name: str, data: bytes):
        name = name.replace("\\", "/").lstrip("/")
        if name in self._names or name == DATASET_MARKER:
            raise ValueError(f"{name!r} written twice")
        self._names.add(name)
        if self._zip is not None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))   # reproducible bytes
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            self._zip.writestr(info, data)
        else:
            path = os.path.join(self.tmp, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def write_json(self, name: str, obj):
        self.write(name, json.dumps(obj, indent=1).encode("utf-8"))

    def commit(self):
        try:
            if self._zip is not None:
                self._zip.close()
                self._zip = None
            else:
                with open(os.path.join(self.tmp, DATASET_MARKER), "w") as f:
                    json.dump({"written_by": "eg3d toolkit dataset writer (a later run may replace this folder)",
                               "files": sorted(self._names)}, f, indent=0)
        except BaseException:
            self.abort()
            raise
        self._out.commit()
        self._done = True

    def abort(self):
        if self._done:
            return
        if self._zip is not None:
            try:
                self._zip.close()
            except Exception:
                pass
            self._zip = None
        self._out.abort()
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.abort()
        return False


def is_own_dataset(path) -> bool:
    """Whether `path` is a dataset `DatasetWriter` wrote and nothing was added to it since: a zip
    with our comment, or a folder whose marker file lists every file in it."""
    path = os.fspath(path)
    try:
        if os.path.isfile(path):
            with zipfile.ZipFile(path) as z:
                return z.comment == DATASET_MARKER.encode()
        with open(os.path.join(path, DATASET_MARKER), "rb") as f:
            allowed = {DATASET_MARKER} | {str(name) for name in json.load(f)["files"]}
        for root, dirs, files in os.walk(path):
            for fname in files:
                rel = os.path.relpath(os.path.join(root, fname), path).replace(os.sep, "/")
                if rel not in allowed:
                    return False
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
        return False


def encode_png(image: np.ndarray) -> bytes:
    """uint8 HWC (or HW) array -> PNG bytes (deterministic)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Camera files

def _as_matrix(value, shape: Tuple[int, int], what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != shape[0] * shape[1]:
        raise ValueError(f"{what} must have {shape[0] * shape[1]} values, got {arr.size}")
    return arr.reshape(shape)


def parse_camera(value, image_size: Optional[Tuple[int, int]] = None, where: str = "camera") -> List[float]:
    """One camera entry (25 floats or {cam2world, intrinsics}) -> the 25-float EG3D label."""
    try:
        if isinstance(value, dict):
            pose = value.get("cam2world", value.get("pose"))
            if pose is None or "intrinsics" not in value:
                raise ValueError("expected keys 'cam2world' (or 'pose') and 'intrinsics'")
            pose = _as_matrix(pose, (4, 4), "cam2world")
            intr = _as_matrix(value["intrinsics"], (3, 3), "intrinsics").copy()
            if (intr[0, 2] > 1.5 or intr[1, 2] > 1.5) and image_size is not None:
                width, height = image_size
                intr[0] /= width                               # pixel units -> normalised
                intr[1] /= height
            label = np.concatenate([pose.reshape(-1), intr.reshape(-1)])
        elif isinstance(value, (list, tuple)):
            label = np.asarray(value, dtype=np.float64).reshape(-1)
            if label.size != CAMERA_LABEL_DIM:
                raise ValueError(f"expected {CAMERA_LABEL_DIM} values, got {label.size}")
        else:
            raise ValueError(f"expected a list of {CAMERA_LABEL_DIM} floats or an object, got {type(value).__name__}")
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise DatasetError(f"{where}: {str(e)[:200]}") from None
    if not np.all(np.isfinite(label)):
        raise DatasetError(f"{where}: non-finite values")
    if np.abs(label).max() > MAX_CAMERA_VALUE:
        raise DatasetError(f"{where}: values beyond +-{MAX_CAMERA_VALUE:g} (not a camera in world units)")
    return [float(v) for v in label]


def load_cameras(path) -> Dict[str, object]:
    """A camera file: {image path: camera} or an official dataset.json; errors name the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the camera file ({e})") from None
    except (ValueError, RecursionError) as e:      # JSONDecodeError, or nesting too deep to parse
        raise DatasetError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(data, dict) and isinstance(data.get("labels"), list):
        entries = data["labels"]
        if not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in entries):
            raise DatasetError(f"{path}: 'labels' must be a list of [image path, camera] pairs")
        data = {entry[0]: entry[1] for entry in entries}
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object mapping image paths to cameras")
    return {str(k).replace("\\", "/"): v for k, v in data.items()}


def _list_images(source: str) -> List[str]:
    extensions = image_extensions()
    out = []
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for fname in files:
            if os.path.splitext(fname)[1].lower() in extensions:
                out.append(os.path.relpath(os.path.join(root, fname), source).replace(os.sep, "/"))
    return sorted(out)


def _match_cameras(images: List[str], cameras: Dict[str, object], cameras_path: str) -> Dict[str, object]:
    by_base: Dict[str, List[str]] = {}
    for rel in images:
        by_base.setdefault(os.path.basename(rel), []).append(rel)
    matched: Dict[str, object] = {}
    for key, value in cameras.items():
        if key in by_base.get(os.path.basename(key), []):
            target = key
        elif "/" not in key and len(by_base.get(key, [])) == 1:
            target = by_base[key][0]
        else:
            hint = " (ambiguous bare name)" if len(by_base.get(key, [])) > 1 else ""
            raise DatasetError(f"{cameras_path}: camera for {key!r} but no such image in the source{hint}")
        if target in matched:
            raise DatasetError(f"{cameras_path}: two cameras for image {target!r}")
        matched[target] = value
    missing = [rel for rel in images if rel not in matched]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{cameras_path}: no camera for {len(missing)} image(s): {shown}")
    return matched


def convert_dataset(source, cameras, dest, resolution: Optional[int] = None, overwrite: bool = False,
                    progress: bool = False) -> int:
    """Write an EG3D dataset at `dest` (.zip or folder) from the images under `source` and a camera
    file; returns the number of images. Errors name the offending file; nothing is dropped. An
    existing `dest` is replaced only if we wrote it (or overwrite), never if it holds the inputs."""
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise DatasetError(f"{source}: source folder not found")
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise DatasetError(f"--resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}")
    check_replace(os.path.abspath(os.fspath(dest)), overwrite, is_own_dataset, protect=(source, cameras),
                  what="dataset")
    images = _list_images(source)
    if not images:
        raise DatasetError(f"{source}: no image files found")
    matched = _match_cameras(images, load_cameras(cameras), os.fspath(cameras))
    out_names = {}
    for rel in images:
        name = os.path.splitext(rel)[0] + ".png"
        if name in out_names:
            raise DatasetError(f"{source}: {rel!r} and {out_names[name]!r} would both be written as {name!r}")
        out_names[name] = rel

    iterator: Iterable = images
    if progress:
        from tqdm import tqdm
        iterator = tqdm(images, desc="images", unit="img")
    labels = []
    size = None
    with DatasetWriter(dest, overwrite=overwrite, protect=(source, cameras)) as writer:
        for rel in iterator:
            where = os.path.join(source, rel)
            try:
                with PIL.Image.open(where) as img:
                    img.load()
                    img = img.convert("RGB")
            except Exception as e:
                raise DatasetError(f"{where}: unreadable or corrupt image ({e})") from e
            label = parse_camera(matched[rel], img.size, where=f"{cameras}: camera of {rel!r}")
            if img.size[0] != img.size[1]:
                raise DatasetError(f"{where}: image is not square ({img.size[0]}x{img.size[1]})")
            if resolution is not None and img.size[0] != resolution:
                img = img.resize((resolution, resolution), PIL.Image.LANCZOS)
            if size is None:
                size = (img.size, rel)
            elif img.size != size[0]:
                raise DatasetError(f"{where}: image size {img.size[0]}x{img.size[1]} differs from "
                                   f"{size[0][0]}x{size[0][1]} of {size[1]!r} (mixed sizes; pass --resolution)")
            name = os.path.splitext(rel)[0] + ".png"
            writer.write(name, encode_png(np.asarray(img)))
            labels.append([name, label])
        writer.write_json(LABEL_FILE, {"labels": labels})
    return len(labels)


# ------------------------------------------------------------------------------------------------
# Summary

def _histogram(values: np.ndarray, bins: int = 12, width: int = 40) -> List[str]:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-3:
        lo, hi = lo - 0.05, hi + 0.05
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)
    lines = []
    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        bar = "#" * int(round(width * count / top))
        lines.append(f"  [{a:+6.2f}, {b:+6.2f})  {count:6d}  {bar}")
    return lines


def summary(path, print_fn=print) -> dict:
    """Open the dataset at `path`, print count, resolution, label dim and yaw/pitch histograms;
    returns the numbers as a dict (yaw, pitch, radius arrays in radians / world units)."""
    import torch
    from model.camera import yaw_pitch_radius

    ds = ImageFolderDataset(path, validate="header")
    labels = ds.raw_labels
    info = dict(name=ds.name, count=len(ds), resolution=ds.resolution, num_channels=ds.num_channels,
                label_dim=ds.label_dim)
    lines = [f"dataset     {path}",
             f"images      {len(ds)}",
             f"resolution  {ds.resolution}x{ds.resolution}, {ds.num_channels} channel(s)",
             f"label dim   {ds.label_dim}"]
    if ds.label_dim == CAMERA_LABEL_DIM:
        cam2world = torch.from_numpy(labels[:, :16].reshape(-1, 4, 4).astype(np.float32))
        yaw, pitch, radius = (t.numpy() for t in yaw_pitch_radius(cam2world))
        focal = labels[:, 16]
        info.update(yaw=yaw, pitch=pitch, radius=radius, focal=focal)
        lines.append(f"radius      {radius.min():.4f} .. {radius.max():.4f} (mean {radius.mean():.4f})")
        lines.append(f"focal       {focal.min():.4f} .. {focal.max():.4f} (normalised)")
        lines.append(f"yaw (rad; pi/2 = frontal)  mean {yaw.mean():+.3f}  std {yaw.std():.3f}")
        lines += _histogram(yaw)
        lines.append(f"pitch (rad; pi/2 = level, < pi/2 = camera above)  mean {pitch.mean():+.3f}  std {pitch.std():.3f}")
        lines += _histogram(pitch)
    if print_fn is not None:
        print_fn("\n".join(lines))
    return info


def main(argv=None) -> int:
    parser = Parser(prog="python -m training.dataset_tool", description=__doc__.split("\n")[0])
    parser.add_argument("--source", help="folder of images")
    parser.add_argument("--cameras", help="camera JSON file")
    parser.add_argument("--dest", help="output .zip or folder")
    parser.add_argument("--resolution", type=int, default=None, help="resize square images to NxN")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --dest that this tool did not write (never one holding "
                             "--source or --cameras)")
    parser.add_argument("--summary", metavar="DATASET", help="print a summary of an existing dataset and exit")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if not args.summary and not (args.source and args.cameras and args.dest):
        parser.error("--source, --cameras and --dest are required (or --summary DATASET)")

    def body() -> int:
        if args.summary:
            summary(args.summary)
            return 0
        count = convert_dataset(args.source, args.cameras, args.dest, resolution=args.resolution,
                                overwrite=args.overwrite, progress=True)
        print(f"wrote {count} images to {args.dest}")
        return 0
    return run_guarded(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
