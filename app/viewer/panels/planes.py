"""Tri-planes panel: the three planes side by side in the viewport (xy, xz, and the third with
the model's axes: zx official, yz clean), one channel or PCA to RGB, the camera frustum's
footprint and the inspected ray overlaid; exports PNGs and the raw tensor as .npy."""
from __future__ import annotations

import os

from imgui_bundle import imgui

from app import state as S

from .base import Panel, help_marker, needs_latent, text_error

MODE_NAMES = dict(channel="one channel", pca="PCA to RGB")


def plane_channels(model) -> int:
    """Channels per plane of the open generator."""
    return int(model.cfg.backbone.out_channels // 3) if model is not None else 32


class PlanesPanel(Panel):
    title = "Tri-planes"
    section = "planes"

    def available(self, model) -> bool:
        return needs_latent(model)

    def draw(self, ctx) -> None:
        from model.introspect import plane_labels
        ps = ctx.state.planes
        _, ps.show = imgui.checkbox("show the planes in the viewport", ps.show)
        axes = ctx.info.plane_axes if ctx.info is not None else "official"
        labels = plane_labels(axes)
        imgui.text_disabled(f"left to right: {labels[0]} | {labels[1]} | {labels[2]} ({axes} axes)")
        modes = ("channel", "pca")
        changed, i = imgui.combo("view##planes", modes.index(ps.mode), [MODE_NAMES[m] for m in modes])
        if changed:
            ps.mode = modes[i]
        if ps.mode == "channel":
            n = plane_channels(ctx.model)
            _, ch = imgui.slider_int("channel##planes", min(ps.channel, n - 1), 0, n - 1,
                                     flags=imgui.SliderFlags_.always_clamp)
            ps.channel = max(0, min(int(ch), n - 1))
            help_marker("One robust range (1st..99th percentile) over the three planes.")
        _, ps.frustum = imgui.checkbox("camera frustum footprint", ps.frustum)
        imgui.same_line()
        _, ps.ray = imgui.checkbox("inspected ray", ps.ray)
        if ps.ray and ctx.state.ray.pixel is None:
            imgui.text_disabled("pick a ray in the Ray inspector")
        if imgui.button("export PNGs + .npy"):
            self.export(ctx)
        frame = ctx.frame
        if frame is not None and frame.inspect_error and ps.show:
            text_error(frame.inspect_error)

    def export(self, ctx, out_dir=None):
        """Write the planes of the current view (a background task); never over an existing file."""
        if ctx.model is None:
            ctx.actions.fail("no model open")
            return None
        try:
            ctx.state.validate()
        except S.StateError as exc:
            ctx.actions.fail(str(exc))
            return None
        from app.export import export_planes, free_stem
        G, state = ctx.model, ctx.state.copy()
        folder = out_dir or ctx.settings.out_dir
        stem = free_stem(os.path.join(folder, f"planes_seed{state.latent.seed:04d}"))
        return ctx.actions.start_task("export", "planes", lambda progress, cancel: export_planes(G, stem, state))
