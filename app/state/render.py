"""Render helpers: a view state -> camera labels, ws, tri-planes (cached) and `G.render`'s images.

The same functions run in the viewer's render worker and in the exports, so a saved view is
reproduced exactly. Every model is a `model.interface.Renderable`.
"""
from __future__ import annotations

import math
import os
import time
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from model import camera as cam
from model.device import module_device

from .schema import MAX_SEED, StateError, ViewerState

PLANES_CACHE_SIZE = 4


# ------------------------------------------------------------------------------------------------
# cameras


def model_camera_defaults(G=None) -> Dict[str, Any]:
    """The model's average camera (radius, pivot, fov from cfg.rendering); without a model the
    FFHQ-style defaults of `model.camera`."""
    if G is None:
        return dict(radius=cam.DEFAULT_RADIUS, pivot=list(cam.DEFAULT_PIVOT), fov=cam.DEFAULT_FOV_DEG)
    r = G.cfg.rendering
    return dict(radius=float(r.avg_camera_radius), pivot=[float(v) for v in r.avg_camera_pivot],
                fov=float(r.avg_camera_fov))


def resolved_camera(state: ViewerState, G=None) -> Dict[str, Any]:
    """The render camera with the model's defaults filled in, angles in degrees."""
    d = model_camera_defaults(G)
    c = state.camera
    return dict(yaw=c.yaw, pitch=c.pitch,
                radius=d["radius"] if c.radius is None else float(c.radius),
                pivot=d["pivot"] if c.pivot is None else [float(v) for v in c.pivot],
                fov=d["fov"] if c.fov is None else float(c.fov))


def pose_label(G, yaw_deg: float, pitch_deg: float, radius: Optional[float] = None,
               pivot: Optional[Sequence[float]] = None, fov: Optional[float] = None) -> torch.Tensor:
    """Label [1, 25] of a look-at camera, angles in degrees from frontal; None = the model's."""
    d = model_camera_defaults(G)
    return cam.orbit_label(cam.FRONTAL + math.radians(yaw_deg), cam.FRONTAL + math.radians(pitch_deg),
                           d["radius"] if radius is None else radius,
                           d["pivot"] if pivot is None else list(pivot),
                           fov_degrees=d["fov"] if fov is None else fov, device=module_device(G))


def camera_label(state: ViewerState, G) -> torch.Tensor:
    """The render camera's label [1, 25]."""
    c = resolved_camera(state, G)
    return pose_label(G, c["yaw"], c["pitch"], c["radius"], c["pivot"], c["fov"])


def conditioning_pose(state: ViewerState) -> Optional[tuple]:
    """(yaw, pitch) in degrees of the conditioning pose, or None when it follows the camera."""
    cond = state.conditioning
    if cond.mode == "camera":
        return None
    if cond.mode == "custom":
        return (cond.yaw, cond.pitch)
    return (0.0, 0.0)


def conditioning_label(state: ViewerState, G) -> torch.Tensor:
    """The label [1, 25] the mapping network is conditioned on: 'frontal' / 'custom' use the
    model's average radius, pivot and fov (as the official gen_samples.py); 'camera' the render
    camera's label."""
    pose = conditioning_pose(state)
    if pose is None:
        return camera_label(state, G)
    return pose_label(G, pose[0], pose[1])


# ------------------------------------------------------------------------------------------------
# latents


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """[1, z_dim] float64, as the official scripts draw it."""
    return np.random.RandomState(int(seed) % (MAX_SEED + 1)).randn(1, z_dim)


def ws_for_seed(G, seed: int, c: torch.Tensor, psi: float, cutoff: Optional[int]) -> torch.Tensor:
    z = torch.from_numpy(z_from_seed(seed, G.z_dim)).to(device=c.device, dtype=torch.float32)
    return G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)


_PROJECTED: Dict[tuple, tuple] = {}       # (path, size, mtime_ns) -> (sha256, ws [1, num_ws, w_dim])


def projection_ref(path) -> Optional[tuple]:
    """(absolute path, SHA-256) of a projection file, or None for any other file: what a latent
    section records to reference it."""
    from model.projection import is_projection
    if not is_projection(path):
        return None
    path = os.path.abspath(str(path))
    return path, _projection_file(path)[0]


