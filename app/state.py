"""The viewer state: everything that decides a rendered view, as a small shareable JSON.

The same functions turn a state into pixels in the viewer and in the command-line exports, so a
view saved in the viewer (or read back from a PNG it captured) is reproduced exactly by
`visualizer.py turntable --state view.json` and friends.

Conventions
- Angles in the state are degrees, offsets from the frontal pose: `yaw = pitch = 0` is the
  official frontal camera (yaw = pitch = pi/2 in `model.camera`). Positive yaw turns the camera
  towards the subject's left (the official +yaw); positive pitch moves the camera *down* (the
  official sign: `pitch_official = pi/2 + radians(pitch)`).
- `radius` / `pivot` / `fov` = None means "the model's average camera"
  (`cfg.rendering.avg_camera_radius` / `avg_camera_pivot` / `avg_camera_fov`), so a state stays
  valid across models (a ShapeNet-style model opens with its own focal length).
- Seeds map to z exactly as the official scripts do:
  `np.random.RandomState(seed).randn(1, z_dim)`.

Public functions (pure; no GUI):
  camera_label(state, G) -> [1, 25]        the render camera
  conditioning_label(state, G) -> [1, 25]  the pose the mapping network is conditioned on
  compute_ws(G, state) -> ws [1, num_ws, w_dim]
  render_state(G, state, planes_cache=None) -> dict of images (G.render's dict, batch 1)
  to_display_rgb(render, state) -> uint8 [H, W, 3]
  robust_range(values, weights) -> (lo, hi)  the auto colour range of depth / feature images
  load_model(path, device) -> G             a generator (.safetensors / .pkl) or a fitted scene
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

STATE_VERSION = 1
RENDER_TYPES = ("final", "raw", "depth", "alpha", "feature")
COND_MODES = ("frontal", "camera", "custom")
NOISE_MODES = ("const", "random", "none")
DEFAULT_FOV_DEG = 18.837          # FFHQ-trained EG3D (model.camera.DEFAULT_FOV_DEG)
MAX_SEED = 2 ** 32 - 1            # np.random.RandomState accepts [0, 2**32)
PNG_STATE_KEY = "eg3d_viewer_state"


@dataclass
class ViewerState:
    # -- latent -----------------------------------------------------------------------------
    seed: int = 0
    seed_frac: float = 0.0            # [0, 1): w = lerp(w(seed), w(seed + 1), seed_frac)
    trunc_psi: float = 0.7
    trunc_cutoff: Optional[int] = None  # truncate the first N ws; None = all
    # A -> B interpolation in w (overrides seed/seed_frac when enabled)
    interp_enabled: bool = False
    interp_seed_a: int = 0
    interp_seed_b: int = 1
    interp_t: float = 0.0
    # style mixing: ws[:, mix_layers] come from mix_seed
    mix_enabled: bool = False
    mix_seed: int = 1
    mix_layers: List[int] = field(default_factory=list)
    # -- render camera ------------------------------------------------------------------------
    yaw: float = 0.0                  # degrees from frontal
    pitch: float = 0.0                # degrees from frontal (+ = camera below)
    radius: Optional[float] = None    # None = model's avg_camera_radius
    fov: Optional[float] = None       # EG3D "fov" in degrees (camera.fov_to_intrinsics); None = model's
    pivot: Optional[List[float]] = None  # None = model's avg_camera_pivot
    # -- conditioning pose --------------------------------------------------------------------
    cond_mode: str = "frontal"        # 'frontal' | 'camera' | 'custom'
    cond_yaw: float = 0.0             # degrees, used when cond_mode == 'custom'
    cond_pitch: float = 0.0
    # -- rendering ------------------------------------------------------------------------------
    render_type: str = "final"        # 'final' | 'raw' | 'depth' | 'alpha' | 'feature'
    feature_channel: int = 0
    neural_res: Optional[int] = None  # None = G.neural_rendering_resolution
    depth_mult: float = 1.0           # x cfg.rendering.depth_resolution (stratified samples)
    importance_mult: float = 1.0      # x cfg.rendering.depth_resolution_importance
    noise_mode: str = "const"         # 'const' | 'random' | 'none'
    deterministic: bool = True        # no stratified jitter: the same state gives the same pixels
    depth_range: Optional[List[float]] = None  # [near, far] for the depth colormap; None = auto
    feature_range: Optional[List[float]] = None  # [lo, hi] for the feature colormap; None = auto

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["version"] = STATE_VERSION
        return d

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ViewerState":
        if not isinstance(data, dict):
            raise ValueError(f"viewer state: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise ValueError(f"viewer state: unsupported version {version!r} (expected {STATE_VERSION})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"viewer state: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                             f"known keys: {', '.join(sorted(fields))}")
        kwargs = {k: _coerce(k, v, fields[k]) for k, v in data.items()}
        state = cls(**kwargs)
        state.validate()
        return state

    @classmethod
    def from_json(cls, text: str) -> "ViewerState":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"viewer state: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> "ViewerState":
        """Read a state from a .json file or from a PNG captured by the viewer."""
        path = str(path)
        if path.lower().endswith(".png"):
            state = state_from_png(path)
            if state is None:
                raise ValueError(f"{path}: PNG has no viewer state in its metadata")
            return state
        with open(path, "r", encoding="utf-8") as f:
            return cls.from_json(f.read())

    def copy(self, **changes) -> "ViewerState":
        s = dataclasses.replace(self, **changes)
        s.mix_layers = list(s.mix_layers)
        s.pivot = None if s.pivot is None else list(s.pivot)
        s.depth_range = None if s.depth_range is None else list(s.depth_range)
        s.feature_range = None if s.feature_range is None else list(s.feature_range)
        return s

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        for name in ("seed", "interp_seed_a", "interp_seed_b", "mix_seed"):
            v = getattr(self, name)
            if not 0 <= v <= MAX_SEED:
                raise ValueError(f"viewer state: {name}={v} outside [0, {MAX_SEED}]")
        if not 0.0 <= self.seed_frac < 1.0:
            raise ValueError(f"viewer state: seed_frac={self.seed_frac} outside [0, 1)")
        if self.trunc_cutoff is not None and self.trunc_cutoff < 0:
            raise ValueError(f"viewer state: trunc_cutoff={self.trunc_cutoff} must be >= 0 or null")
        if self.cond_mode not in COND_MODES:
            raise ValueError(f"viewer state: cond_mode={self.cond_mode!r}; one of {COND_MODES}")
        if self.render_type not in RENDER_TYPES:
            raise ValueError(f"viewer state: render_type={self.render_type!r}; one of {RENDER_TYPES}")
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(f"viewer state: noise_mode={self.noise_mode!r}; one of {NOISE_MODES}")
        if self.feature_channel < 0:
            raise ValueError(f"viewer state: feature_channel={self.feature_channel} must be >= 0")
        if self.neural_res is not None and not 4 <= self.neural_res <= 2048:
            raise ValueError(f"viewer state: neural_res={self.neural_res} outside [4, 2048]")
        for name in ("depth_mult", "importance_mult"):
            v = getattr(self, name)
            if not 0 < v <= 16:
                raise ValueError(f"viewer state: {name}={v} outside (0, 16]")
        if self.radius is not None and not self.radius > 0:
            raise ValueError(f"viewer state: radius={self.radius} must be > 0")
        if self.fov is not None and not 0.1 <= self.fov <= 170:
            raise ValueError(f"viewer state: fov={self.fov} outside [0.1, 170]")
        if self.pivot is not None and len(self.pivot) != 3:
            raise ValueError(f"viewer state: pivot must have 3 values, got {self.pivot}")
        if self.depth_range is not None and (len(self.depth_range) != 2
                                             or not self.depth_range[0] < self.depth_range[1]):
            raise ValueError("viewer state: depth_range must be [near, far] with near < far")
        if self.feature_range is not None and (len(self.feature_range) != 2
                                               or not self.feature_range[0] < self.feature_range[1]):
            raise ValueError("viewer state: feature_range must be [lo, hi] with lo < hi")


def _coerce(name: str, value: Any, f: dataclasses.Field) -> Any:
    """Check a JSON value against the field's declared type (ints stay ints, floats floats)."""
    hint = str(f.type)
    optional = hint.startswith("Optional[")
    base = hint[len("Optional["):-1] if optional else hint
    if value is None:
        if optional:
            return None
        raise ValueError(f"viewer state: {name} must not be null")
    try:
        if base == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise TypeError
            return int(value)
        if base == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError
            return float(value)
        if base == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if base == "List[int]":
            if not isinstance(value, list) or any(isinstance(v, bool) or int(v) != v for v in value):
                raise TypeError
            return [int(v) for v in value]
        if base == "List[float]":
            if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                  for v in value):
                raise TypeError
            return [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"viewer state: {name}={value!r} is not a valid {hint}") from None
    raise AssertionError(f"unhandled field type {hint}")


