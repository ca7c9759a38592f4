"""The cameras of a dataset (its dataset.json labels) as yaw / pitch, for the pose plot."""
from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import torch

from model import camera

MAX_POSES = 20000


def read_dataset_poses(path: str, limit: int = MAX_POSES) -> np.ndarray:
    """Camera yaw/pitch (degrees from frontal, state convention) of a dataset's labels.

    `path` is a dataset zip or folder with the official `dataset.json`
    ({"labels": [[filename, [25 floats]], ...]}), or a dataset.json itself. Returns [N, 2]
    (subsampled evenly to at most `limit` points).
    """
    if os.path.isdir(path):
        fname = os.path.join(path, "dataset.json")
        if not os.path.isfile(fname):
            raise FileNotFoundError(f"{path}: no dataset.json in the folder")
        with open(fname, "r", encoding="utf-8") as f:
            meta = json.load(f)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("dataset.json")]
            if not names:
                raise FileNotFoundError(f"{path}: no dataset.json in the zip")
            meta = json.loads(z.read(min(names, key=len)).decode("utf-8"))
    else:
        with open(path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not labels:
        raise ValueError(f"{path}: dataset.json has no camera labels")
    if isinstance(labels, dict):
        labels = list(labels.items())
    arr = np.asarray([lab[1] for lab in labels if lab is not None and lab[1] is not None],
                     dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] < 16:
        raise ValueError(f"{path}: labels are not 25-d camera labels (shape {arr.shape})")
    if len(arr) > limit:
        arr = arr[np.linspace(0, len(arr) - 1, limit).astype(np.int64)]
    yaw, pitch, _ = camera.yaw_pitch_radius(torch.from_numpy(arr[:, :16]).reshape(-1, 4, 4))
    yaw_deg = (yaw.numpy() - camera.FRONTAL) * 180 / math.pi
    yaw_deg = (yaw_deg + 180) % 360 - 180
    pitch_deg = (pitch.numpy() - camera.FRONTAL) * 180 / math.pi
    return np.stack([yaw_deg, pitch_deg], axis=1).astype(np.float64)
