"""Layers panel: the generator's layers in forward order (name, output shape, dtype); the one
selected is shown in the viewport as one channel, PCA to RGB, or a grid of channels.

The render process hooks the layer only while this panel is open and a layer is selected; a
backbone layer's capture recomputes the planes (its hook must see the backbone run), and the
panel says so.
"""
from __future__ import annotations

from imgui_bundle import imgui

from app import state as S

from .base import WARN_COLOUR, Panel, help_marker, needs_latent, text_error

TABLE_HEIGHT = 220
MODE_NAMES = dict(channel="one channel", pca="PCA to RGB", grid="grid of channels")
DEFAULT_RANGE = [-1.0, 1.0]


def layer_channels(name: str, shape) -> int:
    """Channels of `model.introspect.layer_image` for a layer of this output shape."""
    if name == "mapping":
        return 1
    if name == "planes":
        return int(shape[1] * shape[2])
    if name == "decoder":
        return int(shape[-1])
    return int(shape[1])


class LayersPanel(Panel):
    title = "Layers"
    section = "layers"

    def available(self, model) -> bool:
        return needs_latent(model)

    def draw(self, ctx) -> None:
        lay = ctx.state.layers
        frame = ctx.frame
        table = frame.layer_table if frame is not None and frame.layer_table else None
        if table is None:
            imgui.text_disabled("listing the layers (one hooked forward pass)...")
        else:
            flags = (imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.row_bg | imgui.TableFlags_.scroll_y
                     | imgui.TableFlags_.sizing_stretch_prop)
            if imgui.begin_table("layer table", 3, flags, imgui.ImVec2(0, TABLE_HEIGHT * ctx.scale)):
                imgui.table_setup_scroll_freeze(0, 1)
                for col in ("layer", "shape", "dtype"):
                    imgui.table_setup_column(col)
                imgui.table_headers_row()
                for name, _stage, shape, dtype in table:
                    imgui.table_next_row()
                    imgui.table_next_column()
                    clicked, _ = imgui.selectable(name, name == lay.name, imgui.SelectableFlags_.span_all_columns)
                    if clicked:
                        lay.name = name
                    imgui.table_next_column()
                    imgui.text("x".join(str(v) for v in shape))
                    imgui.table_next_column()
                    imgui.text(dtype)
                imgui.end_table()
        if lay.name is None:
            imgui.text_disabled("select a layer to show it in the viewport")
            return
        if imgui.small_button("show the render again"):
            lay.name = None
            return
        shape = next((s for n, _, s, _ in table or () if n == lay.name), None)
        modes = S.VIEW_MODES
        changed, i = imgui.combo("view", modes.index(lay.mode), [MODE_NAMES[m] for m in modes])
        if changed:
            lay.mode = modes[i]
        channels = layer_channels(lay.name, shape) if shape is not None else 1
        if lay.mode == "channel":
            _, ch = imgui.slider_int("channel##layer", min(lay.channel, channels - 1), 0, max(channels - 1, 0),
                                     flags=imgui.SliderFlags_.always_clamp)
            lay.channel = max(0, min(int(ch), channels - 1))
            changed, auto = imgui.checkbox("robust range (1st..99th percentile)", lay.range is None)
            if changed:
                lay.range = None if auto else list(DEFAULT_RANGE)
            if lay.range is not None:
                changed, lo, hi = imgui.drag_float_range2("range", lay.range[0], lay.range[1], 0.01,
                                                          -S.schema.MAX_FEATURE, S.schema.MAX_FEATURE, "%.3f")
                if changed and lo < hi:
                    lay.range = [float(lo), float(hi)]
        elif lay.mode == "grid":
            _, n = imgui.slider_int("first N channels", lay.grid, 1, S.schema.MAX_GRID,
                                    flags=imgui.SliderFlags_.always_clamp)
            lay.grid = max(1, min(int(n), S.schema.MAX_GRID))
        else:
            imgui.text_disabled("3 principal components, fitted once per layer and latent")
        if lay.name == "decoder" and ctx.model is not None:
            n = S.render_settings(ctx.model, ctx.state)["depth_resolution"]
            changed, middle = imgui.checkbox("middle coarse sample", lay.sample is None)
            if changed:
                lay.sample = None if middle else n // 2
            if lay.sample is not None:
                _, k = imgui.slider_int("coarse sample", min(lay.sample, n - 1), 0, n - 1,
                                        flags=imgui.SliderFlags_.always_clamp)
                lay.sample = max(0, min(int(k), n - 1))
            help_marker("The decoder's output (raw sigma, then the features) at one coarse sample of every ray.")
        if frame is not None and frame.planes_bypassed:
            imgui.text_colored(imgui.ImVec4(*WARN_COLOUR), "plane cache bypassed while a backbone layer is shown")
        if frame is not None and frame.inspect_error:
            text_error(frame.inspect_error)
