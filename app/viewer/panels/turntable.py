"""Turntable panel: a video of the current view orbiting, exported in the background."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from imgui_bundle import imgui

from .base import READY, Panel, export_gate, task_progress

PATHS = ("360", "sweep", "orbit")             # app.export.CAMERA_PATHS
PATH_LABELS = ("full 360 deg turn", "yaw sweep +- range", "official orbit (ellipse)")
MAX_FRAMES = 100_000
MAX_FPS = 240
MAX_RES = 4096


class FormError(ValueError):
    """A panel form field with a bad value; the message names it."""


@dataclass
class TurntableForm:
    frames: int = 120
    fps: int = 30
    path: str = "360"
    yaw_range: float = 30.0
    pitch: float = 5.0
    res: int = 0                      # 0 = the model's native resolution
    out: str = "out/viewer/turntable.mp4"

    def validate(self) -> None:
        if not 2 <= self.frames <= MAX_FRAMES:
            raise FormError(f"turntable frames={self.frames} outside [2, {MAX_FRAMES}]")
        if not 1 <= self.fps <= MAX_FPS:
            raise FormError(f"turntable fps={self.fps} outside [1, {MAX_FPS}]")
        if self.path not in PATHS:
            raise FormError(f"turntable path={self.path!r}; one of {', '.join(PATHS)}")
        if not (math.isfinite(self.yaw_range) and 0 < self.yaw_range <= 180):
            raise FormError(f"turntable yaw range={self.yaw_range} outside (0, 180]")
        if not (math.isfinite(self.pitch) and 0 <= self.pitch <= 89):
            raise FormError(f"turntable pitch wobble={self.pitch} outside [0, 89]")
        if not 0 <= self.res <= MAX_RES:
            raise FormError(f"turntable resolution={self.res} outside [0, {MAX_RES}]")


class TurntablePanel(Panel):
    title = "Turntable export"

    def __init__(self):
        self.form = TurntableForm()

    def draw(self, ctx) -> None:
        f = self.form
        _, f.frames = imgui.input_int("frames", f.frames, 10, 60)
        f.frames = int(np.clip(f.frames, 2, MAX_FRAMES))
        _, f.fps = imgui.input_int("fps", f.fps, 1, 10)
        f.fps = int(np.clip(f.fps, 1, MAX_FPS))
        imgui.text_disabled(f"= {f.frames / f.fps:.1f} s")
        changed, i = imgui.combo("camera path", PATHS.index(f.path) if f.path in PATHS else 0, list(PATH_LABELS))
        if changed:
            f.path = PATHS[i]
        clamp = imgui.SliderFlags_.always_clamp
        if f.path != "360":
            _, f.yaw_range = imgui.slider_float("yaw range +-", f.yaw_range, 1.0, 90.0, "%.0f deg", clamp)
        _, f.pitch = imgui.slider_float("pitch wobble", f.pitch, 0.0, 45.0, "%.1f deg", clamp)
        _, f.res = imgui.input_int("resolution (0 = native)", f.res, 64, 256)
        f.res = int(np.clip(f.res, 0, MAX_RES))
        imgui.text_disabled(f"native {ctx.info.img_resolution if ctx.info is not None else 512} px")
        _, f.out = imgui.input_text("output", f.out)
        task = ctx.tasks.get("export")
        if task is not None and task.running:
            task_progress(task)
            return
        if imgui.button("export turntable") and ctx.model is not None:
            self.start(ctx)
        if task is not None and task.name == "turntable":
            imgui.text_wrapped(f"last: {task.error or task.result}")

    def start(self, ctx, out: Optional[str] = None):
        """Export a turntable of the current view (app.export) as the 'export' task."""
        gate = export_gate(ctx, self.form)
        if gate is not READY:
            return gate
        from app import export
        f, G, state = self.form, ctx.model, ctx.state.copy()
        out = os.path.expanduser(out or f.out)
        network = ctx.info.path if ctx.info is not None else None
        kwargs = dict(frames=f.frames, path=f.path, yaw_range=None if f.path == "360" else f.yaw_range,
                      pitch_range=f.pitch, size=f.res or None, video=export.VideoOptions(fps=f.fps), network=network)

        def run(progress, cancel):
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            written = export.export_turntable(G, out, state, progress=progress, cancel=cancel, bar=False, **kwargs)
            return ", ".join(str(p) for p in written)

        return ctx.actions.start_task("export", "turntable", run, unit="frames")
