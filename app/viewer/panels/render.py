"""Render panel: render type, colour ranges, neural resolution, samples, noise; texture filter
and image zoom."""
from __future__ import annotations

import math

import numpy as np
from imgui_bundle import imgui

from app import state as S

from .base import Panel, help_marker

NAMES = dict(final="final (super-res)", raw="raw neural render", depth="depth", alpha="opacity",
             feature="feature channel")
DEFAULT_DEPTH_RANGE = [2.25, 3.3]       # the FFHQ ray limits, a starting point for a manual range
DEPTH_SLIDER = (0.0, 20.0)
SAMPLE_SLIDER = (0.125, 4.0)
NEURAL_RES_MIN = 16
ZOOM_SLIDER = (0.1, 16.0)


class RenderPanel(Panel):
    title = "Render"
    section = "render"
    default_open = True

    def draw(self, ctx) -> None:
        rs, st = ctx.state.render, ctx.settings
        names = dict(NAMES)
        if not ctx.has_latent:
            names["final"] = "final (composited colour)"
        types = ctx.render_types()
        current = types.index(rs.type) if rs.type in types else 0
        changed, i = imgui.combo("render type", current, [names[t] for t in types])
        if changed:
            rs.type = types[i]
        if rs.type == "feature":
            nf = ctx.info.feature_channels if ctx.info is not None else 32
            _, ch = imgui.slider_int("channel", rs.feature_channel, 0, nf - 1, flags=imgui.SliderFlags_.always_clamp)
            rs.feature_channel = int(np.clip(ch, 0, nf - 1))
        if rs.type == "depth":
            changed, auto = imgui.checkbox("auto depth range", rs.depth_range is None)
            if changed:
                rs.depth_range = None if auto else list(DEFAULT_DEPTH_RANGE)
            if rs.depth_range is not None:
                changed, lo, hi = imgui.drag_float_range2("near/far", rs.depth_range[0], rs.depth_range[1],
                                                         0.005, *DEPTH_SLIDER, "%.3f")
                if changed and math.isfinite(lo) and math.isfinite(hi) and DEPTH_SLIDER[0] <= lo < hi:
                    rs.depth_range = [float(lo), float(min(hi, DEPTH_SLIDER[1]))]
        native = ctx.info.neural_res if ctx.info is not None else 128
        changed, nr = imgui.slider_int("neural res", rs.neural_res or native, NEURAL_RES_MIN, max(512, 2 * native),
                                       flags=imgui.SliderFlags_.always_clamp)
        if changed:
            nr = int(np.clip(nr, NEURAL_RES_MIN, max(512, 2 * native)))
            rs.neural_res = None if nr == native else nr
        imgui.same_line()
        if imgui.small_button("native"):
            rs.neural_res = None
        log = imgui.SliderFlags_.logarithmic | imgui.SliderFlags_.always_clamp
        _, rs.depth_mult = imgui.slider_float("uniform samples x", rs.depth_mult, *SAMPLE_SLIDER, "%.3f", log)
        _, rs.importance_mult = imgui.slider_float("importance x", rs.importance_mult, *SAMPLE_SLIDER, "%.3f", log)
        if ctx.model is not None:
            kw = S.render_settings(ctx.model, ctx.state)
            imgui.text_disabled(f"{kw['depth_resolution']} + {kw['depth_resolution_importance']} "
                                f"samples per ray, {kw['neural_rendering_resolution']} px")
        changed, i = imgui.combo("noise mode", S.NOISE_MODES.index(rs.noise_mode), list(S.NOISE_MODES))
        if changed:
            rs.noise_mode = S.NOISE_MODES[i]
        _, rs.deterministic = imgui.checkbox("deterministic sampling", rs.deterministic)
        help_marker("No stratified jitter: the same state always gives the same pixels.")
        _, st.cache_planes = imgui.checkbox("cache planes", st.cache_planes)
        help_marker("Reuse the tri-planes while only the camera / render settings change.")
        imgui.same_line()
        _, st.fast_preview = imgui.checkbox("fast preview while dragging", st.fast_preview)
        changed, st.smooth = imgui.checkbox("smooth texture filter", st.smooth)
        if changed:
            ctx.actions.refresh_textures()
        _, zoom = imgui.slider_float("image zoom", ctx.view.zoom, *ZOOM_SLIDER, "%.2fx", log)
        ctx.view.zoom = float(np.clip(zoom, *ZOOM_SLIDER))
        if imgui.small_button("fit (F)"):
            ctx.view.fit()
        imgui.same_line()
        if imgui.small_button("1:1 pixels"):
            ctx.actions.pixel_zoom()
