"""Ray inspector: click the image (or hold Shift and hover) to trace that pixel's ray; ImPlot
shows the coarse samples' density and weights, where the importance samples fell, each
interval's colour contribution and the transmittance, and the depth the renderer reports.

The trace runs in the render process with the state's sample multipliers and sampling mode;
with deterministic sampling the same pixel gives the same plot."""
from __future__ import annotations

import numpy as np
from imgui_bundle import imgui, implot

from .base import Panel, needs_latent, text_error

PLOT_HEIGHT = 230
RGB_NAMES = ("red", "green", "blue")      # each interval's weight x colour, [0, 1]


def _mid(d: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((d[1:] + d[:-1]) / 2)


def _c(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


class RayPanel(Panel):
    title = "Ray inspector"
    section = "ray"

    def available(self, model) -> bool:
        return needs_latent(model)

    def draw(self, ctx) -> None:
        ray = ctx.state.ray
        frame = ctx.frame
        on_image = frame is not None and frame.shows == "image"
        if on_image and ctx.clicked_uv is not None:
            ray.pixel = [float(v) for v in ctx.clicked_uv]
        elif on_image and ctx.pointer_uv is not None and imgui.get_io().key_shift:
            ray.pixel = [float(v) for v in ctx.pointer_uv]
        imgui.text_disabled("click the image, or hold Shift and hover")
        if ray.pixel is None:
            if imgui.small_button("trace the centre pixel"):
                ray.pixel = [0.5, 0.5]
            return
        if imgui.small_button("clear##ray"):
            ray.pixel = None
            return
        t = frame.trace if frame is not None else None
        if frame is not None and frame.inspect_error:
            text_error(frame.inspect_error)
        if t is None:
            imgui.text_disabled("tracing...")
            return
        det = "deterministic" if frame.state.render.deterministic else "stochastic (jittered) sampling"
        imgui.text(f"pixel row {t['row']} col {t['col']} of {t['resolution']}^2, {det}")
        n_f = 0 if t["depths_fine"] is None else len(t["depths_fine"])
        imgui.text(f"depth {t['depth']:.4f}  opacity {t['opacity']:.4f}  samples {len(t['depths_coarse'])}+{n_f}")
        self._plot_density(t)
        self._plot_colour(t)

    @staticmethod
    def _plot_density(t) -> None:
        if not implot.begin_plot("density and weights", imgui.ImVec2(-1, PLOT_HEIGHT)):
            return
        implot.setup_axes("depth", "weight", implot.AxisFlags_.auto_fit, implot.AxisFlags_.auto_fit)
        implot.setup_axis(implot.ImAxis_.y2, "density", implot.AxisFlags_.aux_default | implot.AxisFlags_.auto_fit)
        implot.setup_legend(implot.Location_.north_east, implot.LegendFlags_.outside | implot.LegendFlags_.horizontal)
        dc = _c(t["depths_coarse"])
        sigma = _c(t["sigma_coarse"])
        implot.set_axes(implot.ImAxis_.x1, implot.ImAxis_.y2)
        implot.plot_line("coarse density", dc, _c(np.logaddexp(0.0, sigma - 1.0)))   # softplus(sigma - 1)
        implot.set_axes(implot.ImAxis_.x1, implot.ImAxis_.y1)
        if t["weights_coarse"] is not None:
            w = _c(t["weights_coarse"])
            implot.plot_line("coarse w", _c(_mid(dc)[:len(w)]), w)
        implot.plot_line("weights", _mid(_c(t["depths"])), _c(t["weights"]))
        if t["depths_fine"] is not None:
            df = _c(t["depths_fine"])
            implot.plot_scatter("importance", df, np.zeros_like(df))
        implot.plot_inf_lines("depth", _c([t["depth"]]))
        implot.end_plot()

    @staticmethod
    def _plot_colour(t) -> None:
        if not implot.begin_plot("colour and transmittance", imgui.ImVec2(-1, PLOT_HEIGHT)):
            return
        implot.setup_axes("depth", "", implot.AxisFlags_.auto_fit, implot.AxisFlags_.auto_fit)
        implot.setup_legend(implot.Location_.north_east, implot.LegendFlags_.outside | implot.LegendFlags_.horizontal)
        mid = _mid(_c(t["depths"]))
        implot.plot_line("transmittance", mid, _c(t["transmittance"]))
        contribution = _c(t["contribution"])
        for k, name in enumerate(RGB_NAMES):
            implot.plot_line(name, mid, _c(contribution[:, k]))
        implot.plot_inf_lines("depth", _c([t["depth"]]))
        implot.end_plot()
