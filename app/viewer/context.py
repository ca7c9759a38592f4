"""What a panel may see and touch: the `ViewerContext`.

A panel reads the context, writes its own section of `ctx.state` (and its own form), and does
everything else through `ctx.actions`: the named operations of the window (open a model, save
a PNG, start a background task, ...). Tests build a context with recording actions and no window.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .. import state as S
from ..renderer_worker import Frame, RenderOptions
from .tasks import TaskBoard

FRAME_HISTORY = 120


@dataclass
class ViewerSettings:
    """Viewer-only settings (not part of the shareable view state)."""
    show_panel: bool = True
    show_help: bool = False
    show_perf: bool = True
    split_ab: bool = False
    split_pos: float = 0.5
    smooth: bool = True               # linear texture filtering
    scroll_zooms: str = "radius"      # 'radius' | 'fov'
    animate: bool = False
    animate_speed: float = 0.5        # seeds per second
    orbit: bool = False
    orbit_speed: float = 30.0         # degrees per second
    cache_planes: bool = True
    fast_preview: bool = True
    sensitivity: bool = False
    model_path: str = ""
    state_path: str = "out/viewer/state.json"
    out_dir: str = "out/viewer"
    dataset_path: str = ""

    def render_options(self) -> RenderOptions:
        return RenderOptions(split_ab=self.split_ab, sensitivity=self.sensitivity,
                             cache_planes=self.cache_planes)


@dataclass
class ViewTransform:
    """The 2D magnification of the image in the viewport (not the camera)."""
    zoom: float = 1.0
    pan: Tuple[float, float] = (0.0, 0.0)

    def fit(self) -> None:
        self.zoom, self.pan = 1.0, (0.0, 0.0)


@dataclass
class ModelInfo:
    """What the panels show about the open model."""
    path: str
    name: str
    has_latent: bool
    repr: str
    fov: float
    img_resolution: int
    neural_res: int
    z_dim: int
    w_dim: int
    num_ws: int
    params: int
    load_s: float
    depth: Tuple[int, int]
    cond: bool                 # the generator is pose-conditioned (c not zeroed)
    feature_channels: int
    filled_defaults: Optional[Tuple[str, ...]] = None   # official defaults an imported snapshot lacked
    plane_axes: str = "official"

    @classmethod
    def of(cls, G, path: str, seconds: float = 0.0) -> "ModelInfo":
        r = G.cfg.rendering
        return cls(path=str(path), name=os.path.basename(str(path).rstrip("/")), has_latent=bool(G.has_latent),
                   repr=str(getattr(G, "repr", "")), fov=float(r.avg_camera_fov), img_resolution=G.img_resolution,
                   neural_res=G.neural_rendering_resolution, z_dim=G.z_dim, w_dim=G.w_dim, num_ws=G.num_ws,
                   params=sum(p.numel() for p in G.parameters()), load_s=float(seconds),
                   depth=(r.depth_resolution, r.depth_resolution_importance),
                   cond=not G.cfg.c_gen_conditioning_zero, feature_channels=G.cfg.decoder.output_features,
                   filled_defaults=_filled(getattr(G.cfg, "filled_defaults", None)),
                   plane_axes=str(getattr(r, "plane_axes", "official")))


def _filled(value) -> Optional[Tuple[str, ...]]:
    return None if value is None else tuple(str(v) for v in value)


@dataclass
class PerfStats:
    """UI and render rates for the performance panel and overlay."""
    frame_ms: np.ndarray = field(default_factory=lambda: np.zeros(FRAME_HISTORY, np.float32))
    render_times: list = field(default_factory=list)     # perf_counter of recent finished renders
    ui_fps: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0

    def add_frame(self, dt: float) -> None:
        self.frame_ms = np.roll(self.frame_ms, -1)
        self.frame_ms[-1] = dt * 1e3

    def add_render(self, now: float, window: float = 2.0) -> None:
        self.render_times = [t for t in self.render_times + [now] if now - t < window]

    def render_fps(self, last_total_ms: float = 0.0) -> float:
        """Finished renders per second over the last 2 s (the last frame's rate when fewer)."""
        t = self.render_times
        if len(t) >= 3:
            return (len(t) - 1) / max(t[-1] - t[0], 1e-6)
        return 1000.0 / last_total_ms if last_total_ms > 0 else 0.0


@dataclass
class Actions:
    """The window's named operations, the only way a panel reaches beyond its own section."""
    open_model: Callable[[str], None]
    load_state: Callable[[str], bool]
    save_state: Callable[..., Optional[str]]             # (path=None)
    set_state: Callable[[S.ViewerState], None]           # replace the whole view state
    save_render: Callable[..., Optional[str]]            # (path=None)
    save_window: Callable[..., str]                      # (path=None)
    load_dataset: Callable[[str], None]
    swap_conditioning: Callable[[], None]                # touches camera and conditioning
    set_clipboard: Callable[[str], None]
    get_clipboard: Callable[[], str]
    message: Callable[[str], None]
    fail: Callable[[str], None]                          # show an error line
    start_task: Callable[..., Any]                       # (slot, name, fn, on_finish=None, unit="")
    refresh_textures: Callable[[], None]                 # re-upload after a filter change
    pixel_zoom: Callable[[], None]                       # 1 image pixel = 1 screen pixel
    texture: Callable[[str, np.ndarray], Optional[int]]  # (key, rgb uint8 [H, W, 3]) -> GL texture id

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]


@dataclass
class ViewerContext:
    state: S.ViewerState
    settings: ViewerSettings
    actions: Actions
    tasks: TaskBoard
    view: ViewTransform = field(default_factory=ViewTransform)
    perf: PerfStats = field(default_factory=PerfStats)
    model: Any = None                          # a model.interface.Renderable, or None
    info: Optional[ModelInfo] = None
    frame: Optional[Frame] = None              # the frame on screen
    sensitivity: Optional[Dict[str, float]] = None
    dataset_poses: Optional[np.ndarray] = None
    dataset_error: Optional[str] = None
    scale: float = 1.0                         # UI scale (DPI)
    focus_model_path: bool = False             # Ctrl+O: the model panel focuses its path field
    error: Optional[str] = None                # shown in the viewport and the panel until dismissed
    missing_default: Optional[str] = None      # the default checkpoint, when it is absent
    pointer_uv: Optional[Tuple[float, float]] = None   # the pointer over the image, [0, 1] (x, y)
    clicked_uv: Optional[Tuple[float, float]] = None   # a click (no drag) on the image this frame
    dropped_image: Optional[str] = None        # an image dropped onto the window (the Invert panel takes it)

    @property
    def has_latent(self) -> bool:
        """The open model has a latent (no model: show the generator's panels)."""
        return self.model is None or bool(self.model.has_latent)

    def render_types(self) -> Tuple[str, ...]:
        return S.RENDER_TYPES if self.has_latent else SCENE_RENDER_TYPES


SCENE_RENDER_TYPES = ("final", "depth", "alpha")     # what a fitted scene offers
