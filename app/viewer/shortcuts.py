"""Keyboard shortcuts: the table shown in the help window (F1) and what each key does."""
from __future__ import annotations

from typing import Callable

from imgui_bundle import imgui

from .. import state as S
from .panels.latent import set_seed

SHORTCUTS = [
    ("Left drag (viewport)", "orbit the camera (yaw / pitch around the pivot)"),
    ("Scroll (viewport)", "zoom the camera (radius or fov, see Camera)"),
    ("Ctrl + scroll", "magnify the image (2D zoom)"),
    ("Right / middle drag", "pan the magnified image"),
    ("Double click", "fit the image to the viewport"),
    ("R", "reset camera to the model's average camera"),
    ("F", "fit image (reset 2D zoom / pan)"),
    ("Right / ]   Left / [", "next / previous seed"),
    ("Space", "animate: sweep seeds continuously"),
    ("O", "auto-orbit the camera"),
    ("C", "cycle conditioning pose mode (frontal / camera / custom)"),
    ("X", "swap conditioning pose and camera pose"),
    ("B", "toggle the A/B pose-conditioning split"),
    ("1 .. 5", "render type: final, raw, depth, alpha, feature"),
    ("S", "save the render as PNG (state in metadata)"),
    ("F12 / Shift+S", "save a screenshot of the whole window"),
    ("Ctrl+S / Ctrl+L", "save / load the view state (JSON)"),
    ("Ctrl+O", "focus the model path field"),
    ("Ctrl+Q", "quit"),
    ("Tab", "show / hide the side panel"),
    ("F1 / H", "show / hide this help"),
    ("F2", "show / hide the performance overlay"),
    ("Esc", "close help; stop animation"),
]


def handle(ctx, close_window: Callable[[], None]) -> None:
    """Apply this frame's key presses (not while a text field has the keyboard)."""
    io = imgui.get_io()
    if io.want_text_input:
        return
    K, st, s, act = imgui.Key, ctx.settings, ctx.state, ctx.actions

    def pressed(key, repeat=False):
        return imgui.is_key_pressed(key, repeat)

    if io.key_ctrl:
        if pressed(K.s):
            act.save_state()
        elif pressed(K.l):
            act.load_state(st.state_path)
        elif pressed(K.o):
            st.show_panel = True
            ctx.focus_model_path = True
        elif pressed(K.q):
            close_window()
        return
    if pressed(K.f1) or pressed(K.h):
        st.show_help = not st.show_help
    if pressed(K.f2):
        st.show_perf = not st.show_perf
    if pressed(K.tab):
        st.show_panel = not st.show_panel
    if pressed(K.escape):
        st.show_help = False
        st.animate = st.orbit = False
    if pressed(K.r):
        s.camera = S.CameraSection()
    if pressed(K.f):
        ctx.view.fit()
    if pressed(K.right_arrow, True) or pressed(K.right_bracket, True):
        set_seed(s.latent, s.latent.seed + 1)
    if pressed(K.left_arrow, True) or pressed(K.left_bracket, True):
        set_seed(s.latent, s.latent.seed - 1)
    if pressed(K.space):
        st.animate = not st.animate
    if pressed(K.o):
        st.orbit = not st.orbit
    if pressed(K.c):
        modes = S.COND_MODES
        s.conditioning.mode = modes[(modes.index(s.conditioning.mode) + 1) % len(modes)]
    if pressed(K.x):
        act.swap_conditioning()
    if pressed(K.b):
        st.split_ab = not st.split_ab
    for i, key in enumerate((K._1, K._2, K._3, K._4, K._5)):
        if pressed(key) and S.RENDER_TYPES[i] in ctx.render_types():
            s.render.type = S.RENDER_TYPES[i]
    if pressed(K.f12) or (io.key_shift and pressed(K.s)):
        act.save_window()
    elif pressed(K.s):
        act.save_render()


def draw_help(ctx, panel_width: float):
    """The shortcut table, centred on the viewport; returns its window rect (x, y, w, h)."""
    io = imgui.get_io()
    imgui.set_next_window_pos(imgui.ImVec2(io.display_size.x * 0.5 - panel_width * 0.5, io.display_size.y * 0.5),
                              imgui.Cond_.always, imgui.ImVec2(0.5, 0.5))
    imgui.set_next_window_bg_alpha(0.92)
    _, opened = imgui.begin("Keyboard & mouse (F1)", True,
                            imgui.WindowFlags_.always_auto_resize | imgui.WindowFlags_.no_saved_settings
                            | imgui.WindowFlags_.no_collapse)
    if imgui.begin_table("keys", 2, imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v):
        for key, what in SHORTCUTS:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text(key)
            imgui.table_next_column()
            imgui.text(what)
        imgui.end_table()
    pos, size = imgui.get_window_pos(), imgui.get_window_size()
    imgui.end()
    if opened is False:
        ctx.settings.show_help = False
    return (pos.x, pos.y, size.x, size.y)
