"""Background work for the viewer: rendering (latest request wins), model loading, side jobs.

The UI thread never runs the generator. It posts `RenderRequest`s to a `RenderWorker`; the worker
keeps only the newest pending request, renders it (reusing ws and planes when only the camera or
the render settings changed) and publishes a `RenderResult`, which the UI picks up with `poll()`
and shows while the next one renders. Model files are opened by `ModelLoader` threads; an error is
reported as text and the UI keeps the model it has.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from . import state as S


@dataclass
class RenderRequest:
    state: S.ViewerState
    preview: int = 0               # > 1: neural resolution / preview, half the samples (dragging)
    split_ab: bool = False         # also render with conditioning = camera (the A/B debugger)
    sensitivity: bool = False      # measure the conditioning sensitivity after the frame
    cache_planes: bool = True
    serial: int = 0                # set by the worker


@dataclass
class RenderResult:
    serial: int
    state: S.ViewerState           # the state as requested (before preview reduction)
    rgb: Optional[np.ndarray] = None        # uint8 [H, W, 3], what the viewport shows
    rgb_b: Optional[np.ndarray] = None      # the B image of the A/B split (cond = camera)
    preview: bool = False
    timings: Dict[str, float] = field(default_factory=dict)   # ms per stage
    planes_cached: bool = False
    error: Optional[str] = None
    model_serial: int = 0
    finished_at: float = 0.0


PREVIEW_TARGET_MS = 60.0


def preview_factor(full_ms: float, target_ms: float = PREVIEW_TARGET_MS) -> int:
    """Neural-resolution divisor that brings a full render of `full_ms` near `target_ms`
    (cost ~ pixels x samples, samples halved): 2, 3, 4, 6 or 8."""
    need = max(full_ms / target_ms / 2.0, 1.0)   # the halved samples give the first 2x
    for f in (2, 3, 4, 6, 8):
        if f * f >= need:
            return f
    return 8


def preview_state(state: S.ViewerState, G, factor: int = 2) -> S.ViewerState:
    """A cheaper version of the state: neural resolution / factor (at least 16 px) and half the
    depth samples. The super-resolution still outputs the full size."""
    nr = int(state.neural_res or G.neural_rendering_resolution)
    return state.copy(neural_res=max(16, min(nr, nr // factor)),
                      depth_mult=max(0.125, state.depth_mult / 2),
                      importance_mult=max(0.125, state.importance_mult / 2))


def ab_states(state: S.ViewerState) -> Tuple[S.ViewerState, S.ViewerState]:
    """(A, B) of the pose-conditioning debugger: A keeps a fixed conditioning pose (the state's,
    or frontal if the state follows the camera), B conditions on the camera."""
    a = state if state.cond_mode != "camera" else state.copy(cond_mode="frontal")
    return a, state.copy(cond_mode="camera")


class Interrupted(Exception):
    pass


def conditioning_sensitivity(G, state: S.ViewerState, planes_cache: Optional[S.PlanesCache] = None,
                             delta_deg: float = 10.0,
                             should_stop: Optional[Callable[[], bool]] = None) -> Dict[str, float]:
    """Mean absolute pixel change (0..255) of the shown render when only the conditioning pose
    moves: by +delta in yaw, by +delta in pitch, and from the fixed pose to the camera pose.
    `should_stop()` is checked between the renders (raises `Interrupted`)."""
    pose = S.conditioning_pose(state) or (state.yaw, state.pitch)
    base = state.copy(cond_mode="custom", cond_yaw=pose[0], cond_pitch=pose[1])

    def img(s):
        if should_stop is not None and should_stop():
            raise Interrupted()
        return S.to_display_rgb(S.render_state(G, s, planes_cache), s).astype(np.float32)

    ref = img(base)
    out = {}
    out["yaw"] = float(np.abs(img(base.copy(cond_yaw=pose[0] + delta_deg)) - ref).mean())
    out["pitch"] = float(np.abs(img(base.copy(cond_pitch=pose[1] + delta_deg)) - ref).mean())
    out["camera"] = float(np.abs(img(state.copy(cond_mode="camera")) - ref).mean())
    out["delta_deg"] = delta_deg
    return out


class RenderWorker:
    """One daemon thread that renders the newest request for the current model."""

    def __init__(self, on_result: Optional[Callable[[], None]] = None):
        self._cv = threading.Condition()
        self._pending: Optional[RenderRequest] = None
        self._result: Optional[RenderResult] = None
        self._sensitivity: Optional[Dict[str, float]] = None
        self._G = None
        self._model_serial = 0
        self._serial = 0
        self._stop = False
        self._busy = False
        self._on_result = on_result
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

    def poll(self) -> Optional[RenderResult]:
        """The newest finished result not yet taken, or None."""
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
    def _run(self) -> None:
        torch.set_grad_enabled(False)
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
                result = RenderResult(serial=req.serial, state=req.state,
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
            if req.sensitivity and result.error is None:
                with self._cv:
                    newer = self._pending is not None
                if not newer:
                    def newer_request():
                        with self._cv:
                            return self._pending is not None or self._stop
                    try:
                        sens = conditioning_sensitivity(G, req.state, self.cache,
                                                        should_stop=newer_request)
                    except Interrupted:
                        continue
                    except Exception as exc:
                        sens = {"error": f"{type(exc).__name__}: {exc}"}
                    with self._cv:
                        if model_serial == self._model_serial:
                            self._sensitivity = sens
                    if self._on_result is not None:
                        self._on_result()

    def _ws(self, G, state: S.ViewerState) -> Tuple[torch.Tensor, float]:
        """ws of the state, cached by the latent-relevant fields and the conditioning label."""
        t0 = time.perf_counter()
        c = S.conditioning_label(state, G)
        latent = (state.seed, state.seed_frac, state.trunc_psi, state.trunc_cutoff,
                  state.interp_enabled, state.interp_seed_a, state.interp_seed_b, state.interp_t,
                  state.mix_enabled, state.mix_seed, tuple(state.mix_layers))
        key = (latent, tuple(c.flatten().tolist()))
        ws = self._ws_cache.get(key)
        if ws is None:
            ws = S.compute_ws(G, state, c)
            if len(self._ws_cache) > 64:
                self._ws_cache.clear()
            self._ws_cache[key] = ws
        return ws, (time.perf_counter() - t0) * 1e3

    def _render_one(self, G, state: S.ViewerState, req: RenderRequest, timings: Dict[str, float]):
        ws, t_map = self._ws(G, state)
        self.cache.enabled = req.cache_planes
        hit = self.cache.lookup(G, ws, state.noise_mode) is not None
        t = {}
        out = S.render_state(G, state, self.cache, ws=ws, timings=t)
        t["mapping"] = t_map
        t0 = time.perf_counter()
        rgb = S.to_display_rgb(out, state)
        t["to_rgb"] = (time.perf_counter() - t0) * 1e3
        for k, v in t.items():
            timings[k] = timings.get(k, 0.0) + v
        return rgb, hit

    def _render(self, G, req: RenderRequest) -> RenderResult:
        state = preview_state(req.state, G, req.preview) if req.preview else req.state
        timings: Dict[str, float] = {}
        t0 = time.perf_counter()
        if req.split_ab:
            a, b = ab_states(state)
            rgb, hit = self._render_one(G, a, req, timings)
            rgb_b, _ = self._render_one(G, b, req, timings)
        else:
            rgb, hit = self._render_one(G, state, req, timings)
            rgb_b = None
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return RenderResult(serial=req.serial, state=req.state, rgb=rgb, rgb_b=rgb_b,
                            preview=bool(req.preview), timings=timings, planes_cached=hit)


@dataclass
class LoadResult:
    path: str
    G: object = None
    error: Optional[str] = None
    seconds: float = 0.0


class ModelLoader:
    """Opens a model file in a daemon thread (`app.state.load_model`: our .safetensors, an
    official .pkl, or a fitted scene: scene.safetensors / checkpoint.safetensors / its run folder)."""

    def __init__(self, path: str, device: str = "cpu", on_done: Optional[Callable[[], None]] = None):
        self.path = str(path)
        self.device = device
        self.result: Optional[LoadResult] = None
        self.started = time.perf_counter()
        self._on_done = on_done
        self._thread = threading.Thread(target=self._run, name="eg3d-load", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self.result is not None

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            G = S.load_model(self.path, device=self.device)
            for name in ("z_dim", "c_dim", "num_ws", "img_resolution", "neural_rendering_resolution"):
                if not hasattr(G, name):
                    raise ValueError(f"{self.path}: not a generator (no {name})")
            self.result = LoadResult(self.path, G=G, seconds=time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001 - any failure becomes a message in the UI
            msg = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, FileNotFoundError) or "No such file" in msg:
                msg = f"file not found: {self.path}"
            self.result = LoadResult(self.path, error=msg, seconds=time.perf_counter() - t0)
        if self._on_done is not None:
            self._on_done()


# ------------------------------------------------------------------------------------------------
# dataset cameras (for the pose scatter)


def read_dataset_poses(path: str, limit: int = 20000) -> np.ndarray:
    """Camera yaw/pitch (degrees from frontal, state convention) of a dataset's labels.

    `path` is a dataset zip or folder with the official `dataset.json`
    ({"labels": [[filename, [25 floats]], ...]}), or a dataset.json itself. Returns [N, 2]
    (subsampled evenly to at most `limit` points).
    """
    import json
    import math
    import os
    import zipfile

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
    from model import camera
    yaw, pitch, _ = camera.yaw_pitch_radius(torch.from_numpy(arr[:, :16]).reshape(-1, 4, 4))
    yaw_deg = (yaw.numpy() - camera.FRONTAL) * 180 / math.pi
    yaw_deg = (yaw_deg + 180) % 360 - 180
    pitch_deg = (pitch.numpy() - camera.FRONTAL) * 180 / math.pi
    return np.stack([yaw_deg, pitch_deg], axis=1).astype(np.float64)
