"""The viewer's render worker: the newest request wins, the UI thread never runs the generator.

The UI posts a `RenderRequest` (a copy of the view state plus the `RenderOptions` of the viewer:
A/B split, sensitivity, plane caching, and the preview factor) whenever the request differs from
the last one by dataclass equality. The worker keeps only the newest pending request, renders it
(reusing ws while the latent section and the conditioning label are unchanged, and the planes
while ws is) and publishes a `Frame`, which the UI picks up with `poll()`.

The worker thread runs at a lower OS priority than the UI thread (`WORKER_NICE`), and torch's
intra-op threads, created by it, inherit that priority: a busy CPU slows the renders, not the UI.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from . import state as S

PREVIEW_TARGET_MS = 60.0
PREVIEW_FACTORS = (2, 3, 4, 6, 8)
PREVIEW_MIN_RES = 16
WS_CACHE_SIZE = 64
WORKER_NICE = 10                  # added to the worker thread's niceness (Linux: per thread)
SENSITIVITY_DELTA_DEG = 10.0


@dataclass(frozen=True)
class RenderOptions:
    """How the viewer wants the frame, beyond the state (carried in the request, compared by ==)."""
    split_ab: bool = False         # also render with conditioning = camera (the A/B debugger)
    sensitivity: bool = False      # measure the conditioning sensitivity after the frame
    cache_planes: bool = True


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
    state: S.ViewerState           # the state as requested (before preview reduction)
    options: RenderOptions = RenderOptions()
    rgb: Optional[np.ndarray] = None        # uint8 [H, W, 3]
    rgb_b: Optional[np.ndarray] = None      # the B image of the A/B split (cond = camera)
    preview: bool = False
    timings: Dict[str, float] = field(default_factory=dict)   # ms per stage
    planes_cached: bool = False
    error: Optional[str] = None
    model_serial: int = 0
    finished_at: float = 0.0


def preview_factor(full_ms: float, target_ms: float = PREVIEW_TARGET_MS) -> int:
    """Neural-resolution divisor that brings a full render of `full_ms` near `target_ms`
    (cost ~ pixels x samples; the halved samples give the first 2x)."""
    need = max(full_ms / target_ms / 2.0, 1.0)
    for f in PREVIEW_FACTORS:
        if f * f >= need:
            return f
    return PREVIEW_FACTORS[-1]


def preview_state(state: S.ViewerState, G, factor: int = 2) -> S.ViewerState:
    """A cheaper version of the state: neural resolution / factor and half the depth samples.
    The super-resolution still outputs the full size."""
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


def lower_thread_priority(nice: int = WORKER_NICE) -> bool:
    """Raise the calling thread's niceness (Linux sets it per thread); False where unsupported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        return True
    except (AttributeError, OSError):
        return False


