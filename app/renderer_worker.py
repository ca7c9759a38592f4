"""The viewer's render worker: the newest request wins, the UI thread never runs the generator.

The UI posts a `RenderRequest` (a copy of the view state plus the `RenderOptions` of the viewer:
A/B split, sensitivity, plane caching, and the preview factor) whenever the request differs from
the last one by dataclass equality. The worker keeps only the newest pending request, renders it
(reusing ws while the latent section and the conditioning label are unchanged, and the planes
while ws is) and publishes a `Frame`, which the UI picks up with `poll()`.

The worker is a separate process: the generator's Python code never holds the UI's interpreter
lock, and the process runs at a lower OS priority (`WORKER_NICE`) with its own torch threads, so
a busy CPU slows the renders, not the UI.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from model.device import reuse_host_memory
from model.preview import upsampled_raw

from . import state as S

PREVIEW_TARGET_MS = 60.0
PARENT_CHECK_S = 2.0           # how often an idle render process checks that the viewer lives
PREVIEW_FACTORS = (2, 3, 4, 6, 8)
PREVIEW_MIN_RES = 16
WS_CACHE_SIZE = 64
WORKER_NICE = 10                  # added to the render process's niceness
SENSITIVITY_DELTA_DEG = 10.0


@dataclass(frozen=True)
class RenderOptions:
    """How the viewer wants the frame, beyond the state (carried in the request, compared by ==)."""
    split_ab: bool = False         # also render with conditioning = camera (the A/B debugger)
    sensitivity: bool = False      # measure the conditioning sensitivity after the frame
    cache_planes: bool = True
    layers: bool = False           # the Layers panel is open: show state.layers, send the layer table
    planes: bool = False           # the Tri-planes panel is open: show state.planes when `show`
    rays: bool = False             # the Ray inspector is open: trace state.ray.pixel


@dataclass
class RenderRequest:
    state: S.ViewerState
    options: RenderOptions = RenderOptions()
    preview: int = 0               # > 1: neural resolution / preview, half the samples (dragging)
    serial: int = 0                # set by the worker


@dataclass
class Frame:
    """A finished render, as the viewport shows it."""
    serial: int
    state: S.ViewerState           # the state as requested (before preview reduction), less a layer
                                   # or planes view the closed panels did not show
    options: RenderOptions = RenderOptions()
    rgb: Optional[np.ndarray] = None        # uint8 [H, W, 3]
    rgb_b: Optional[np.ndarray] = None      # the B image of the A/B split (cond = camera)
    preview: bool = False
    timings: Dict[str, float] = field(default_factory=dict)   # ms per stage
    planes_cached: bool = False
    ws_cached: bool = False
    cache_hits: int = 0            # the planes cache's totals when this frame finished
    cache_misses: int = 0
    error: Optional[str] = None
    model_serial: int = 0
    finished_at: float = 0.0
    shows: str = "image"           # what rgb is: 'image' (the render type), 'layer' or 'planes'
    planes_bypassed: bool = False  # a layer capture recomputed the planes (hooks see the backbone)
    layer_table: Optional[list] = None      # [(name, stage, shape, dtype)] while the Layers panel is open
    trace: Optional[Dict] = None            # app.state.trace_ray's result while the Ray inspector is open
    inspect_error: Optional[str] = None     # a layer / planes / ray failure (the image still shows)


def preview_factor(full_ms: float, target_ms: float = PREVIEW_TARGET_MS) -> int:
    """Neural-resolution divisor that brings a full render of `full_ms` near `target_ms`
    (cost ~ pixels x samples; the halved samples give the first 2x)."""
    need = max(full_ms / target_ms / 2.0, 1.0)
    for f in PREVIEW_FACTORS:
        if f * f >= need:
            return f
    return PREVIEW_FACTORS[-1]


def preview_state(state: S.ViewerState, G, factor: int = 2) -> S.ViewerState:
    """A cheaper version of the state: neural resolution / factor and half the depth samples
    (render_one then also skips the super-resolution of the final image)."""
    rs = state.render
    nr = int(rs.neural_res or G.neural_rendering_resolution)
    return state.copy(neural_res=max(PREVIEW_MIN_RES, min(nr, nr // factor)),
                      depth_mult=max(0.125, rs.depth_mult / 2),
                      importance_mult=max(0.125, rs.importance_mult / 2))


def ab_states(state: S.ViewerState) -> Tuple[S.ViewerState, S.ViewerState]:
    """(A, B) of the pose-conditioning debugger: A keeps a fixed conditioning pose (the state's,
    or frontal if the state follows the camera), B conditions on the camera."""
    a = state if state.conditioning.mode != "camera" else state.copy(cond_mode="frontal")
    return a, state.copy(cond_mode="camera")


class Superseded(Exception):
    """A newer request arrived while measuring; the measurement is dropped."""


def conditioning_sensitivity(G, state: S.ViewerState, planes_cache: Optional[S.PlanesCache] = None,
                             delta_deg: float = SENSITIVITY_DELTA_DEG,
                             should_stop: Optional[Callable[[], bool]] = None) -> Dict[str, float]:
    """Mean absolute pixel change (0..255) of the shown render when only the conditioning pose
    moves: by +delta in yaw, by +delta in pitch, and from the fixed pose to the camera pose.
    `should_stop()` is checked between the renders (raises `Superseded`)."""
    pose = S.conditioning_pose(state) or (state.camera.yaw, state.camera.pitch)
    base = state.copy(cond_mode="custom", cond_yaw=pose[0], cond_pitch=pose[1])

    def img(s):
        if should_stop is not None and should_stop():
            raise Superseded()
        return S.to_display_rgb(S.render_state(G, s, planes_cache), s).astype(np.float32)

    ref = img(base)
    return dict(yaw=float(np.abs(img(base.copy(cond_yaw=pose[0] + delta_deg)) - ref).mean()),
                pitch=float(np.abs(img(base.copy(cond_pitch=pose[1] + delta_deg)) - ref).mean()),
                camera=float(np.abs(img(state.copy(cond_mode="camera")) - ref).mean()),
                delta_deg=delta_deg)


class _Renderer:
    """The render process's state: the model, the ws cache (keyed on the latent section and the
    conditioning label) and the planes cache."""

    def __init__(self):
        self.G = None
        self.cache = S.PlanesCache(capacity=6)
        self.ws_cache: Dict[tuple, torch.Tensor] = {}
        self.pca = S.PCACache()
        self.tables: Dict[tuple, list] = {}

    def set_model(self, G) -> None:
        self.G = G
        self.cache.clear()
        self.ws_cache.clear()
        self.pca.clear()
        self.tables.clear()

    def layer_table(self, state: S.ViewerState, ws: torch.Tensor) -> list:
        """The Layers panel's table for the render settings (one hooked forward pass each)."""
        from model.introspect import list_layers
        settings = S.render_settings(self.G, state)
        key = tuple(sorted(settings.items()))
        if key not in self.tables:
            info = list_layers(self.G, ws, S.camera_label(state, self.G), **settings)
            self.tables[key] = [(i.name, i.stage, tuple(i.shape), i.dtype) for i in info]
        return self.tables[key]

    def inspect(self, state: S.ViewerState, options: RenderOptions, frame: "Frame") -> Optional[np.ndarray]:
        """The inspection panels' part of a frame: the layer or planes view (returned, shown
        instead of the render), the layer table and the ray trace (set on the frame)."""
        rgb = None
        ws, _, _ = self.ws(state)
        if options.layers:
            frame.layer_table = self.layer_table(state, ws)
            if state.layers.name is not None:
                self.cache.enabled = options.cache_planes
                rgb = S.layer_view(self.G, state, self.pca, ws=ws, planes_cache=self.cache)
                frame.shows, frame.planes_bypassed = "layer", S.bypasses_planes_cache(state.layers.name)
        if rgb is None and options.planes and state.planes.show:
            rgb = S.planes_view(self.G, state, self.cache, self.pca, ws=ws)
            frame.shows = "planes"
        if options.rays and state.ray.pixel is not None:
            frame.trace = S.trace_ray(self.G, state, self.cache, ws=ws)
        return rgb

    def ws(self, state: S.ViewerState) -> Tuple[torch.Tensor, float, bool]:
        t0 = time.perf_counter()
        c = S.conditioning_label(state, self.G)
        key = (state.latent.key(), tuple(c.flatten().tolist()))
        ws = self.ws_cache.get(key)
        hit = ws is not None
        if not hit:
            ws = S.compute_ws(self.G, state, c)
            if len(self.ws_cache) >= WS_CACHE_SIZE:
                self.ws_cache.clear()
            self.ws_cache[key] = ws
        return ws, (time.perf_counter() - t0) * 1e3, hit

    def render_one(self, state: S.ViewerState, options: RenderOptions, timings: Dict[str, float],
                   preview: bool = False):
        """One image of the state. A preview of the final image skips the super-resolution and
        shows the raw render upsampled to the output size (model.preview.upsampled_raw)."""
        ws, t_map, ws_hit = self.ws(state)
        self.cache.enabled = options.cache_planes
        planes_hit = self.cache.lookup(self.G, ws, state.render.noise_mode) is not None
        t: Dict[str, float] = {}
        skip_sr = preview and state.render.type == "final" and self.G.has_latent
        out = S.render_state(self.G, state, self.cache, ws=ws, timings=t,
                             superresolution=False if skip_sr else None)
        if skip_sr:
            out["image"] = upsampled_raw(self.G, out)
        t["mapping"] = t_map
        t0 = time.perf_counter()
        rgb = S.to_display_rgb(out, state)
        t["to_rgb"] = (time.perf_counter() - t0) * 1e3
        for k, v in t.items():
            timings[k] = timings.get(k, 0.0) + v
        return rgb, ws_hit, planes_hit

    def render(self, req: RenderRequest) -> Frame:
        state = preview_state(req.state, self.G, req.preview) if req.preview else req.state
        timings: Dict[str, float] = {}
        t0 = time.perf_counter()
        frame = Frame(serial=req.serial, state=req.state, options=req.options, preview=bool(req.preview))
        o = req.options
        if self.G.has_latent and (o.layers or o.planes or o.rays):
            try:
                frame.rgb = self.inspect(state, o, frame)
            except Exception as exc:  # noqa: BLE001 - shown by the panel; the render goes on
                frame.inspect_error, frame.shows = f"{type(exc).__name__}: {exc}", "image"
            if frame.rgb is not None:
                ws_hit = self.ws(state)[2]
                timings["total"] = (time.perf_counter() - t0) * 1e3
                frame.timings, frame.ws_cached = timings, ws_hit
                frame.cache_hits, frame.cache_misses = self.cache.hits, self.cache.misses
                return frame
        rgb_b = None
        if req.options.split_ab:
            a, b = ab_states(state)
            rgb, ws_hit, hit = self.render_one(a, req.options, timings, bool(req.preview))
            rgb_b, _, _ = self.render_one(b, req.options, timings, bool(req.preview))
        else:
            rgb, ws_hit, hit = self.render_one(state, req.options, timings, bool(req.preview))
        timings["total"] = (time.perf_counter() - t0) * 1e3
        frame.rgb, frame.rgb_b, frame.timings, frame.planes_cached, frame.ws_cached = rgb, rgb_b, timings, hit, ws_hit
        frame.cache_hits, frame.cache_misses = self.cache.hits, self.cache.misses
        if req.state.layers.name is not None or req.state.planes.show:
            frame.state = req.state.copy(layer=None, planes_show=False)    # a capture records what it shows
        return frame


