"""Performance panel: UI and render rates, per-stage times, the planes cache, UI frame times."""
from __future__ import annotations

from imgui_bundle import imgui

from .base import Panel

STAGES = ("mapping", "planes", "render", "superres", "to_rgb", "upload", "total")
PLOT_HEIGHT = 40


class PerfPanel(Panel):
    title = "Performance"

    def draw(self, ctx) -> None:
        frame, perf = ctx.frame, ctx.perf
        total = frame.timings.get("total", 0.0) if frame is not None else 0.0
        imgui.text(f"UI {perf.ui_fps:.0f} FPS, renders {perf.render_fps(total):.1f} FPS")
        if frame is not None:
            t = frame.timings
            for k in STAGES:
                if k in t:
                    extra = " (cached)" if k == "planes" and frame.planes_cached else ""
                    imgui.text(f"{k:>9}: {t[k]:7.1f} ms{extra}")
            if frame.preview:
                imgui.text_disabled("last frame was a fast preview")
            imgui.text_disabled(f"plane cache: {perf.cache_hits} hits, {perf.cache_misses} misses")
        imgui.text_disabled(f"UI frame times (ms), last {len(perf.frame_ms)} frames")
        imgui.plot_lines("##frame_ms", perf.frame_ms, graph_size=imgui.ImVec2(-1, PLOT_HEIGHT * ctx.scale))