class RenderWorker:
    """One daemon thread that renders the newest request for the current model."""

    def __init__(self, on_result: Optional[Callable[[], None]] = None, nice: int = WORKER_NICE):
        self._cv = threading.Condition()
        self._pending: Optional[RenderRequest] = None
        self._result: Optional[Frame] = None
        self._sensitivity: Optional[Dict[str, float]] = None
        self._G = None
        self._model_serial = 0
        self._serial = 0
        self._stop = False
        self._busy = False
        self._on_result = on_result
        self._nice = nice
        self.native_id: Optional[int] = None       # the worker thread's OS id (its priority is its own)
        self.cache = S.PlanesCache(capacity=6)
        self._ws_cache: Dict[tuple, torch.Tensor] = {}
        self._thread = threading.Thread(target=self._run, name="eg3d-render", daemon=True)
        self._thread.start()

    # -- UI-thread API ----------------------------------------------------------------------
    def set_model(self, G) -> int:
        with self._cv:
            self._G = G
            self._model_serial += 1
            self.cache.clear()
            self._ws_cache.clear()
            self._result = None
            self._sensitivity = None
            self._cv.notify_all()
            return self._model_serial

    @property
    def model(self):
        return self._G

    def submit(self, request: RenderRequest) -> int:
        with self._cv:
            self._serial += 1
            request.serial = self._serial
            self._pending = request
            self._cv.notify_all()
            return self._serial

    def poll(self) -> Optional[Frame]:
        """The newest finished frame not yet taken, or None."""
        with self._cv:
            r, self._result = self._result, None
            return r

    def poll_sensitivity(self) -> Optional[Dict[str, float]]:
        with self._cv:
            r, self._sensitivity = self._sensitivity, None
            return r

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy or self._pending is not None

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- worker thread ------------------------------------------------------------------------
    def _newer(self) -> bool:
        with self._cv:
            return self._pending is not None or self._stop

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        self.native_id = threading.get_native_id()
        if self._nice:
            lower_thread_priority(self._nice)
        while True:
            with self._cv:
                while not self._stop and (self._pending is None or self._G is None):
                    self._cv.wait()
                if self._stop:
                    return
                req, self._pending = self._pending, None
                G, model_serial = self._G, self._model_serial
                self._busy = True
            try:
                result = self._render(G, req)
            except Exception as exc:  # a render error must never kill the worker
                result = Frame(serial=req.serial, state=req.state, options=req.options,
                               error=f"{type(exc).__name__}: {exc}")
                traceback.print_exc()
            result.model_serial = model_serial
            result.finished_at = time.perf_counter()
            with self._cv:
                self._busy = False
                if model_serial == self._model_serial:
                    self._result = result
            if self._on_result is not None:
                self._on_result()
            if req.options.sensitivity and result.error is None and not self._newer():
                try:
                    sens = conditioning_sensitivity(G, req.state, self.cache, should_stop=self._newer)
                except Superseded:
                    continue
                except Exception as exc:  # noqa: BLE001 - shown in the panel
                    sens = {"error": f"{type(exc).__name__}: {exc}"}
                with self._cv:
                    if model_serial == self._model_serial:
                        self._sensitivity = sens
                if self._on_result is not None:
                    self._on_result()

    def _ws(self, G, state: S.ViewerState) -> Tuple[torch.Tensor, float]:
        """ws of the state, cached by the latent section and the conditioning label."""
        t0 = time.perf_counter()
        c = S.conditioning_label(state, G)
        key = (state.latent.key(), tuple(c.flatten().tolist()))
        ws = self._ws_cache.get(key)
        if ws is None:
            ws = S.compute_ws(G, state, c)
            if len(self._ws_cache) >= WS_CACHE_SIZE:
                self._ws_cache.clear()
            self._ws_cache[key] = ws
        return ws, (time.perf_counter() - t0) * 1e3

    def _render_one(self, G, state: S.ViewerState, options: RenderOptions, timings: Dict[str, float]):
        ws, t_map = self._ws(G, state)
        self.cache.enabled = options.cache_planes
        hit = self.cache.lookup(G, ws, state.render.noise_mode) is not None
        t: Dict[str, float] = {}
        out = S.render_state(G, state, self.cache, ws=ws, timings=t)
        t["mapping"] = t_map
        t0 = time.perf_counter()
        rgb = S.to_display_rgb(out, state)
        t["to_rgb"] = (time.perf_counter() - t0) * 1e3
        for k, v in t.items():
            timings[k] = timings.get(k, 0.0) + v
        return rgb, hit

    def _render(self, G, req: RenderRequest) -> Frame:
        state = preview_state(req.state, G, req.preview) if req.preview else req.state
        timings: Dict[str, float] = {}
        t0 = time.perf_counter()
        if req.options.split_ab:
            a, b = ab_states(state)
            rgb, hit = self._render_one(G, a, req.options, timings)
            rgb_b, _ = self._render_one(G, b, req.options, timings)
        else:
            rgb, hit = self._render_one(G, state, req.options, timings)
            rgb_b = None
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Frame(serial=req.serial, state=req.state, options=req.options, rgb=rgb, rgb_b=rgb_b,
                     preview=bool(req.preview), timings=timings, planes_cached=hit)