def _serve(requests, results, nice: int, threads: Optional[int], parent: int) -> None:
    """The render process: apply model changes in order, render only the newest request.
    `parent` is the viewer's pid (taken there: it may have died before this process starts)."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    if threads:
        torch.set_num_threads(int(threads))
    reuse_host_memory()                 # frames repeat their sizes: no fresh pages per frame
    torch.set_grad_enabled(False)
    r, model_serial, backlog = _Renderer(), 0, []

    def next_message():
        """Block for the next message, but end with the viewer: a worker whose parent died
        (killed, crashed) exits instead of waiting forever."""
        while True:
            try:
                return requests.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent:
                    raise SystemExit from None

    def newest():
        """Drain the queue: model messages take effect, the last render request wins."""
        nonlocal model_serial
        req = None
        while True:
            if backlog:
                msg = backlog.pop(0)
            else:
                try:
                    msg = requests.get_nowait()
                except queue.Empty:
                    return req
            if msg[0] == "stop":
                raise SystemExit
            if msg[0] == "model":
                model_serial = msg[1]
                r.set_model(msg[2])
                req = None
            else:
                req = msg[1]

    try:
        while True:
            backlog.append(next_message())
            req = newest()
            if req is None or r.G is None:
                continue
            try:
                frame = r.render(req)
            except Exception as exc:  # a render error must never end the process
                frame = Frame(serial=req.serial, state=req.state, options=req.options,
                              error=f"{type(exc).__name__}: {exc}")
                traceback.print_exc()
            frame.model_serial, frame.finished_at = model_serial, time.time()
            results.put(("frame", frame))
            if req.options.sensitivity and frame.error is None and requests.empty():
                try:
                    sens = conditioning_sensitivity(r.G, req.state, r.cache, should_stop=lambda: not requests.empty())
                except Superseded:
                    continue
                except Exception as exc:  # noqa: BLE001 - shown in the panel
                    sens = {"error": f"{type(exc).__name__}: {exc}"}
                results.put(("sensitivity", sens, model_serial))
    except (SystemExit, KeyboardInterrupt, EOFError, OSError):
        pass
    finally:
        results.put(("stopped",))


class RenderWorker:
    """Renders the newest request for the current model in its own process.

    A separate process, not a thread: the generator's Python code then never holds the UI's
    interpreter lock, and its OS priority (`nice`, niceness added to the UI's) and torch threads
    (`threads`) are its own. The model is sent once per `set_model` (its tensors travel through
    shared memory); requests and frames are small. `poll()` returns the newest finished frame.
    """

    def __init__(self, on_result: Optional[Callable[[], None]] = None, nice: int = WORKER_NICE,
                 threads: Optional[int] = None):
        import torch.multiprocessing as mp
        context = mp.get_context("spawn")
        self._requests = context.Queue()
        self._results = context.Queue()
        self._proc = context.Process(target=_serve, args=(self._requests, self._results, nice, threads, os.getpid()),
                                     name="eg3d-render", daemon=True)
        self._proc.start()
        self.pid = self._proc.pid
        self._lock = threading.Lock()
        self._result: Optional[Frame] = None
        self._sensitivity: Optional[Dict[str, float]] = None
        self._G = None
        self._model_serial = 0
        self._serial = 0
        self._answered = 0
        self._on_result = on_result
        self.cache_hits = self.cache_misses = 0
        self._listener = threading.Thread(target=self._listen, name="eg3d-render-results", daemon=True)
        self._listener.start()

    # -- UI-thread API ----------------------------------------------------------------------
    def set_model(self, G) -> int:
        with self._lock:
            self._G = G
            self._model_serial += 1
            self._result = self._sensitivity = None
            self._answered = self._serial
            serial = self._model_serial
        self._requests.put(("model", serial, G))
        return serial

    @property
    def model(self):
        return self._G

    def submit(self, request: RenderRequest) -> int:
        with self._lock:
            self._serial += 1
            request.serial = self._serial
        self._requests.put(("render", request))
        return request.serial

    def poll(self) -> Optional[Frame]:
        """The newest finished frame (of the current model) not yet taken, or None."""
        with self._lock:
            r, self._result = self._result, None
            return r

    def poll_sensitivity(self) -> Optional[Dict[str, float]]:
        with self._lock:
            r, self._sensitivity = self._sensitivity, None
            return r

    @property
    def busy(self) -> bool:
        """A submitted request is not answered yet."""
        with self._lock:
            return self._answered < self._serial and self._proc.is_alive()

    @property
    def exitcode(self) -> Optional[int]:
        """None while the render process runs; its exit code once it ended."""
        return self._proc.exitcode

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc.is_alive():
            self._requests.put(("stop",))
            self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
        if self._listener.is_alive():
            self._results.put(("stopped",))      # a process that died cannot say so itself
        self._listener.join(timeout)

    # -- results (a UI-side thread that waits on the process) ----------------------------------
    def _listen(self) -> None:
        while True:
            try:
                msg = self._results.get()
            except (EOFError, OSError):
                return
            if msg[0] == "stopped":
                return
            with self._lock:
                if msg[0] == "frame":
                    frame = msg[1]
                    self._answered = max(self._answered, frame.serial)
                    if frame.model_serial == self._model_serial:
                        self._result = frame
                        self.cache_hits, self.cache_misses = frame.cache_hits, frame.cache_misses
                elif msg[0] == "sensitivity" and msg[2] == self._model_serial:
                    self._sensitivity = msg[1]
            if self._on_result is not None:
                self._on_result()