def _projection_file(path: str) -> tuple:
    """(sha256, ws) of a projection file, read once per file version (size, mtime)."""
    from safetensors import safe_open
    from model.projection import file_sha256
    try:
        st = os.stat(path)
    except OSError:
        raise StateError(f"viewer state: latent.projection {path}: no such file") from None
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _PROJECTED:
        try:
            with safe_open(path, framework="pt") as f:
                ws = f.get_tensor("ws").float()
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise StateError(f"viewer state: latent.projection {path}: not a projection file ({exc})") from None
        _PROJECTED.clear()                   # one file version at a time is what a view needs
        _PROJECTED[key] = (file_sha256(path), ws)
    return _PROJECTED[key]


def projected_ws(G, state: ViewerState) -> torch.Tensor:
    """The projection's ws [1, num_ws, w_dim] of the state's latent section, after checking the
    file is the one the state references (its SHA-256) and fits G."""
    lat = state.latent
    sha, ws = _projection_file(os.path.abspath(lat.projection))
    if sha != lat.projection_sha256:
        raise StateError(f"viewer state: latent.projection {lat.projection} has changed since this view was "
                         f"saved (SHA-256 {sha[:12]}... is not {lat.projection_sha256[:12]}...)")
    if tuple(ws.shape) != (1, G.num_ws, G.w_dim):
        raise StateError(f"viewer state: latent.projection {lat.projection}: ws {tuple(ws.shape)} do not fit "
                         f"the model (num_ws {G.num_ws}, w_dim {G.w_dim}); open the projection itself")
    return ws


def compute_ws(G, state: ViewerState, c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ws [1, num_ws, w_dim] of the state's latent section: seed (or A->B / fractional seed
    interpolation in w) or a projection file, truncation, then style mixing of the chosen
    layers from `mix_seed`. `c` overrides the conditioning label (default:
    `conditioning_label(state, G)`)."""
    if c is None:
        c = conditioning_label(state, G)
    lat = state.latent
    psi, cutoff = float(lat.trunc_psi), lat.trunc_cutoff
    with torch.no_grad():
        if lat.projection is not None:
            from model.projection import ProjectedGenerator
            G = getattr(G, "G", G) if isinstance(G, ProjectedGenerator) else G    # seeds map with G itself
            ws = ProjectedGenerator(G, projected_ws(G, state).to(c.device)).mapping(None, c, psi, cutoff)
            return _mix(G, state, ws, c, psi, cutoff)
        if lat.interp_enabled:
            a, b, t = lat.interp_seed_a, lat.interp_seed_b, float(lat.interp_t)
        else:
            a, b, t = lat.seed, lat.seed + 1, float(lat.seed_frac)
        ws = ws_for_seed(G, a, c, psi, cutoff)
        if t != 0.0:
            ws = torch.lerp(ws, ws_for_seed(G, b, c, psi, cutoff), t)
        return _mix(G, state, ws, c, psi, cutoff)


def _mix(G, state: ViewerState, ws: torch.Tensor, c: torch.Tensor, psi: float, cutoff) -> torch.Tensor:
    """ws with the chosen layers taken from `mix_seed` (style mixing)."""
    layers = mix_layer_indices(state, ws.shape[1])
    if layers:
        ws_mix = ws_for_seed(G, state.latent.mix_seed, c, psi, cutoff)
        ws = ws.clone()
        ws[:, layers] = ws_mix[:, layers]
    return ws


def mix_layer_indices(state: ViewerState, num_ws: int) -> List[int]:
    if not state.latent.mix_enabled:
        return []
    return sorted({i for i in state.latent.mix_layers if 0 <= i < num_ws})


# ------------------------------------------------------------------------------------------------
# rendering


class PlanesCache:
    """A small LRU of tri-planes keyed by (model, ws, noise mode).

    Planes depend only on ws (and the noise), so they are reused while only the camera or the
    render settings change. 'random' noise is never cached (each call draws new noise).
    """

    def __init__(self, capacity: int = PLANES_CACHE_SIZE, enabled: bool = True):
        self.capacity = capacity
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._entries: "OrderedDict[int, tuple]" = OrderedDict()
        self._next = 0

    def clear(self) -> None:
        self._entries.clear()

    def lookup(self, G, ws: torch.Tensor, noise_mode: str) -> Optional[torch.Tensor]:
        if not self.enabled or noise_mode == "random":
            return None
        for key, (gref, noise, ws_c, planes) in self._entries.items():
            if gref() is G and noise == noise_mode and ws_c.shape == ws.shape and torch.equal(ws_c, ws):
                self._entries.move_to_end(key)
                return planes
        return None

    def get(self, G, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        planes = self.lookup(G, ws, noise_mode)
        if planes is not None:
            self.hits += 1
            return planes
        self.misses += 1
        with torch.no_grad():
            planes = G.planes(ws, noise_mode=noise_mode)
        if self.enabled and noise_mode != "random":
            self._entries[self._next] = (weakref.ref(G), noise_mode, ws.detach().clone(), planes)
            self._next += 1
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return planes


def render_settings(G, state: ViewerState) -> Dict[str, Any]:
    """The `Renderable.render` keywords of the state's render section (all models accept them)."""
    r, rs = G.cfg.rendering, state.render
    return dict(
        neural_rendering_resolution=int(rs.neural_res or G.neural_rendering_resolution),
        depth_resolution=max(2, int(round(r.depth_resolution * rs.depth_mult))),
        depth_resolution_importance=max(1, int(round(r.depth_resolution_importance * rs.importance_mult))),
        deterministic=bool(rs.deterministic),
    )


