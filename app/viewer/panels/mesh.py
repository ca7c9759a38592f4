"""Mesh panel: marching cubes of the current latent's density (app.mesh), in the background."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from imgui_bundle import imgui

from .base import READY, Panel, export_gate, help_marker, task_progress
from .turntable import FormError

RES_RANGE = (8, 1024)
MAX_LEVEL = 1e6
MIN_CHUNK = 1024


@dataclass
class MeshForm:
    res: int = 128
    level: Optional[float] = None     # None = the model's (a scene's surface_level, else 10)
    trim: Optional[float] = None      # None = the model's (0 for a scene, else 30/256)
    ply: bool = True
    obj: bool = False
    mrc: bool = False
    chunk: int = 1 << 16              # density points per batch (progress granularity)
    out: str = "out/viewer/mesh.ply"

    def formats(self) -> List[str]:
        return [f for f, on in (("ply", self.ply), ("obj", self.obj), ("mrc", self.mrc)) if on]

    def validate(self) -> None:
        if not RES_RANGE[0] <= self.res <= RES_RANGE[1]:
            raise FormError(f"mesh grid resolution={self.res} outside [{RES_RANGE[0]}, {RES_RANGE[1]}]")
        if self.level is not None and not (math.isfinite(self.level) and abs(self.level) <= MAX_LEVEL):
            raise FormError(f"mesh level={self.level} is not a finite density within +-{MAX_LEVEL:g}")
        if self.trim is not None and not (math.isfinite(self.trim) and 0 <= self.trim < 0.5):
            raise FormError(f"mesh border trim={self.trim} outside [0, 0.5)")
        if self.chunk < MIN_CHUNK:
            raise FormError(f"mesh chunk={self.chunk} below {MIN_CHUNK}")
        if not self.formats():
            raise FormError("mesh export: choose at least one format")


class MeshPanel(Panel):
    title = "Mesh export"

    def __init__(self):
        self.form = MeshForm()

    def draw(self, ctx) -> None:
        from app.mesh import OFFICIAL_TRIM, default_level, default_trim
        f, G = self.form, ctx.model
        _, f.res = imgui.input_int("grid resolution", f.res, 32, 128)
        f.res = int(np.clip(f.res, *RES_RANGE))
        model_level = default_level(G) if G is not None else 10.0
        changed, level = imgui.input_float("level (raw density)", model_level if f.level is None else f.level,
                                           1.0, 5.0, "%.2f")
        if changed and math.isfinite(level):
            f.level = float(np.clip(level, -MAX_LEVEL, MAX_LEVEL))
        imgui.same_line()
        if imgui.small_button("model's##level"):
            f.level = None
        model_trim = default_trim(G) if G is not None else OFFICIAL_TRIM
        changed, trim = imgui.slider_float("border trim", model_trim if f.trim is None else f.trim, 0.0, 0.3, "%.3f",
                                           imgui.SliderFlags_.always_clamp)
        if changed:
            f.trim = float(np.clip(trim, 0.0, 0.3))
        _, f.ply = imgui.checkbox("PLY", f.ply)
        imgui.same_line()
        _, f.obj = imgui.checkbox("OBJ", f.obj)
        imgui.same_line()
        _, f.mrc = imgui.checkbox("MRC (density grid)", f.mrc)
        _, f.out = imgui.input_text("output##mesh", f.out)
        help_marker("Marching cubes of the density on an N^3 grid over the box (app.mesh); the other "
                    "checked formats are written next to this path with their own suffix.")
        task = ctx.tasks.get("export")
        if task is not None and task.running:
            task_progress(task)
            return
        if imgui.button("export mesh") and G is not None:
            self.start(ctx)
        if task is not None and task.name == "mesh":
            imgui.text_wrapped(f"last: {task.error or task.result}")

    def start(self, ctx, out: Optional[str] = None):
        """Export a mesh of the current view's latent (app.mesh.export_mesh) as the 'export'
        task, with progress (density chunks) and cancel; a cancelled export leaves no file."""
        gate = export_gate(ctx, self.form)
        if gate is not READY:
            return gate
        from app import mesh
        f, G, state = self.form, ctx.model, ctx.state.copy()
        formats = f.formats()
        out = os.path.expanduser(out or f.out)
        root, ext = os.path.splitext(out)
        if ext.lower().lstrip(".") not in formats:
            out = f"{root}.{formats[0]}"
        kwargs = dict(res=f.res, level=f.level, trim=f.trim, formats=formats, chunk=f.chunk,
                      network=ctx.info.path if ctx.info is not None else None)

        def run(progress, cancel):
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            written = mesh.export_mesh(G, out, state, progress=progress, cancel=cancel, bar=False, **kwargs)
            return ", ".join(str(p) for p in written)

        return ctx.actions.start_task("export", "mesh", run, unit="chunks")
