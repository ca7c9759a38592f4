"""Style-mixing panel: which ws come from the mix seed."""
from __future__ import annotations

import numpy as np
from imgui_bundle import imgui

from app import state as S

from .base import Panel, needs_latent
from .latent import DEFAULT_NUM_WS

PER_ROW = 7
GROUPS = (("coarse", 0, 4), ("middle", 4, 8), ("fine", 8, None))


class MixingPanel(Panel):
    title = "Style mixing"
    section = "latent"

    def available(self, model) -> bool:
        return needs_latent(model)

    def draw(self, ctx) -> None:
        lat = ctx.state.latent
        num_ws = ctx.model.num_ws if ctx.model is not None else DEFAULT_NUM_WS
        _, lat.mix_enabled = imgui.checkbox("enable style mixing", lat.mix_enabled)
        _, ms = imgui.input_int("mix seed", lat.mix_seed)
        lat.mix_seed = int(np.clip(ms, 0, S.MAX_SEED))
        layers = sorted(i for i in lat.mix_layers if 0 <= i < num_ws)
        lo, hi = (layers[0], layers[-1]) if layers else (num_ws // 2, num_ws - 1)
        changed, lo, hi = imgui.drag_int_range2("layer range", lo, hi, 0.1, 0, num_ws - 1)
        if changed:
            lo, hi = int(np.clip(min(lo, hi), 0, num_ws - 1)), int(np.clip(max(lo, hi), 0, num_ws - 1))
            lat.mix_layers = list(range(lo, hi + 1))
        presets = [(name, range(a, min(b if b is not None else num_ws, num_ws))) for name, a, b in GROUPS]
        for label, rng in presets + [("none", range(0)), ("all", range(num_ws))]:
            if imgui.small_button(label):
                lat.mix_layers = list(rng)
            imgui.same_line()
        imgui.new_line()
        imgui.text("ws taken from the mix seed:")
        current = set(lat.mix_layers)
        for i in range(num_ws):
            if i % PER_ROW:
                imgui.same_line()
            changed, on = imgui.checkbox(f"{i}##mix", i in current)
            if changed:
                current = (current | {i}) if on else (current - {i})
                lat.mix_layers = sorted(current)
