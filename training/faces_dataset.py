"""An EG3D dataset from a folder of face photos: `python -m training.dataset_tool --faces PHOTOS/ --dest D.zip`.

Each photo goes through `model.faces.align` (MediaPipe landmarks, FFHQ-style crop, PnP head
pose); the crop (512 px, or --resolution) is written as a PNG and its look-at camera as the
25-float label in dataset.json. Photos without a detectable face are skipped and listed; the
output is written atomically by `DatasetWriter`.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

import numpy as np
import PIL.Image

from model import camera as cam
from model import faces
from training.dataset import LABEL_FILE, DatasetError
from training.dataset_tool import DatasetWriter, _list_images, encode_png


def build_face_dataset(photos, dest, resolution: Optional[int] = None, overwrite: bool = False,
                       progress: bool = False, radius: float = cam.DEFAULT_RADIUS, pivot=cam.DEFAULT_PIVOT,
                       fov_degrees: float = cam.DEFAULT_FOV_DEG,
                       log: Callable[[str], None] = print) -> Tuple[int, List[str]]:
    """Write the dataset; returns (images written, photos skipped as 'name: reason')."""
    photos = os.fspath(photos)
    if not os.path.isdir(photos):
        raise DatasetError(f"{photos}: photo folder not found")
    names = _list_images(photos)
    if not names:
        raise DatasetError(f"{photos}: no image files found")
    cfg = faces.FaceAlignConfig(size=resolution or faces.FaceAlignConfig.size)
    iterator = names
    if progress:
        from tqdm import tqdm
        iterator = tqdm(names, desc="faces", unit="photo")
    labels, skipped = [], []
    with DatasetWriter(dest, overwrite=overwrite, protect=(photos,)) as writer:
        for rel in iterator:
            where = os.path.join(photos, rel)
            try:
                with PIL.Image.open(where) as img:
                    rgb = np.asarray(img.convert("RGB"))
            except Exception as exc:
                raise DatasetError(f"{where}: unreadable or corrupt image ({exc})") from exc
            try:
                face = faces.align(rgb, cfg, radius=radius, pivot=pivot, fov_degrees=fov_degrees)
            except faces.FaceError as exc:
                if "MediaPipe" in str(exc):
                    raise DatasetError(str(exc)) from None
                skipped.append(f"{rel}: {exc}")
                continue
            name = os.path.splitext(rel)[0] + ".png"
            writer.write(name, encode_png(face.crop))
            labels.append([name, [float(v) for v in face.label]])
        if not labels:
            raise DatasetError(f"{photos}: no face found in any of the {len(names)} photos")
        writer.write_json(LABEL_FILE, {"labels": labels})
    for line in skipped:
        log(f"skipped {line}")
    return len(labels), skipped