class _StageTimer:
    """Times a submodule (the super-resolution) with forward hooks, without changing its result."""

    def __init__(self, module: torch.nn.Module):
        self.active = False
        self.device = None
        self.elapsed = 0.0
        self._t0 = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_):
        if self.active:
            _sync(self.device)
            self._t0 = time.perf_counter()

    def _post(self, *_):
        if self.active:
            _sync(self.device)
            self.elapsed += (time.perf_counter() - self._t0) * 1e3

    def start(self, device) -> None:
        self.device, self.elapsed, self.active = device, 0.0, True

    def stop(self) -> float:
        self.active = False
        return self.elapsed


_SR_TIMERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _sr_timer(G) -> Optional[_StageTimer]:
    """The timer of G's `superresolution` submodule, or None (a fitted scene has none)."""
    if G not in _SR_TIMERS:
        sr = getattr(G, "superresolution", None)
        _SR_TIMERS[G] = _StageTimer(sr) if isinstance(sr, torch.nn.Module) else None
    return _SR_TIMERS[G]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def render_state(G, state: ViewerState, planes_cache: Optional[PlanesCache] = None, *,
                 ws: Optional[torch.Tensor] = None, timings: Optional[Dict[str, float]] = None,
                 superresolution: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """Render the state with G; returns G.render's dict (batch 1) plus 'ws' and 'c'.

    `superresolution` defaults to "only when the final image is shown". `timings`, if given,
    receives milliseconds per stage: mapping, planes (0 on a cache hit), render, superres.
    """
    device = module_device(G)
    if superresolution is None:
        superresolution = state.render.type == "final"
    noise = state.render.noise_mode
    with torch.no_grad():
        t0 = time.perf_counter()
        if ws is None:
            ws = compute_ws(G, state)
        _sync(device)
        t1 = time.perf_counter()
        planes = planes_cache.get(G, ws, noise) if planes_cache is not None else G.planes(ws, noise_mode=noise)
        _sync(device)
        t2 = time.perf_counter()
        c = camera_label(state, G)
        timer = _sr_timer(G) if timings is not None else None
        if timer is not None:
            timer.start(device)
        out = G.render(planes, ws, c, superresolution=bool(superresolution), **render_settings(G, state))
        _sync(device)
        sr_time = timer.stop() if timer is not None else 0.0
        t3 = time.perf_counter()
    if timings is not None:
        timings.update(mapping=(t1 - t0) * 1e3, planes=(t2 - t1) * 1e3,
                       render=(t3 - t2) * 1e3 - sr_time, superres=sr_time)
    out = dict(out)
    out["ws"] = ws
    out["c"] = c
    return out


# ------------------------------------------------------------------------------------------------
# inspection: a layer, the tri-planes, one ray (the viewer's render process and the exports)

PCA_CACHE_SIZE = 8
OVERLAY_POINTS = 96                 # points per drawn segment of a plane overlay
FRUSTUM_COLOUR = (255, 255, 255)
RAY_COLOUR = (255, 40, 200)


class PCACache:
    """PCA-to-RGB projections fitted once per (model, layer, coarse sample, latent): the colours
    stay put while the camera moves."""

    def __init__(self, capacity: int = PCA_CACHE_SIZE):
        self.capacity = capacity
        self._fits: "OrderedDict[tuple, Any]" = OrderedDict()

    def clear(self) -> None:
        self._fits.clear()

    def get(self, key: tuple, fit):
        """The projection for key, fitted with `fit()` the first time."""
        if key not in self._fits:
            self._fits[key] = fit()
            while len(self._fits) > self.capacity:
                self._fits.popitem(last=False)
        self._fits.move_to_end(key)
        return self._fits[key]


def bypasses_planes_cache(name: str) -> bool:
    """A backbone layer's hook must see the backbone run: its capture recomputes the planes."""
    return name.startswith("backbone.")


def capture_layer(G, state: ViewerState, ws: Optional[torch.Tensor] = None,
                  planes_cache: Optional[PlanesCache] = None) -> Dict[str, Any]:
    """Render the state once with a hook on `state.layers.name` (a backbone layer recomputes the
    planes; the others reuse `planes_cache`). Returns {'image': [C, H, W] float32
    (model.introspect.layer_image), 'tensor': the hooked tensor, 'out': the render, 'ws': ws}."""
    from model import introspect
    name = state.layers.name
    if name is None:
        raise ValueError("no layer selected")
    names = introspect.layer_names(G)
    if name not in names:
        raise ValueError(f"layer {name!r} is not a layer of this model (see the Layers panel)")
    if ws is None:
        ws = compute_ws(G, state)
    settings = render_settings(G, state)
    noise = state.render.noise_mode
    planes = None
    if planes_cache is not None and not bypasses_planes_cache(name):
        planes = planes_cache.get(G, ws, noise)
    sr = name == "image" or name.startswith("superresolution.")
    layers, out = introspect.capture_layers(G, ws, camera_label(state, G), names=[name], noise_mode=noise,
                                            planes=planes, superresolution=sr, **settings)
    sample = state.layers.sample if name == "decoder" else None
    image = introspect.layer_image(name, layers[name], resolution=settings["neural_rendering_resolution"],
                                   sample_index=sample)
    return dict(image=image, tensor=layers[name], out=out, ws=ws)


def layer_view(G, state: ViewerState, pca_cache: Optional[PCACache] = None,
               ws: Optional[torch.Tensor] = None, planes_cache: Optional[PlanesCache] = None) -> np.ndarray:
    """The state's layer as the viewport shows it, uint8 [H, W, 3] (see `app.state.display`)."""
    from .display import inspect_rgb
    from model.introspect import PCAProjection
    lay = state.layers
    cap = capture_layer(G, state, ws, planes_cache)
    pca = None
    if lay.mode == "pca":
        key = (id(G), lay.name, lay.sample, state.latent.key())
        fit = lambda: PCAProjection.fit(cap["image"])       # noqa: E731 - fitted only on a miss
        pca = pca_cache.get(key, fit) if pca_cache is not None else fit()
    return inspect_rgb(cap["image"], lay.mode, lay.channel, lay.grid, lay.range, pca)


def _camera_rays(G, state: ViewerState, resolution: int):
    c2w, K = cam.split_label(camera_label(state, G))
    return cam.generate_rays(c2w, K, resolution)            # [1, R*R, 3] each


def _ray_limits(G, origins: torch.Tensor, directions: torch.Tensor):
    """(start, end) [M] of rays: the config's fixed limits, or the box intersection ('auto')."""
    r = G.cfg.rendering
    if isinstance(r.ray_start, str) or isinstance(r.ray_end, str):
        from model.rendering import ray_box_limits
        s, e = ray_box_limits(origins, directions, r.box_warp)
        return s[0, :, 0].clamp_min(0), torch.maximum(e[0, :, 0], s[0, :, 0].clamp_min(0))
    m = origins.shape[1]
    return torch.full((m,), float(r.ray_start)), torch.full((m,), float(r.ray_end))


def _segment_points(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    t = torch.linspace(0, 1, OVERLAY_POINTS)[:, None]
    return a[None] * (1 - t) + b[None] * t


def frustum_points(G, state: ViewerState) -> torch.Tensor:
    """Points [N, 3] on the edges of the camera frustum between the ray limits (its footprint)."""
    res = 2
    o, d = _camera_rays(G, state, res)                        # the 4 corner pixels' rays
    start, end = _ray_limits(G, o, d)
    near = o[0] + start[:, None] * d[0]
    far = o[0] + end[:, None] * d[0]
    order = [0, 1, 3, 2]
    segs = []
    for i in range(4):
        j, k = order[i], order[(i + 1) % 4]
        segs += [_segment_points(near[j], near[k]), _segment_points(far[j], far[k]),
                 _segment_points(near[j], far[j])]
    return torch.cat(segs)


def ray_index(state: ViewerState, resolution: int) -> int:
    """The neural-render pixel (row * R + col) under `state.ray.pixel` ([x, y] in [0, 1])."""
    x, y = state.ray.pixel
    col = min(int(x * resolution), resolution - 1)
    row = min(int(y * resolution), resolution - 1)
    return row * resolution + col


def ray_points(G, state: ViewerState) -> torch.Tensor:
    """Points [N, 3] along the inspected ray between the ray limits."""
    R = render_settings(G, state)["neural_rendering_resolution"]
    o, d = _camera_rays(G, state, R)
    i = ray_index(state, R)
    start, end = _ray_limits(G, o[:, i:i + 1], d[:, i:i + 1])
    return _segment_points(o[0, i] + start[0] * d[0, i], o[0, i] + end[0] * d[0, i])


def state_planes(G, state: ViewerState, planes_cache: Optional[PlanesCache] = None,
                 ws: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The state's tri-planes [1, 3, C, H, W] (through the cache when one is given)."""
    if ws is None:
        ws = compute_ws(G, state)
    noise = state.render.noise_mode
    with torch.no_grad():
        return planes_cache.get(G, ws, noise) if planes_cache is not None else G.planes(ws, noise_mode=noise)


def planes_view(G, state: ViewerState, planes_cache: Optional[PlanesCache] = None,
                pca_cache: Optional[PCACache] = None, ws: Optional[torch.Tensor] = None,
                value_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """The Tri-planes view, uint8 [H, 3 W + gaps, 3], with the state's overlays; value_range
    fixes the one-channel colour range (None: the channel's robust range)."""
    from .display import draw_plane_points, fit_planes_pca, plane_pixels, planes_rgb
    planes = state_planes(G, state, planes_cache, ws)
    ps = state.planes
    pca = None
    if ps.mode == "pca":
        key = (id(G), "planes", None, state.latent.key())
        pca = pca_cache.get(key, lambda: fit_planes_pca(planes)) if pca_cache is not None else fit_planes_pca(planes)
    rgb = planes_rgb(planes, ps.mode, ps.channel, pca, value_range)
    h, w = planes.shape[-2:]
    r = G.cfg.rendering
    if ps.frustum:
        draw_plane_points(rgb, plane_pixels(frustum_points(G, state), r.plane_axes, r.box_warp, h, w),
                          FRUSTUM_COLOUR, h, w)
    if ps.ray and state.ray.pixel is not None:
        draw_plane_points(rgb, plane_pixels(ray_points(G, state), r.plane_axes, r.box_warp, h, w),
                          RAY_COLOUR, h, w)
    return rgb


def trace_ray(G, state: ViewerState, planes_cache: Optional[PlanesCache] = None,
              ws: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """What happens along the ray under `state.ray.pixel` (the Ray inspector's plots): the
    `model.rendering.RayTrace` fields of that ray as float64 numpy arrays, plus 'ray' (its index),
    'resolution', and the rendered 'image_depth' / 'image_alpha' at that pixel."""
    if state.ray.pixel is None:
        raise ValueError("no ray selected")
    if ws is None:
        ws = compute_ws(G, state)
    settings = render_settings(G, state)
    R = settings["neural_rendering_resolution"]
    idx = ray_index(state, R)
    noise = state.render.noise_mode
    with torch.no_grad():
        planes = planes_cache.get(G, ws, noise) if planes_cache is not None else G.planes(ws, noise_mode=noise)
        out = G.render(planes, ws, camera_label(state, G), superresolution=False,
                       trace_rays=torch.tensor([idx], device=planes.device), **settings)
    t = out["trace"]
    result: Dict[str, Any] = {}
    for f in ("depths_coarse", "sigma_coarse", "weights_coarse", "depths_fine", "depths", "sigma", "density",
              "transmittance", "weights", "contribution", "rgb", "depth", "opacity"):
        v = getattr(t, f)
        result[f] = None if v is None else v[0, 0].detach().double().cpu().numpy()
    row, col = divmod(idx, R)
    result.update(ray=idx, resolution=R, row=row, col=col,
                  image_depth=float(out["image_depth"][0, 0, row, col]),
                  image_alpha=float(out["image_alpha"][0, 0, row, col]))
    return result