# ------------------------------------------------------------------------------------------------
# cameras


def _device(G) -> torch.device:
    try:
        return next(G.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def model_camera_defaults(G) -> Dict[str, Any]:
    """The model's average camera: radius, pivot, fov (from its rendering config)."""
    r = G.cfg.rendering
    return dict(radius=float(r.avg_camera_radius), pivot=[float(v) for v in r.avg_camera_pivot],
                fov=float(getattr(r, "avg_camera_fov", DEFAULT_FOV_DEG)))


def resolved_camera(state: ViewerState, G) -> Dict[str, Any]:
    """The render camera with the model defaults filled in (radius, pivot, fov), angles in degrees."""
    d = model_camera_defaults(G)
    return dict(yaw=state.yaw, pitch=state.pitch,
                radius=d["radius"] if state.radius is None else float(state.radius),
                pivot=d["pivot"] if state.pivot is None else [float(v) for v in state.pivot],
                fov=d["fov"] if state.fov is None else float(state.fov))


def pose_label(G, yaw_deg: float, pitch_deg: float, radius: Optional[float] = None,
               pivot: Optional[Sequence[float]] = None, fov: Optional[float] = None) -> torch.Tensor:
    """Label [1, 25] of a look-at camera; angles are degrees from frontal (state convention).
    radius / pivot / fov None: the model's average camera."""
    from model import camera
    d = model_camera_defaults(G)
    return camera.orbit_label(camera.FRONTAL + math.radians(yaw_deg),
                              camera.FRONTAL + math.radians(pitch_deg),
                              d["radius"] if radius is None else radius,
                              d["pivot"] if pivot is None else list(pivot),
                              fov_degrees=d["fov"] if fov is None else fov, device=_device(G))


def camera_label(state: ViewerState, G) -> torch.Tensor:
    """The render camera's label [1, 25]."""
    cam = resolved_camera(state, G)
    return pose_label(G, cam["yaw"], cam["pitch"], cam["radius"], cam["pivot"], cam["fov"])


def conditioning_pose(state: ViewerState) -> Optional[tuple]:
    """(yaw, pitch) in degrees of the conditioning pose, or None when it follows the camera."""
    if state.cond_mode == "camera":
        return None
    if state.cond_mode == "custom":
        return (state.cond_yaw, state.cond_pitch)
    return (0.0, 0.0)


def conditioning_label(state: ViewerState, G) -> torch.Tensor:
    """The label [1, 25] the mapping network is conditioned on.

    'frontal' and 'custom' use the model's average radius, pivot and fov (18.837 for FFHQ models),
    as the official gen_samples.py does; 'camera' uses the render camera's label unchanged.
    """
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


def compute_ws(G, state: ViewerState, c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ws [1, num_ws, w_dim] of the state: seed (or A->B / fractional seed interpolation in w),
    truncation, then style mixing of the chosen layers from `mix_seed`.

    `c` overrides the conditioning label (default: `conditioning_label(state, G)`).
    """
    if c is None:
        c = conditioning_label(state, G)
    psi, cutoff = float(state.trunc_psi), state.trunc_cutoff
    with torch.no_grad():
        if state.interp_enabled:
            a, b, t = state.interp_seed_a, state.interp_seed_b, float(state.interp_t)
        else:
            a, b, t = state.seed, state.seed + 1, float(state.seed_frac)
        ws = ws_for_seed(G, a, c, psi, cutoff)
        if t != 0.0:
            ws = torch.lerp(ws, ws_for_seed(G, b, c, psi, cutoff), t)
        layers = mix_layer_indices(state, ws.shape[1])
        if layers:
            ws_mix = ws_for_seed(G, state.mix_seed, c, psi, cutoff)
            ws = ws.clone()
            ws[:, layers] = ws_mix[:, layers]
    return ws


def mix_layer_indices(state: ViewerState, num_ws: int) -> List[int]:
    if not state.mix_enabled:
        return []
    return sorted({i for i in state.mix_layers if 0 <= i < num_ws})


# ------------------------------------------------------------------------------------------------
# rendering


class PlanesCache:
    """A small LRU of tri-planes keyed by (generator, ws, noise mode).

    Planes depend only on ws (and the noise), so they are reused while only the camera or render
    settings change. 'random' noise is never cached (each call draws new noise).
    """

    def __init__(self, capacity: int = 4, enabled: bool = True):
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
    """Keyword arguments for G.render from the state (neural resolution, depth samples, ...)."""
    r = G.cfg.rendering
    kw = dict(
        neural_rendering_resolution=int(state.neural_res or G.neural_rendering_resolution),
        depth_resolution=max(2, int(round(r.depth_resolution * state.depth_mult))),
        depth_resolution_importance=max(1, int(round(r.depth_resolution_importance
                                                     * state.importance_mult))),
        noise_mode=state.noise_mode,
        deterministic=bool(state.deterministic),
    )
    accepted = _render_params(G)
    return {k: v for k, v in kw.items() if accepted is None or k in accepted}


def _render_params(G):
    """Keyword names G.render accepts (None = accepts anything)."""
    import inspect
    try:
        params = inspect.signature(G.render).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


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
    """The timer of G's super-resolution submodule (found by class name), or None."""
    if G in _SR_TIMERS:
        return _SR_TIMERS[G]
    timer = None
    modules = G.modules() if hasattr(G, "modules") else []
    for m in modules:
        if type(m).__name__.lower().startswith("superres"):
            timer = _StageTimer(m)
            break
    try:
        _SR_TIMERS[G] = timer
    except TypeError:
        pass
    return timer


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def render_state(G, state: ViewerState, planes_cache: Optional[PlanesCache] = None, *,
                 ws: Optional[torch.Tensor] = None, timings: Optional[Dict[str, float]] = None,
                 superresolution: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """Render the state with G; returns G.render's dict (batch 1) plus 'ws' and 'c'.

    `superresolution` defaults to "only when the final image is shown" (the other render types
    come from the neural render). `timings`, if given, receives milliseconds per stage:
    mapping, planes (0 on a cache hit), render, superres.
    """
    device = _device(G)
    if superresolution is None:
        superresolution = state.render_type == "final"
    t = {}
    with torch.no_grad():
        t0 = time.perf_counter()
        if ws is None:
            ws = compute_ws(G, state)
        _sync(device)
        t1 = time.perf_counter()
        planes = (planes_cache.get(G, ws, state.noise_mode) if planes_cache is not None
                  else G.planes(ws, noise_mode=state.noise_mode))
        _sync(device)
        t2 = time.perf_counter()
        c = camera_label(state, G)
        kwargs = render_settings(G, state)
        timer = _sr_timer(G) if timings is not None else None
        if timer is not None:
            timer.start(device)
        out = G.render(planes, ws, c, superresolution=bool(superresolution), **kwargs)
        _sync(device)
        sr_time = timer.stop() if timer is not None else 0.0
        t4 = time.perf_counter()
    t["mapping"] = (t1 - t0) * 1e3
    t["planes"] = (t2 - t1) * 1e3
    t["render"] = (t4 - t2) * 1e3 - sr_time
    t["superres"] = sr_time
    if timings is not None:
        timings.update(t)
    out = dict(out)
    out["ws"] = ws
    out["c"] = c
    return out


# ------------------------------------------------------------------------------------------------
# display


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


def feature_channel(render: Dict[str, torch.Tensor], state: "ViewerState") -> torch.Tensor:
    """The feature channel the state shows, [H, W] (clamped to the channels there are)."""
    feats = render["feature_image"]
    ch = min(max(int(state.feature_channel), 0), feats.shape[1] - 1)
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
    kind = state.render_type
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
        near, far = state.depth_range if state.depth_range is not None else robust_range(d, a)
        col = _turbo((far - d) / (far - near))
        col = col * a[..., None]
        rgb = (col * 255 + 0.5).astype(np.uint8)
    elif kind == "feature":
        f = feature_channel(render, state).detach().float().cpu().numpy()
        lo, hi = state.feature_range if state.feature_range is not None else robust_range(f)
        rgb = (_turbo((f - lo) / (hi - lo)) * 255 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"unknown render type {kind!r}")
    if size is not None and (rgb.shape[0] != size or rgb.shape[1] != size):
        from PIL import Image
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(rgb)


# ------------------------------------------------------------------------------------------------
# PNG metadata


def save_png(path, rgb: np.ndarray, state: Optional[ViewerState] = None,
             extra: Optional[Dict[str, str]] = None) -> None:
    """Write uint8 [H, W, 3|4] as PNG with the state JSON in a tEXt chunk (`eg3d_viewer_state`)."""
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    if state is not None:
        info.add_text(PNG_STATE_KEY, state.to_json(indent=None))
    for k, v in (extra or {}).items():
        info.add_text(k, str(v))
    Image.fromarray(np.ascontiguousarray(rgb)).save(str(path), pnginfo=info)


def state_from_png(path) -> Optional[ViewerState]:
    from PIL import Image
    with Image.open(str(path)) as im:
        text = im.info.get(PNG_STATE_KEY) or getattr(im, "text", {}).get(PNG_STATE_KEY)
    return None if text is None else ViewerState.from_json(text)


def state_from_png_safe(path) -> Optional[ViewerState]:
    """`state_from_png`, but None for any unreadable file (for drag-and-drop sniffing)."""
    try:
        return state_from_png(path)
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------------------------------------
# opening models


def load_model(path, device="cpu"):
    """What the viewer and the exports open: a fitted scene (`model.scene`: a scene.safetensors,
    a checkpoint.safetensors or a run folder, told apart by the safetensors header) behind the
    generator interface, else a generator (`model.load`: our .safetensors or an official .pkl)."""
    from model import scene
    if scene.is_scene(path):
        G = scene.load_scene_generator(path, device=device)
    else:
        import model
        G = model.load(path, device=device)
    return G.eval().requires_grad_(False)


def is_scene_model(G) -> bool:
    return bool(getattr(G, "is_scene", False))
