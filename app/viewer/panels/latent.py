"""Latent panel: seed, continuous seed sweep, A -> B interpolation in w, truncation; or the
projected latent of a projection file (then truncation and style mixing apply to it)."""
from __future__ import annotations

import math
import os

import numpy as np
from imgui_bundle import imgui

from app import state as S

from .base import Panel, help_marker, needs_latent

DEFAULT_NUM_WS = 14
PSI_SLIDER = (-1.0, 1.5)
PROJECTED_COLOUR = (0.5, 0.9, 0.6, 1.0)


def set_seed(latent: S.LatentSection, seed: int) -> None:
    latent.seed = int(seed) % (S.MAX_SEED + 1)
    latent.seed_frac = 0.0


class LatentPanel(Panel):
    title = "Latent"
    section = "latent"
    default_open = True

    def available(self, model) -> bool:
        return needs_latent(model)

    heading = ""                       # what the last frame said the latent is ("seed 5", "projected: ...")

    def draw(self, ctx) -> None:
        lat = ctx.state.latent
        if lat.projection is not None:
            self.heading = f"projected: {os.path.basename(lat.projection)}"
            imgui.text_colored(imgui.ImVec4(*PROJECTED_COLOUR), self.heading)
            help_marker(f"{lat.projection}\nSHA-256 {lat.projection_sha256}\n"
                        "the latent of a projection file (visualizer.py invert or the Invert panel); "
                        "truncation and style mixing apply to it")
            if imgui.button("use seeds instead"):
                lat.projection = lat.projection_sha256 = None
        else:
            self.heading = f"seed {lat.seed}"
            self._draw_seeds(ctx)
        self._draw_truncation(ctx)

    def _draw_seeds(self, ctx) -> None:
        lat, st = ctx.state.latent, ctx.settings
        changed, seed = imgui.input_int("seed", lat.seed, 1, 10)
        if changed:
            set_seed(lat, max(0, seed))
        v = lat.seed + lat.seed_frac
        changed, v = imgui.drag_float("sweep", v, 0.01, 0.0, float(S.MAX_SEED - 1), "%.2f")
        if changed and math.isfinite(v):
            v = float(np.clip(v, 0.0, S.MAX_SEED - 1))
            lat.seed, lat.seed_frac = int(math.floor(v)), float(v - math.floor(v))
        help_marker("Drag to move continuously between seeds: w = lerp(w(seed), w(seed+1), frac)")
        _, st.animate = imgui.checkbox("animate (Space)", st.animate)
        imgui.same_line()
        imgui.push_item_width(90 * ctx.scale)
        _, st.animate_speed = imgui.slider_float("seeds/s", st.animate_speed, 0.05, 5.0, "%.2f")
        imgui.pop_item_width()
        imgui.separator()
        _, lat.interp_enabled = imgui.checkbox("A -> B interpolation (in w)", lat.interp_enabled)
        if lat.interp_enabled:
            _, a = imgui.input_int("seed A", lat.interp_seed_a)
            _, b = imgui.input_int("seed B", lat.interp_seed_b)
            lat.interp_seed_a = int(np.clip(a, 0, S.MAX_SEED))
            lat.interp_seed_b = int(np.clip(b, 0, S.MAX_SEED))
            _, t = imgui.slider_float("t (A -> B)", lat.interp_t, 0.0, 1.0, "%.3f",
                                      imgui.SliderFlags_.always_clamp)
            lat.interp_t = float(np.clip(t, 0.0, 1.0))

    def _draw_truncation(self, ctx) -> None:
        lat = ctx.state.latent
        imgui.separator()
        _, psi = imgui.slider_float("truncation psi", lat.trunc_psi, *PSI_SLIDER, "%.2f")
        if math.isfinite(psi):
            lat.trunc_psi = float(np.clip(psi, -S.schema.MAX_PSI, S.schema.MAX_PSI))
        num_ws = ctx.model.num_ws if ctx.model is not None else DEFAULT_NUM_WS
        changed, all_layers = imgui.checkbox("truncate all layers", lat.trunc_cutoff is None)
        if changed:
            lat.trunc_cutoff = None if all_layers else min(DEFAULT_NUM_WS, num_ws)
        if lat.trunc_cutoff is not None:
            _, c = imgui.slider_int("cutoff (layers)", lat.trunc_cutoff, 0, num_ws,
                                    flags=imgui.SliderFlags_.always_clamp)
            lat.trunc_cutoff = int(np.clip(c, 0, num_ws))
