"""Display helpers: rendered tensors -> what the viewer shows (colour maps, robust ranges), the
inspection views (one channel, PCA to RGB, a channel grid, the tri-planes side by side), and the
view state in PNG metadata. The viewer's render process and the exports both call these.

Normalisation of the inspection views (documented once, here):
- one channel: x -> Turbo((x - lo) / (hi - lo)) clipped to [0, 1], with (lo, hi) the given range
  or `robust_range(x)` (1st..99th percentile of the finite values); non-finite pixels are black;
- PCA: `model.introspect.PCAProjection` (3 principal components, each mapped by its 1st..99th
  percentile to [0, 1]), fitted once per layer and latent by the caller;
- grid: the first N channels, each normalised as "one channel" by its own robust range, in a
  ceil(sqrt(N))-column grid with `GRID_GAP` black pixels between cells;
- planes: the three planes left to right (plane 0, 1, 2 as `plane_labels` names them) with
  `PLANES_GAP` black columns between them; one channel shares one robust range over the three.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

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
# inspection views: layers and tri-planes

GRID_GAP = 1
PLANES_GAP = 4


def normalise(x, value_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """[H, W] -> float [H, W] in [0, 1] over value_range (default: its robust range); NaN stays NaN."""
    x = _as_numpy(x)
    lo, hi = value_range if value_range is not None else robust_range(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def colour_channel(x, value_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """One channel [H, W] -> uint8 [H, W, 3]: Turbo over value_range or the robust range."""
    t = normalise(x, value_range)
    finite = np.isfinite(t)
    rgb = (_turbo(np.where(finite, t, 0.0)) * 255 + 0.5).astype(np.uint8)
    rgb[~finite] = 0
    return rgb


def grid_shape(count: int) -> Tuple[int, int]:
    """(columns, rows) of a grid of `count` cells."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return cols, max(1, math.ceil(count / cols))


def channel_grid(image, count: int) -> np.ndarray:
    """The first `count` channels of image [C, H, W], each on its own robust range -> uint8 grid."""
    image = _as_numpy(image)
    n = max(1, min(int(count), image.shape[0]))
    cols, rows = grid_shape(n)
    _, h, w = image.shape
    out = np.zeros((rows * h + (rows - 1) * GRID_GAP, cols * w + (cols - 1) * GRID_GAP, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + GRID_GAP):r * (h + GRID_GAP) + h, c * (w + GRID_GAP):c * (w + GRID_GAP) + w] = \
            colour_channel(image[i])
    return out


def pca_rgb(image, pca) -> np.ndarray:
    """image [C, H, W] through a fitted `PCAProjection` -> uint8 [H, W, 3]."""
    x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image, np.float32))
    return (pca.apply(x.float()).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def inspect_rgb(image, mode: str, channel: int = 0, grid: int = 16,
                value_range: Optional[Sequence[float]] = None, pca=None) -> np.ndarray:
    """A layer image [C, H, W] as the Layers panel shows it: mode 'channel' (clamped to the
    channels there are), 'pca' (needs `pca`) or 'grid' -> uint8 [H', W', 3]."""
    if mode == "channel":
        ch = min(max(int(channel), 0), image.shape[0] - 1)
        return colour_channel(image[ch], value_range)
    if mode == "pca":
        if pca is None:
            raise ValueError("the PCA view needs a fitted PCAProjection")
        return pca_rgb(image, pca)
    if mode == "grid":
        return channel_grid(image, grid)
    raise ValueError(f"unknown view mode {mode!r}")


def planes_side_by_side(planes) -> torch.Tensor:
    """planes [B, 3, C, H, W] (batch element 0) -> [C, H, 3 W + 2 PLANES_GAP], NaN in the gaps."""
    p = planes[0].detach().float().cpu()
    _, c, h, w = p.shape
    gap = torch.full((c, h, PLANES_GAP), float("nan"))
    return torch.cat([p[0], gap, p[1], gap, p[2]], dim=-1)


def planes_rgb(planes, mode: str = "channel", channel: int = 0, pca=None,
               value_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """The Tri-planes view: uint8 [H, 3 W + 2 PLANES_GAP, 3]; 'pca' needs `pca` fitted on the
    three planes (`fit_planes_pca`)."""
    side = planes_side_by_side(planes)
    if mode == "channel":
        ch = min(max(int(channel), 0), side.shape[0] - 1)
        return colour_channel(side[ch], value_range)
    if mode != "pca":
        raise ValueError(f"unknown planes view mode {mode!r}")
    w = planes.shape[-1]
    rgb = np.zeros((*side.shape[1:], 3), np.uint8)
    for k in range(3):
        x0 = k * (w + PLANES_GAP)
        rgb[:, x0:x0 + w] = pca_rgb(planes[0, k], pca)
    return rgb


def fit_planes_pca(planes):
    """One `PCAProjection` over the pixels of all three planes [B, 3, C, H, W]."""
    from model.introspect import PCAProjection
    p = planes[0].detach().float().cpu()
    return PCAProjection.fit(p.permute(1, 2, 0, 3).reshape(p.shape[1], p.shape[2], -1))


def plane_pixels(points, plane_axes: str, box_warp: float, height: int, width: int) -> np.ndarray:
    """World points [N, 3] -> their (column, row) on each plane as the sampler reads them,
    [3, N, 2] (grid_sample, align_corners=False)."""
    from model.triplane import project_points
    g = project_points(torch.as_tensor(points, dtype=torch.float32)[None], box_warp, plane_axes)[0]
    size = torch.tensor([width, height], dtype=torch.float32)
    return (((g + 1) * size - 1) / 2).numpy()


def draw_plane_points(rgb: np.ndarray, pixels: np.ndarray, colour, height: int, width: int) -> None:
    """Mark plane pixels [3, N, 2] (from `plane_pixels`) on a `planes_rgb` image, in place."""
    for k in range(3):
        cols = np.rint(pixels[k, :, 0]).astype(np.int64)
        rows = np.rint(pixels[k, :, 1]).astype(np.int64)
        keep = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        rgb[rows[keep], cols[keep] + k * (width + PLANES_GAP)] = colour


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
