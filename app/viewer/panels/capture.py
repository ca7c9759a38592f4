"""Capture panel: render / window PNGs, the view state as a file or on the clipboard."""
from __future__ import annotations

from imgui_bundle import imgui

from app import state as S

from .base import Panel, help_marker


class CapturePanel(Panel):
    title = "Capture & view state"

    def draw(self, ctx) -> None:
        st, act = ctx.settings, ctx.actions
        _, st.out_dir = imgui.input_text("output folder", st.out_dir)
        if imgui.button("save render PNG (S)"):
            act.save_render()
        imgui.same_line()
        if imgui.button("save window PNG (F12)"):
            act.save_window()
        imgui.separator()
        _, st.state_path = imgui.input_text("state file", st.state_path)
        if imgui.button("save state (Ctrl+S)"):
            act.save_state()
        imgui.same_line()
        if imgui.button("load state (Ctrl+L)"):
            act.load_state(st.state_path)
        if imgui.button("copy JSON"):
            try:
                act.set_clipboard(ctx.state.to_json())
                act.message("state JSON copied to the clipboard")
            except S.StateError as exc:
                act.fail(str(exc))
        imgui.same_line()
        if imgui.button("paste JSON"):
            try:
                act.set_state(S.ViewerState.from_json(act.get_clipboard() or ""))
                act.message("state pasted from the clipboard")
            except S.StateError as exc:
                act.fail(f"clipboard: {exc}")
        if imgui.button("reset view state"):
            act.set_state(S.ViewerState())
        help_marker("A state file (or a PNG saved here) reproduces the view exactly, also in "
                    "`visualizer.py turntable --state FILE`. Drop one onto the window to load it.")
