"""EG3D datasets: a zip (stored or deflated) or a folder of images plus `dataset.json`.

Format (unchanged from the official EG3D datasets):
- `dataset.json` at the root: `{"labels": [[relative_path, [25 floats]], ...]}`; the label is the
  4x4 OpenCV cam2world flattened row-major, then the 3x3 intrinsics normalised by image size.
- every file with an image extension (as known to PIL) is a dataset image; other files (e.g.
  `ground_truth.json`, `gt/*.npz` of our synthetic datasets) are ignored.

Unlike the official loader, everything is validated when the dataset is opened and every problem
is an error naming the offending file: images without a label, labels without an image, duplicate
labels, labels of the wrong length or with non-finite values, non-square or mixed-size images,
unsupported or mixed channel counts, unreadable/corrupt files, a missing `dataset.json` and a
mismatch with a requested resolution. Nothing is silently dropped.

`xflip=True` doubles the dataset with mirrored images. The mirrored camera is the reflection of the
original across the world x = 0 plane, i.e. cam2world' = S @ cam2world @ S with
S = diag(-1, 1, 1, 1) (the same label change as the official `flip_yaw` of the EG3D preprocessing
scripts; the official *training* loader's xflip leaves labels unchanged). The principal point
and skew are mirrored too (cx' = 1 - cx, skew' = -skew), which is a no-op for centred cameras.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import PIL.Image
import torch

LABEL_FILE = "dataset.json"
CAMERA_LABEL_DIM = 25
SUPPORTED_MODES = {"L": 1, "RGB": 3, "RGBA": 4}
# validate="auto" decodes every image when the images take at most this many bytes on disk.
AUTO_FULL_VALIDATION_BYTES = 512 << 20


class DatasetError(ValueError):
    """A dataset that cannot be used as is; the message names the offending file(s)."""


def image_extensions() -> set:
    PIL.Image.init()
    return {ext.lower() for ext in PIL.Image.EXTENSION}


def _is_image(name: str, extensions: set) -> bool:
    return os.path.splitext(name)[1].lower() in extensions


def _describe(names: List[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"


def mirror_label(label: np.ndarray) -> np.ndarray:
    """Camera label(s) [..., 25] of the x-mirrored image: the camera reflected across x = 0.

    cam2world' = S cam2world S with S = diag(-1, 1, 1, 1): entries (0, j) and (i, 0), i, j != 0,
    change sign. The normalised principal point is mirrored (cx' = 1 - cx) and the skew negated.
    """
    label = np.array(label, dtype=np.float32, copy=True)
    if label.shape[-1] != CAMERA_LABEL_DIM:
        raise ValueError(f"mirror_label: a camera label has {CAMERA_LABEL_DIM} values, got {label.shape[-1]}")
    pose = label[..., :16].reshape(label.shape[:-1] + (4, 4))
    sign = np.array([-1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    pose *= sign[:, None] * sign[None, :]
    label[..., :16] = pose.reshape(label.shape[:-1] + (16,))
    label[..., 17] = -label[..., 17]                  # skew (K[0, 1])
    label[..., 18] = 1.0 - label[..., 18]             # cx (K[0, 2])
    return label


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images (uint8 CHW numpy) and float32 labels of an EG3D dataset (zip or folder).

    path: a folder or a `.zip`. resolution: required image size (None = whatever the images
    have). xflip: append x-mirrored copies (images and cameras). max_size: keep a random subset
    of at most this many images (chosen with random_seed, before xflip, as the official loader).
    label_dim: required label length (25 = EG3D camera; None = any, but the same for all).
    validate: 'full' decodes every image on open, 'header' checks only the image headers (size and
    mode; a file corrupt after its header is then reported, by name, when it is loaded),
    'auto' = 'full' up to AUTO_FULL_VALIDATION_BYTES of images, else 'header'.

    Safe in DataLoader worker processes: the zip is opened lazily in each process.
    """

    def __init__(self, path, resolution: Optional[int] = None, xflip: bool = False,
                 max_size: Optional[int] = None, random_seed: int = 0,
                 label_dim: Optional[int] = CAMERA_LABEL_DIM, validate: str = "auto"):
        self._path = os.fspath(path)
        self._zipfile = None
        self._zip_pid = None
        if validate not in ("auto", "full", "header"):
            raise ValueError(f"validate must be 'auto', 'full' or 'header', got {validate!r}")
        if os.path.isdir(self._path):
            self._type = "dir"
            all_files = set()
            for root, _dirs, files in os.walk(self._path):
                for fname in files:
                    rel = os.path.relpath(os.path.join(root, fname), self._path)
                    all_files.add(rel.replace(os.sep, "/"))
        elif os.path.isfile(self._path):
            if not zipfile.is_zipfile(self._path):
                raise DatasetError(f"{self._path}: not a folder or a zip archive")
            self._type = "zip"
            try:
                all_files = {n for n in self._get_zipfile().namelist() if not n.endswith("/")}
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"{self._path}: unreadable zip archive ({e})") from e
        else:
            raise DatasetError(f"{self._path}: no such dataset folder or zip")
        self._name = os.path.splitext(os.path.basename(self._path.rstrip("/\\")))[0]

        extensions = image_extensions()
        self._image_fnames = sorted(n for n in all_files if _is_image(n, extensions))
        if not self._image_fnames:
            raise DatasetError(f"{self._path}: no image files found")
        self._raw_labels = self._load_labels(all_files, label_dim)
        self._check_images(resolution, validate)
        self.close()                                    # reopened lazily, per process

        num = len(self._image_fnames)
        self._raw_idx = np.arange(num, dtype=np.int64)
        if max_size is not None and num > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])
        self._mirrored_labels = None
        if xflip and self.label_dim == CAMERA_LABEL_DIM:
            self._mirrored_labels = mirror_label(self._raw_labels)

    # ---------------------------------------------------------------- file access
    def _get_zipfile(self) -> zipfile.ZipFile:
        # A ZipFile shares its file offset with forked children: reopen in every process.
        if self._zipfile is None or self._zip_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self._path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == "dir":
            return open(os.path.join(self._path, fname), "rb")
        return self._get_zipfile().open(fname, "r")

    def _file_size(self, fname: str) -> int:
        if self._type == "dir":
            return os.path.getsize(os.path.join(self._path, fname))
        return self._get_zipfile().getinfo(fname).compress_size

    def _where(self, fname: str) -> str:
        return f"{self._path}/{fname}" if self._type == "dir" else f"{self._path}:{fname}"

    def close(self):
        if self._zipfile is not None and self._zip_pid == os.getpid():
            try:
                self._zipfile.close()
            except Exception:
                pass
        self._zipfile = None
        self._zip_pid = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- validation
    def _load_labels(self, all_files: set, label_dim: Optional[int]) -> np.ndarray:
        if LABEL_FILE not in all_files:
            raise DatasetError(f"{self._where(LABEL_FILE)}: missing {LABEL_FILE} (camera labels are required)")
        try:
            with self._open_file(LABEL_FILE) as f:
                data = json.loads(f.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, OSError, zipfile.BadZipFile, RecursionError) as e:
            raise DatasetError(f"{self._where(LABEL_FILE)}: unreadable JSON ({str(e)[:200]})") from None
        entries = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise DatasetError(f"{self._where(LABEL_FILE)}: expected {{\"labels\": [[path, [floats]], ...]}}")
        labels: Dict[str, list] = {}
        for i, entry in enumerate(entries):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{self._where(LABEL_FILE)}: labels[{i}] is not a [path, label] pair")
            name = entry[0].replace("\\", "/")
            if name in labels:
                raise DatasetError(f"{self._where(LABEL_FILE)}: duplicate label for {name!r}")
            labels[name] = entry[1]

        missing = [n for n in self._image_fnames if n not in labels]
        if missing:
            raise DatasetError(f"{self._where(LABEL_FILE)}: no label for {len(missing)} image(s): {_describe(missing)}")
        images = set(self._image_fnames)
        extra = sorted(n for n in labels if n not in images)
        if extra:
            raise DatasetError(f"{self._where(LABEL_FILE)}: label(s) for {len(extra)} missing image(s) "
                               f"(extra labels): {_describe(extra)}")

        rows = []
        expected = label_dim
        for name in self._image_fnames:
            value = labels[name]
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise DatasetError(f"{self._where(LABEL_FILE)}: label of {name!r} is not a flat list of numbers")
            if expected is None:
                expected = len(value)
            if len(value) != expected:
                raise DatasetError(f"{self._where(LABEL_FILE)}: label of {name!r} has {len(value)} values, "
                                   f"expected {expected}")
            if not all(math.isfinite(v) for v in value):
                raise DatasetError(f"{self._where(LABEL_FILE)}: label of {name!r} has non-finite values")
            rows.append(value)
        with np.errstate(over="ignore"):                       # overflow is reported just below
            out = np.asarray(rows, dtype=np.float32).reshape(len(rows), expected)
        bad = ~np.isfinite(out).all(axis=1)              # finite doubles overflowing float32
        if bad.any():
            name = self._image_fnames[int(np.argmax(bad))]
            raise DatasetError(f"{self._where(LABEL_FILE)}: label of {name!r} overflows float32")
        return out

    def _check_images(self, resolution: Optional[int], validate: str):
        if validate == "auto":
            total = sum(self._file_size(n) for n in self._image_fnames)
            validate = "full" if total <= AUTO_FULL_VALIDATION_BYTES else "header"
        first = None
        for name in self._image_fnames:
            try:
                with self._open_file(name) as f:
                    with PIL.Image.open(f) as img:
                        size, mode = img.size, img.mode
                        if validate == "full":
                            img.load()
            except Exception as e:                       # PIL raises many types for corrupt data
                raise DatasetError(f"{self._where(name)}: unreadable or corrupt image ({e})") from e
            if mode not in SUPPORTED_MODES:
                raise DatasetError(f"{self._where(name)}: unsupported image mode {mode!r} "
                                   f"(supported: {sorted(SUPPORTED_MODES)})")
            if size[0] != size[1]:
                raise DatasetError(f"{self._where(name)}: image is not square ({size[0]}x{size[1]})")
            if first is None:
                first = (name, size, mode)
                if resolution is not None and size[0] != resolution:
                    raise DatasetError(f"{self._where(name)}: image resolution {size[0]} does not match the "
                                       f"requested resolution {resolution}")
            elif size != first[1]:
                raise DatasetError(f"{self._where(name)}: image size {size[0]}x{size[1]} differs from "
                                   f"{first[1][0]}x{first[1][1]} of {first[0]!r} (mixed sizes)")
            elif SUPPORTED_MODES[mode] != SUPPORTED_MODES[first[2]]:
                raise DatasetError(f"{self._where(name)}: image mode {mode} differs from {first[2]} of "
                                   f"{first[0]!r} (mixed channel counts)")
        self._raw_shape = [len(self._image_fnames), SUPPORTED_MODES[first[2]], first[1][1], first[1][0]]

    # ---------------------------------------------------------------- items
    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        name = self._image_fnames[raw_idx]
        try:
            with self._open_file(name) as f:
                with PIL.Image.open(f) as img:
                    image = np.asarray(img)
        except Exception as e:
            raise DatasetError(f"{self._where(name)}: unreadable or corrupt image ({e})") from e
        if image.ndim == 2:
            image = image[:, :, None]
        image = image.transpose(2, 0, 1)
        if list(image.shape) != self._raw_shape[1:] or image.dtype != np.uint8:
            raise DatasetError(f"{self._where(name)}: decoded image {image.dtype} {list(image.shape)} differs from "
                               f"the dataset's uint8 {self._raw_shape[1:]}")
        return image

    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        raw = int(self._raw_idx[idx])
        if self._xflip[idx] and self._mirrored_labels is not None:
            return self._mirrored_labels[raw].copy()
        return self._raw_labels[raw].copy()

    def get_details(self, idx: int) -> dict:
        raw = int(self._raw_idx[idx])
        return dict(raw_idx=raw, fname=self._image_fnames[raw], xflip=bool(self._xflip[idx]),
                    raw_label=self._raw_labels[raw].copy())

    # ---------------------------------------------------------------- properties
    @property
    def labels(self) -> np.ndarray:
        """Labels of all items [len(self), label_dim] (mirrored cameras for the xflip half)."""
        out = self._raw_labels[self._raw_idx].copy()
        if self._mirrored_labels is not None:
            flip = self._xflip.astype(bool)
            out[flip] = self._mirrored_labels[self._raw_idx[flip]]
        return out

    @property
    def raw_labels(self) -> np.ndarray:
        return self._raw_labels.copy()

    @property
    def image_fnames(self) -> List[str]:
        return list(self._image_fnames)

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        return self._path

    @property
    def image_shape(self) -> List[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self._raw_shape[1]

    @property
    def resolution(self) -> int:
        return self._raw_shape[2]

    @property
    def label_shape(self) -> List[int]:
        return [self._raw_labels.shape[1]]

    @property
    def label_dim(self) -> int:
        return int(self._raw_labels.shape[1])

    @property
    def has_labels(self) -> bool:
        return self.label_dim > 0

    @property
    def has_onehot_labels(self) -> bool:
        return False

    def get_label_std(self) -> np.ndarray:
        return self._raw_labels.std(0)
