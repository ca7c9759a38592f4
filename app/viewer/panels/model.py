"""Model panel: open a generator or a fitted scene, the recent list, what is open."""
from __future__ import annotations

import os
import time

from imgui_bundle import imgui

from app.state.models import shipped_models

from .base import WARN_COLOUR, Panel, help_marker

SHIPPED_RESCAN_S = 2.0          # how often the shipped-model list is read again


class ModelPanel(Panel):
    title = "Model"
    default_open = True

    def __init__(self, recent=None, shipped_dir=None):
        self.recent = recent if recent is not None else []     # shared with the window's list
        self.shipped_dir = shipped_dir
        self._shipped, self._scanned = [], -SHIPPED_RESCAN_S

    def shipped(self):
        """checkpoints/*.safetensors with a model card, re-read every few seconds."""
        now = time.perf_counter()
        if now - self._scanned >= SHIPPED_RESCAN_S:
            self._shipped, self._scanned = shipped_models(self.shipped_dir), now
        return self._shipped

    def draw(self, ctx) -> None:
        st = ctx.settings
        if ctx.focus_model_path:
            imgui.set_keyboard_focus_here()
            ctx.focus_model_path = False
        submitted, st.model_path = imgui.input_text("path##model", st.model_path,
                                                    imgui.InputTextFlags_.enter_returns_true)
        imgui.same_line()
        if imgui.button("Open") or submitted:
            ctx.actions.open_model(st.model_path)
        if self.recent and imgui.begin_combo("recent", "choose a recent model"):
            for p in list(self.recent):
                if imgui.selectable(p, ctx.info is not None and p == ctx.info.path)[0]:
                    ctx.actions.open_model(p)
            imgui.end_combo()
        shipped = self.shipped()
        if shipped:
            imgui.text("shipped models:")
            for name, path, title in shipped:
                imgui.same_line()
                current = ctx.info is not None and os.path.abspath(ctx.info.path) == os.path.abspath(path)
                if imgui.radio_button(name, current) and not current:
                    ctx.actions.open_model(path)
                if imgui.is_item_hovered() and title:
                    imgui.set_tooltip(f"{title}\n{path}")
        task = ctx.tasks.get("model")
        if task is not None and task.running:
            imgui.text(f"{task.name}  {time.perf_counter() - task.started:.1f} s")
            imgui.progress_bar(-1.0 * imgui.get_time(), imgui.ImVec2(-1, 0), "loading...")
        m = ctx.info
        if ctx.model is None or m is None:
            imgui.text_colored(imgui.ImVec4(*WARN_COLOUR), "no model loaded")
            imgui.text_wrapped("Open a .safetensors or official EG3D .pkl (path above, recent list, "
                               "or drop it onto the window).")
            return
        imgui.text_wrapped(m.path)
        if not m.has_latent:
            imgui.text(f"fitted scene: {m.repr}, {m.params / 1e6:.2f} M params")
            imgui.text(f"{m.neural_res} px, fov {m.fov:.2f}, samples {m.depth[0]}+{m.depth[1]}")
            imgui.text_disabled("no latent: orbit it (camera, render type, exports)")
            return
        imgui.text(f"{m.img_resolution} px out, {m.neural_res} px neural render, {m.num_ws} ws")
        imgui.text(f"z {m.z_dim}, w {m.w_dim}, {m.params / 1e6:.2f} M params, samples {m.depth[0]}+{m.depth[1]}")
        if not m.cond:
            imgui.text_disabled("no generator pose conditioning (c is zeroed)")
        if m.filled_defaults:
            imgui.text_colored(imgui.ImVec4(*WARN_COLOUR), f"{len(m.filled_defaults)} official default(s) filled in")
            help_marker("Keys this imported snapshot's rendering_kwargs lacks; the official code's defaults "
                        "were used:\n" + "\n".join(m.filled_defaults))
            imgui.text_wrapped(", ".join(m.filled_defaults))
