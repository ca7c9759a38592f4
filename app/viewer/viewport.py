"""The viewport: the rendered texture, 2D zoom / pan, the overlays, and mouse orbit.

Mouse gestures are accumulated in the glfw callbacks (`PointerInput`), not sampled once per UI
frame: when the CPU is busy rendering and the UI runs at a few frames per second, a press, the
moves and the release may all arrive between two frames, and the camera still turns by the full
distance of the drag.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from imgui_bundle import imgui

from .. import state as S

ORBIT_DEG_PER_PX = 0.35
MAX_PITCH_UI = 89.0
WHEEL_CAMERA_FACTOR = 0.93          # radius / fov x this per wheel step
WHEEL_IMAGE_FACTOR = 1.15           # image magnification per Ctrl+wheel step
ZOOM_LIMITS = (0.1, 32.0)
RADIUS_LIMITS = (0.05, 50.0)
FOV_LIMITS = (1.0, 120.0)
MESSAGE_SECONDS = 6.0
BACKGROUND = (0.11, 0.11, 0.12, 1.0)
STATUS_BACKGROUND = (0.06, 0.06, 0.07, 1.0)
SPLIT_COLOUR = (1, 1, 0.2, 0.9)
ERROR_COLOUR = (1.0, 0.45, 0.4, 1.0)
LEFT, RIGHT, MIDDLE = 0, 1, 2
CLICK_SLOP_PX = 3.0                 # a left press that moves less than this is a click
RAY_MARK_COLOUR = (1.0, 0.16, 0.8, 1.0)


@dataclass
class Gesture:
    """What the pointer did since the last frame."""
    orbit: Tuple[float, float] = (0.0, 0.0)     # pixels dragged with the left button
    pan: Tuple[float, float] = (0.0, 0.0)       # pixels dragged with the right / middle button
    wheel: float = 0.0
    wheel_pos: Tuple[float, float] = (0.0, 0.0)
    click: Optional[Tuple[float, float]] = None  # a left press and release that did not drag


class PointerInput:
    """Accumulates viewport drags and scrolls from the glfw callbacks (window coordinates).

    A drag belongs to the viewport when its press lands inside `region` (the viewport minus the
    status bar, as drawn last frame) and outside `blockers` (windows drawn over it, e.g. help).
    """

    def __init__(self):
        self.pos: Tuple[float, float] = (0.0, 0.0)
        self.region = (0.0, 0.0, 0.0, 0.0)
        self.blockers: list = []
        self._held: set = set()             # viewport buttons held down
        self._press: Optional[Tuple[float, float]] = None
        self._moved = 0.0
        self._g = Gesture()

    def inside(self, x: float, y: float) -> bool:
        rx, ry, rw, rh = self.region
        if not (rx <= x < rx + rw and ry <= y < ry + rh):
            return False
        return not any(bx <= x < bx + bw and by <= y < by + bh for bx, by, bw, bh in self.blockers)

    def move(self, x: float, y: float) -> None:
        dx, dy = x - self.pos[0], y - self.pos[1]
        self.pos = (x, y)
        g = self._g
        if LEFT in self._held:
            g.orbit = (g.orbit[0] + dx, g.orbit[1] + dy)
            self._moved += abs(dx) + abs(dy)
        if RIGHT in self._held or MIDDLE in self._held:
            g.pan = (g.pan[0] + dx, g.pan[1] + dy)

    def button(self, button: int, pressed: bool) -> None:
        if pressed and self.inside(*self.pos):
            self._held.add(button)
            if button == LEFT:
                self._press, self._moved = self.pos, 0.0
        elif not pressed:
            if button == LEFT and LEFT in self._held and self._moved < CLICK_SLOP_PX:
                self._g.click = self._press
            self._held.discard(button)

    def scroll(self, dy: float) -> None:
        if self.inside(*self.pos):
            self._g.wheel += dy
            self._g.wheel_pos = self.pos

    @property
    def dragging(self) -> bool:
        return LEFT in self._held

    def take(self) -> Gesture:
        g, self._g = self._g, Gesture()
        return g


def orbit(camera: S.CameraSection, dx: float, dy: float, scale: float = 1.0) -> None:
    """Orbit by a mouse delta in pixels (drag right = the subject turns right)."""
    k = ORBIT_DEG_PER_PX / scale
    camera.yaw = ((camera.yaw - dx * k) + 180.0) % 360.0 - 180.0
    camera.pitch = float(np.clip(camera.pitch - dy * k, -MAX_PITCH_UI, MAX_PITCH_UI))


def zoom_camera(state: S.ViewerState, G, wheel: float, mode: str) -> None:
    """Scroll: the radius (or the fov) times 0.93 per wheel step."""
    factor = WHEEL_CAMERA_FACTOR ** wheel
    cam = S.resolved_camera(state, G)
    if mode == "fov":
        state.camera.fov = float(np.clip(cam["fov"] * factor, *FOV_LIMITS))
    else:
        state.camera.radius = float(np.clip(cam["radius"] * factor, *RADIUS_LIMITS))


class Viewport:
    """Draws the frame on screen into the left part of the window and turns gestures into camera
    and 2D-view changes."""

    def __init__(self, gl):
        self.gl = gl
        self.input = PointerInput()
        self.tex = self._make_texture()
        self.tex_b = self._make_texture()
        self._tex_size = {self.tex: (0, 0), self.tex_b: (0, 0)}
        self.rect = (0.0, 0.0, 0.0, 0.0)         # window coordinates (x, y, w, h)
        self.image_rect = (0.0, 0.0, 0.0, 0.0)   # where the render is drawn
        self.text = ""                           # the message drawn when there is no image
        self.upload_ms = 0.0

    # -- textures ------------------------------------------------------------------------------
    def _make_texture(self) -> int:
        gl = self.gl
        tex = int(gl.glGenTextures(1))
        gl.glBindTexture(gl.GL_TEXTURE_2D, tex)
        for name in (gl.GL_TEXTURE_WRAP_S, gl.GL_TEXTURE_WRAP_T):
            gl.glTexParameteri(gl.GL_TEXTURE_2D, name, gl.GL_CLAMP_TO_EDGE)
        for name in (gl.GL_TEXTURE_MIN_FILTER, gl.GL_TEXTURE_MAG_FILTER):
            gl.glTexParameteri(gl.GL_TEXTURE_2D, name, gl.GL_LINEAR)
        gl.glBindTexture(gl.GL_TEXTURE_2D, 0)
        return tex

    def _upload(self, tex: int, rgb: np.ndarray, smooth: bool) -> None:
        gl = self.gl
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        gl.glBindTexture(gl.GL_TEXTURE_2D, tex)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)
        if self._tex_size.get(tex) != (w, h):
            gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGB8, w, h, 0, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, rgb)
            self._tex_size[tex] = (w, h)
        else:
            gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, w, h, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, rgb)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR if smooth else gl.GL_NEAREST)
        gl.glBindTexture(gl.GL_TEXTURE_2D, 0)

    def show(self, frame, smooth: bool) -> None:
        """Upload a finished frame (UI thread)."""
        t0 = time.perf_counter()
        self._upload(self.tex, frame.rgb, smooth)
        if frame.rgb_b is not None:
            self._upload(self.tex_b, frame.rgb_b, smooth)
        self.upload_ms = (time.perf_counter() - t0) * 1e3
        frame.timings["upload"] = self.upload_ms

    # -- interaction ---------------------------------------------------------------------------
    def apply_gestures(self, ctx) -> None:
        """Turn the accumulated pointer gestures into camera / 2D-view changes."""
        g = self.input.take()
        ctx.pointer_uv = self.image_uv(*self.input.pos)
        ctx.clicked_uv = self.image_uv(*g.click) if g.click is not None else None
        if g.orbit != (0.0, 0.0):
            orbit(ctx.state.camera, g.orbit[0], g.orbit[1], ctx.scale)
        if g.pan != (0.0, 0.0):
            ctx.view.pan = (ctx.view.pan[0] + g.pan[0], ctx.view.pan[1] + g.pan[1])
        if g.wheel:
            if imgui.get_io().key_ctrl:
                self.zoom_image(ctx.view, g.wheel, g.wheel_pos)
            else:
                zoom_camera(ctx.state, ctx.model, g.wheel, ctx.settings.scroll_zooms)

    def image_uv(self, x: float, y: float) -> Optional[Tuple[float, float]]:
        """Window coordinates -> [0, 1] image coordinates (x right, y down), None off the image."""
        x0, y0, w, h = self.image_rect
        if w <= 0 or h <= 0 or not self.input.inside(x, y):
            return None
        u, v = (x - x0) / w, (y - y0) / h
        return (float(u), float(v)) if 0.0 <= u < 1.0 and 0.0 <= v < 1.0 else None

    def zoom_image(self, view, wheel: float, mouse: Tuple[float, float]) -> None:
        """Magnify the image, keeping the point under the mouse fixed."""
        old = view.zoom
        new = float(np.clip(old * WHEEL_IMAGE_FACTOR ** wheel, *ZOOM_LIMITS))
        _, _, vw, vh = self.rect
        cx, cy = vw / 2 + view.pan[0], vh / 2 + view.pan[1]
        mx, my = mouse[0] - cx, mouse[1] - cy
        k = new / old
        view.pan = (view.pan[0] + mx * (1 - k), view.pan[1] + my * (1 - k))
        view.zoom = new

    def pixel_zoom(self, view, frame, fb_scale: float) -> None:
        """1 image pixel = 1 framebuffer pixel."""
        if frame is None or frame.rgb is None:
            return
        h, w = frame.rgb.shape[:2]
        vw, vh = self.rect[2], self.rect[3] - imgui.get_frame_height() - 4
        view.zoom, view.pan = 1.0 / (min(vw / w, vh / h) * fb_scale), (0.0, 0.0)

    # -- drawing -------------------------------------------------------------------------------
    def draw(self, ctx, width: float, messages, loading: bool, rendering: bool) -> None:
        io = imgui.get_io()
        H = io.display_size.y
        vw = max(1.0, width)
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(vw, H))
        flags = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move
                 | imgui.WindowFlags_.no_saved_settings | imgui.WindowFlags_.no_bring_to_front_on_focus
                 | imgui.WindowFlags_.no_scroll_with_mouse | imgui.WindowFlags_.no_nav)
        imgui.push_style_var(imgui.StyleVar_.window_padding, imgui.ImVec2(0, 0))
        imgui.push_style_color(imgui.Col_.window_bg, imgui.ImVec4(*BACKGROUND))
        imgui.begin("##viewport", None, flags)
        imgui.pop_style_color()
        imgui.pop_style_var()
        self.rect = (0.0, 0.0, vw, H)
        status_h = imgui.get_frame_height() + 4
        area_h = max(1.0, H - status_h)
        self.input.region = (0.0, 0.0, vw, area_h)
        dl = imgui.get_window_draw_list()
        imgui.set_cursor_pos(imgui.ImVec2(0, 0))
        imgui.invisible_button("##viewport_input", imgui.ImVec2(vw, H),
                               imgui.ButtonFlags_.mouse_button_left | imgui.ButtonFlags_.mouse_button_right
                               | imgui.ButtonFlags_.mouse_button_middle)
        if imgui.is_item_hovered() and imgui.is_mouse_double_clicked(0):
            ctx.view.fit()
        frame = ctx.frame
        if frame is not None and frame.rgb is not None:
            self._draw_image(ctx, dl, frame, vw, area_h)
        else:
            self._draw_placeholder(ctx, dl, vw, area_h, loading)
        self._draw_status(ctx, dl, vw, H, status_h, loading, rendering)
        now = time.perf_counter()
        for i, (_, m) in enumerate([(t, m) for t, m in messages if now - t < MESSAGE_SECONDS][-3:]):
            self.label(dl, 8, H - status_h - (i + 1) * (imgui.get_text_line_height() + 8) - 4, m)
        if ctx.error:
            self.label(dl, 8, 8, "error: " + ctx.error, color=ERROR_COLOUR)
        imgui.end()

    def _draw_image(self, ctx, dl, frame, vw: float, area_h: float) -> None:
        """The image letterboxed (square renders), magnified / panned; the A/B split on top."""
        h, w = frame.rgb.shape[:2]
        fit = min(vw / w, area_h / h)
        dw, dh = w * fit * ctx.view.zoom, h * fit * ctx.view.zoom
        x0 = (vw - dw) / 2 + ctx.view.pan[0]
        y0 = (area_h - dh) / 2 + ctx.view.pan[1]
        self.image_rect = (x0, y0, dw, dh)
        dl.add_image(imgui.ImTextureRef(self.tex), imgui.ImVec2(x0, y0), imgui.ImVec2(x0 + dw, y0 + dh))
        if ctx.settings.split_ab and frame.rgb_b is not None:
            sp = float(np.clip(ctx.settings.split_pos, 0.0, 1.0))
            xs = x0 + dw * sp
            dl.add_image(imgui.ImTextureRef(self.tex_b), imgui.ImVec2(xs, y0), imgui.ImVec2(x0 + dw, y0 + dh),
                         imgui.ImVec2(sp, 0), imgui.ImVec2(1, 1))
            dl.add_line(imgui.ImVec2(xs, y0), imgui.ImVec2(xs, y0 + dh),
                        imgui.get_color_u32(imgui.ImVec4(*SPLIT_COLOUR)), 2.0)
            pose = S.conditioning_pose(frame.state) or (0.0, 0.0)
            self.label(dl, x0 + 8, y0 + 8, f"A: cond fixed ({pose[0]:+.0f}, {pose[1]:+.0f})")
            self.label(dl, xs + 8, y0 + 8, "B: cond = camera")
        self._draw_inspection(ctx, dl, frame, x0, y0, dw, dh)
        self.text = ""
        if frame.preview:
            self.label(dl, x0 + 8, y0 + dh - 26 * ctx.scale, "preview")

    def _draw_inspection(self, ctx, dl, frame, x0: float, y0: float, dw: float, dh: float) -> None:
        """Labels of the layer / planes views, and the inspected ray's pixel on the image."""
        if frame.shows == "planes":
            from model.introspect import plane_labels
            axes = ctx.info.plane_axes if ctx.info is not None else "official"
            for k, name in enumerate(plane_labels(axes)):
                self.label(dl, x0 + dw * k / 3 + 8, y0 + 8, f"{name} ({axes})" if k == 2 else name)
        elif frame.shows == "layer":
            note = "  (plane cache bypassed)" if frame.planes_bypassed else ""
            self.label(dl, x0 + 8, y0 + 8, f"layer {frame.state.layers.name}{note}")
        elif frame.options.rays and frame.state.ray.pixel is not None:
            u, v = frame.state.ray.pixel
            R = frame.trace["resolution"] if frame.trace else 1
            cx, cy = x0 + (int(u * R) + 0.5) / R * dw, y0 + (int(v * R) + 0.5) / R * dh
            col = imgui.get_color_u32(imgui.ImVec4(*RAY_MARK_COLOUR))
            r = 6 * ctx.scale
            dl.add_circle(imgui.ImVec2(cx, cy), r, col, 0, 2.0)
            dl.add_line(imgui.ImVec2(cx - 2 * r, cy), imgui.ImVec2(cx + 2 * r, cy), col, 1.0)
            dl.add_line(imgui.ImVec2(cx, cy - 2 * r), imgui.ImVec2(cx, cy + 2 * r), col, 1.0)

    def _draw_placeholder(self, ctx, dl, vw: float, area_h: float, loading: bool) -> None:
        self.image_rect = (0.0, 0.0, 0.0, 0.0)
        if ctx.model is None:
            note = f"\n({ctx.missing_default} does not exist)" if ctx.missing_default else ""
            text = ("loading model..." if loading else
                    f"no model loaded{note}\n\nopen a .safetensors or official .pkl file from the "
                    "panel (Model),\nor drag and drop it onto this window")
        else:
            text = "rendering..."
        self.text = text
        size = imgui.calc_text_size(text)
        dl.add_text(imgui.ImVec2((vw - size.x) / 2, (area_h - size.y) / 2),
                    imgui.get_color_u32(imgui.ImVec4(0.85, 0.85, 0.85, 1.0)), text)

    def _draw_status(self, ctx, dl, vw: float, H: float, status_h: float, loading: bool, rendering: bool) -> None:
        y = H - status_h
        dl.add_rect_filled(imgui.ImVec2(0, y), imgui.ImVec2(vw, H), imgui.get_color_u32(imgui.ImVec4(*STATUS_BACKGROUND)))
        s = ctx.state
        cam = S.resolved_camera(s, ctx.model)
        if not ctx.has_latent:
            latent = [f"scene ({ctx.info.repr if ctx.info else ''})"]
        else:
            frac = f"+{s.latent.seed_frac:.2f}" if s.latent.seed_frac else ""
            seed = "projected" if s.latent.projection is not None else f"seed {s.latent.seed}{frac}"
            latent = [seed, f"cond {s.conditioning.mode}"]
        parts = [ctx.info.name if ctx.model is not None and ctx.info else "no model", latent[0],
                 f"yaw {cam['yaw']:+.1f} pitch {cam['pitch']:+.1f} r {cam['radius']:.2f} fov {cam['fov']:.1f}",
                 *latent[1:], s.render.type]
        if loading:
            parts.append("loading...")
        if rendering:      # a preview on screen is being replaced by the full-quality frame
            parts.append("refining..." if ctx.frame is not None and ctx.frame.preview else "rendering...")
        if ctx.view.zoom != 1.0:
            parts.append(f"zoom {ctx.view.zoom:.2f}x")
        dl.add_text(imgui.ImVec2(8, y + 2), imgui.get_color_u32(imgui.ImVec4(0.8, 0.8, 0.8, 1.0)), "   |   ".join(parts))

    @staticmethod
    def label(dl, x, y, text, color=(1, 1, 1, 1)) -> None:
        size = imgui.calc_text_size(text)
        dl.add_rect_filled(imgui.ImVec2(x - 4, y - 2), imgui.ImVec2(x + size.x + 4, y + size.y + 2),
                           imgui.get_color_u32(imgui.ImVec4(0, 0, 0, 0.6)), 3.0)
        dl.add_text(imgui.ImVec2(x, y), imgui.get_color_u32(imgui.ImVec4(*color)), text)

    def draw_perf_overlay(self, ctx) -> None:
        """UI / render FPS and stage times in the viewport's corner (F2)."""
        frame = ctx.frame
        imgui.set_next_window_pos(imgui.ImVec2(self.rect[2] - 10 * ctx.scale,
                                               self.rect[3] - imgui.get_frame_height() - 12 * ctx.scale),
                                  imgui.Cond_.always, imgui.ImVec2(1.0, 1.0))
        imgui.set_next_window_bg_alpha(0.55)
        flags = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.always_auto_resize
                 | imgui.WindowFlags_.no_saved_settings | imgui.WindowFlags_.no_focus_on_appearing
                 | imgui.WindowFlags_.no_nav | imgui.WindowFlags_.no_inputs)
        imgui.begin("##perf", None, flags)
        total = frame.timings.get("total", 0.0) if frame is not None else 0.0
        imgui.text(f"UI {ctx.perf.ui_fps:5.0f} FPS   render {ctx.perf.render_fps(total):5.1f} FPS")
        if frame is not None:
            t = frame.timings
            imgui.text(" ".join(f"{k} {t[k]:.1f}" for k in ("mapping", "planes", "render", "superres", "upload")
                                if k in t) + " ms")
        imgui.end()
