"""Display helpers: rendered tensors -> what the viewer shows (colour maps, robust ranges), and
the view state in PNG metadata."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .schema import PNG_STATE_KEY, StateError, ViewerState


def _turbo(x: np.ndarray) -> np.ndarray:
    """Google's Turbo colormap (polynomial approximation), x in [0, 1] -> float RGB in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    kr = np.array([0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943])
    kg = np.array([0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604])
    kb = np.array([0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973])
    powers = x ** np.arange(6)
    return np.clip(np.stack([powers @ kr, powers @ kg, powers @ kb], axis=-1), 0, 1)


def robust_range(values, weights=None, percentiles: Tuple[float, float] = (1.0, 99.0),
                 max_samples: int = 4_000_000) -> Tuple[float, float]:
    """A robust colour range (lo, hi): the 1st..99th percentile of the finite values, over the
    pixels whose weight (opacity) is > 0.5 when more than 16 are, else over all of them.

    values / weights: arrays or tensors of any shape, or lists of them (pooled; e.g. the depth
    and opacity of every cell of an export's first frame). Used by the viewer's auto depth and
    feature ranges and by the exports, which measure it once and keep it for the whole video.
    """
    vals = values if isinstance(values, (list, tuple)) else [values]
    wts = weights if isinstance(weights, (list, tuple)) else [weights] * len(vals)
    pooled = []
    for v, w in zip(vals, wts):
        v = _as_numpy(v).ravel()
        if w is not None:
            keep = _as_numpy(w).ravel() > 0.5
            if int(keep.sum()) > 16:
                v = v[keep]
        pooled.append(v[np.isfinite(v)])
    v = np.concatenate(pooled) if pooled else np.zeros(0, np.float32)
    if v.size == 0:
        return 0.0, 1.0
    if v.size > max_samples:
        v = v[np.random.RandomState(0).choice(v.size, max_samples, replace=False)]
    lo, hi = np.percentile(v.astype(np.float64), list(percentiles))
    if not hi > lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def feature_channel(render: Dict[str, torch.Tensor], state: ViewerState) -> torch.Tensor:
    """The feature channel the state shows, [H, W] (clamped to the channels there are)."""
    feats = render["feature_image"]
    ch = min(max(int(state.render.feature_channel), 0), feats.shape[1] - 1)
    return feats[0, ch]


def image_to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> uint8 [H, W, 3], as the official scripts convert."""
    x = (img[0].detach().float().permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.cpu().numpy()


def to_display_rgb(render: Dict[str, torch.Tensor], state: ViewerState,
                   size: Optional[int] = None) -> np.ndarray:
    """What the viewer shows for the state's render type, as uint8 [H, W, 3].

    final/raw: the image; depth: Turbo colormap (near = red, far = blue; `state.depth_range` or a
    robust auto range over the opaque pixels), faded to black where the opacity is low; alpha:
    grey; feature: one channel of the feature image, Turbo over `state.feature_range` or its robust
    range (exports fix it from the first frame, so videos do not flicker). `size` resizes
    (bilinear) to size x size.
    """
    rs = state.render
    kind = rs.type
    if kind == "final":
        key = "image" if "image" in render else "image_raw"
        rgb = image_to_uint8(render[key])
    elif kind == "raw":
        rgb = image_to_uint8(render["image_raw"])
    elif kind == "alpha":
        a = render["image_alpha"][0, 0].detach().float().clamp(0, 1).cpu().numpy()
        rgb = np.repeat((a * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    elif kind == "depth":
        d = render["image_depth"][0, 0].detach().float().cpu().numpy()
        a = render["image_alpha"][0, 0].detach().float().clamp(0, 1).cpu().numpy() \
            if "image_alpha" in render else np.ones_like(d)
        near, far = rs.depth_range if rs.depth_range is not None else robust_range(d, a)
        col = _turbo((far - d) / (far - near))
        col = col * a[..., None]
        rgb = (col * 255 + 0.5).astype(np.uint8)
    elif kind == "feature":
        f = feature_channel(render, state).detach().float().cpu().numpy()
        lo, hi = rs.feature_range if rs.feature_range is not None else robust_range(f)
        rgb = (_turbo((f - lo) / (hi - lo)) * 255 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"unknown render type {kind!r}")
    if size is not None and (rgb.shape[0] != size or rgb.shape[1] != size):
        from PIL import Image
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(rgb)


# ------------------------------------------------------------------------------------------------
# PNG metadata (the PNG itself is written by `app.export.save_png`, atomically)


def png_state_text(state: ViewerState) -> Dict[str, str]:
    """The tEXt chunk that makes a PNG reproduce its view (`--state IMAGE.png`); a state with a bad
    number raises StateError here, so no PNG is written with it."""
    return {PNG_STATE_KEY: state.to_json(indent=None)}


def state_from_png(path) -> Optional[ViewerState]:
    """The state in a PNG's metadata, None if it has none; StateError for a bad one."""
    from PIL import Image
    with Image.open(str(path)) as im:
        if im.format != "PNG":
            raise StateError(f"not a PNG ({im.format})")
        text = getattr(im, "text", {}).get(PNG_STATE_KEY)
    return None if text is None else ViewerState.from_json(text)


def state_from_png_safe(path) -> Optional[ViewerState]:
    """`state_from_png`, but None for any unreadable file (drag-and-drop sniffing)."""
    try:
        return state_from_png(path)
    except Exception:  # noqa: BLE001 - sniffing only; loading reports the error
        return None
