"""The viewer window: glfw + OpenGL + Dear ImGui setup, the frame loop, and the named actions
the panels call.

One frame (`Viewer.step`): poll input (glfw callbacks feed imgui and the viewport's gesture
accumulator) -> take finished renders and tasks -> apply gestures, animation and shortcuts ->
draw the viewport and every available panel -> swap -> post a render request if the request
(state, render options, model) differs from the last one by dataclass equality. The generator
runs only in the render process (`app.renderer_worker`) and in background tasks (`tasks.py`).
Tests drive the window with `step()`, the `on_*` callbacks and `read_framebuffer()`.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .. import state as S
from ..renderer_worker import WORKER_NICE, RenderRequest, RenderWorker, preview_factor
from . import shortcuts
from .context import Actions, ModelInfo, ViewerContext, ViewerSettings
from .dataset_poses import read_dataset_poses
from .panels import make_panels
from .panels.invert import IMAGE_EXTENSIONS
from .tasks import TaskBoard
from .viewport import Viewport

APP_NAME = "EG3D viewer"
BASE_FONT_PX = 15.0
PANEL_WIDTH = 380.0            # side panel width in (unscaled) UI units
RECENT_MAX = 12
MAX_MESSAGES = 6
PREVIEW_ABOVE_MS = 40.0        # fast previews while dragging when a full render takes longer
CLEAR_COLOUR = (0.08, 0.08, 0.09, 1.0)


def config_dir_default() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "eg3d-viewer"


def default_render_threads(device: str) -> Optional[int]:
    """Torch CPU threads for the render process: all cores but one, so the UI keeps a core (an
    oversubscribed CPU renders several times slower: OpenMP threads spin on a taken core)."""
    if str(device).startswith("cuda"):
        return None
    import torch
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))


class Viewer:
    def __init__(self, model_path: Optional[str] = None, state: Optional[S.ViewerState] = None,
                 dataset: Optional[str] = None, device: str = "cpu",
                 size: Tuple[int, int] = (1400, 860), config_dir: Optional[str] = None,
                 vsync: bool = True, font_scale: Optional[float] = None, visible: bool = True,
                 title: str = APP_NAME, threads: Optional[int] = None, worker_nice: int = WORKER_NICE):
        import glfw
        import OpenGL.GL as gl
        from imgui_bundle import imgui, implot
        self.glfw, self.gl, self.imgui, self.implot = glfw, gl, imgui, implot
        self.device = device
        self.config_dir = Path(config_dir) if config_dir else config_dir_default()
        self.recent: List[str] = self._load_recent()
        self.messages: List[Tuple[float, str]] = []
        self.ui_errors: List[str] = []               # exceptions caught while drawing a panel
        self.drawn_panels: List[str] = []            # the panel titles of the last frame
        self._open_panels: Optional[set] = None      # force panels open/closed (None = user's)
        self.expanded_panels: set = set()            # panel titles open in the last frame
        self._last_request = None                    # (state, options, model serial) last sent
        self._last_request_preview = False
        self._last_full_ms = 0.0
        self._model_serial = 0
        self._anim_phase = 0.0
        self._pending_window_capture: Optional[str] = None
        self._capture_fb = False
        self._captured: Optional[np.ndarray] = None
        self._last_time = time.perf_counter()
        self._closed = False
        self._textures: dict = {}                    # panel images (Actions.texture)
        import torch
        self._torch_threads = torch.get_num_threads()
        threads = threads or default_render_threads(device)
        if threads:
            torch.set_num_threads(int(threads))        # exports and mesh tasks in this process

        if not glfw.init():
            raise RuntimeError("glfw.init() failed: no display? (set DISPLAY or run under Xvfb)")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, glfw.TRUE)
        glfw.window_hint(glfw.VISIBLE, glfw.TRUE if visible else glfw.FALSE)
        glfw.window_hint(glfw.SCALE_TO_MONITOR, glfw.TRUE)
        self.window = glfw.create_window(int(size[0]), int(size[1]), title, None, None)
        if not self.window:
            glfw.terminate()
            raise RuntimeError("could not create an OpenGL 3.3 window")
        glfw.make_context_current(self.window)
        glfw.swap_interval(1 if vsync else 0)
        imgui.create_context()
        implot.create_context()
        imgui.get_io().set_ini_filename(None)        # layout is programmatic; no imgui.ini litter
        from imgui_bundle.python_backends.glfw_backend import GlfwRenderer
        self.impl = GlfwRenderer(self.window, attach_callbacks=False)
        for setter, fn in ((glfw.set_key_callback, self.on_key), (glfw.set_char_callback, self.on_char),
                           (glfw.set_cursor_pos_callback, self.on_cursor_pos),
                           (glfw.set_mouse_button_callback, self.on_mouse_button),
                           (glfw.set_scroll_callback, self.on_scroll), (glfw.set_window_size_callback, self.on_resize),
                           (glfw.set_drop_callback, self.on_drop),
                           (glfw.set_window_content_scale_callback, self.on_content_scale)):
            setter(self.window, fn)
        self._font_scale_override = font_scale
        self._setup_style_and_fonts()

        self.viewport = Viewport(gl)
        self.worker = RenderWorker(on_result=self._wake, nice=worker_nice, threads=threads)
        self.tasks = TaskBoard(wake=self._wake)
        self.panels = make_panels(self.recent)
        self.ctx = ViewerContext(state=state.copy() if state is not None else S.ViewerState(),
                                 settings=ViewerSettings(), actions=self._actions(), tasks=self.tasks,
                                 scale=self._ui_scale)
        if dataset:
            self.ctx.settings.dataset_path = str(dataset)
            self.load_dataset(dataset)
        if model_path:
            self.open_model(model_path)

    # ------------------------------------------------------------------------------------------
    # shortcuts to the context (scripts and tests read these)

    @property
    def state(self) -> S.ViewerState:
        return self.ctx.state

    @state.setter
    def state(self, value: S.ViewerState) -> None:
        self.ctx.state = value

    @property
    def settings(self) -> ViewerSettings:
        return self.ctx.settings

    @property
    def model(self):
        return self.ctx.model

    @property
    def frame(self):
        """The frame on screen (a `renderer_worker.Frame`)."""
        return self.ctx.frame

    @property
    def error(self) -> Optional[str]:
        return self.ctx.error

    @error.setter
    def error(self, text: Optional[str]) -> None:
        self.ctx.error = text

    @property
    def loading(self) -> bool:
        return self.tasks.running("model")

    @property
    def busy(self) -> bool:
        """Something is still going on (a render, a load, an export, a dataset read)."""
        return self.worker.busy or self.tasks.busy

    def panel(self, title_or_type):
        """The panel with this title or class."""
        for p in self.panels:
            if p.title == title_or_type or type(p) is title_or_type:
                return p
        raise KeyError(title_or_type)

    # ------------------------------------------------------------------------------------------
    # setup

    def _scale(self) -> float:
        if self._font_scale_override:
            return float(self._font_scale_override)
        try:
            sx, _ = self.glfw.get_window_content_scale(self.window)
            return max(1.0, float(sx))
        except Exception:  # noqa: BLE001 - a platform without content scale
            return 1.0

    def _setup_style_and_fonts(self) -> None:
        imgui = self.imgui
        imgui.style_colors_dark()
        style = imgui.get_style()
        style.window_rounding, style.frame_rounding, style.grab_rounding = 4.0, 3.0, 3.0
        self._ui_scale = self._scale()
        style.scale_all_sizes(self._ui_scale)
        style.font_scale_dpi = self._ui_scale
        import imgui_bundle
        font_dir = Path(imgui_bundle.__file__).resolve().parent / "assets" / "fonts"
        for name in ("Roboto/Roboto-Regular.ttf", "DroidSans.ttf"):
            if (font_dir / name).is_file():
                try:
                    imgui.get_io().fonts.add_font_from_file_ttf(str(font_dir / name), BASE_FONT_PX)
                    break
                except Exception:  # noqa: BLE001 - fall back to the built-in font
                    continue
        style.font_size_base = BASE_FONT_PX

    def on_content_scale(self, window, sx, sy) -> None:
        if self._font_scale_override:
            return
        new = max(1.0, float(sx))
        style = self.imgui.get_style()
        style.scale_all_sizes(new / self._ui_scale)
        style.font_scale_dpi = new
        self._ui_scale = self.ctx.scale = new

    def _wake(self) -> None:
        try:
            self.glfw.post_empty_event()
        except Exception:  # noqa: BLE001 - glfw already terminated
            pass

    # ------------------------------------------------------------------------------------------
    # input callbacks (glfw -> imgui and the viewport's gestures); tests call them to inject events

    def on_key(self, window, key, scancode, action, mods) -> None:
        self.impl.keyboard_callback(window, key, scancode, action, mods)

    def on_char(self, window, char) -> None:
        self.impl.char_callback(window, char)

    def on_cursor_pos(self, window, x, y) -> None:
        self.imgui.get_io().add_mouse_pos_event(float(x), float(y))
        self.viewport.input.move(float(x), float(y))

    def on_mouse_button(self, window, button, action, mods) -> None:
        if 0 <= button < 5:
            self.imgui.get_io().add_mouse_button_event(button, action == self.glfw.PRESS)
            self.viewport.input.button(button, action == self.glfw.PRESS)

    def on_scroll(self, window, dx, dy) -> None:
        self.imgui.get_io().add_mouse_wheel_event(float(dx), float(dy))
        self.viewport.input.scroll(float(dy))

    def on_resize(self, window, w, h) -> None:
        self.imgui.get_io().display_size = self.imgui.ImVec2(w, h)

    def on_drop(self, window, paths) -> None:
        from model.scene import is_scene
        for p in map(str, paths):
            low = p.lower()
            if low.endswith(".json") or (low.endswith(".png") and S.state_from_png_safe(p)):
                self.load_state(p)
            elif os.path.isdir(p) and is_scene(p):          # a fitted scene's run folder
                self.open_model(p)
            elif low.endswith(IMAGE_EXTENSIONS):
                self.ctx.dropped_image = p                   # a photo to invert
                self.message(f"image {os.path.basename(p)}: invert it in the Invert panel")
            elif low.endswith(".zip") or os.path.isdir(p):
                self.ctx.settings.dataset_path = p
                self.load_dataset(p)
            else:
                self.open_model(p)

    # ------------------------------------------------------------------------------------------
    # actions (the panels reach the window only through these)

    def _actions(self) -> Actions:
        return Actions(open_model=self.open_model, load_state=self.load_state, save_state=self.save_state,
                       set_state=self.set_state, save_render=self.save_render, save_window=self.save_window,
                       load_dataset=self.load_dataset, swap_conditioning=self.swap_conditioning,
                       set_clipboard=self.imgui.set_clipboard_text, get_clipboard=self.imgui.get_clipboard_text,
                       message=self.message, fail=self.fail, start_task=self.start_task,
                       refresh_textures=self.refresh_textures, pixel_zoom=self.pixel_zoom, texture=self.texture)

    def message(self, text: str) -> None:
        self.messages = (self.messages + [(time.perf_counter(), text)])[-MAX_MESSAGES:]

    def fail(self, text: str) -> None:
        self.ctx.error = text

    def start_task(self, slot: str, name: str, fn, on_finish=None, unit: str = ""):
        """A background task whose outcome is reported as a message (and an error if it failed)."""
        def report(task):
            if task.error is None:
                self.message(f"{task.name}: wrote {task.result}")
            else:
                self.message(f"{task.name}: {task.error}")
                if task.error != "cancelled":
                    self.fail(f"{task.name} failed: {task.error}")
        return self.tasks.start(slot, name, fn, on_finish=on_finish or report, unit=unit)

    def open_model(self, path: str) -> None:
        """Load a model in the background; the current model stays until the new one opened."""
        path = os.path.expanduser(str(path).strip())
        self.ctx.settings.model_path = path
        if not path:
            self.fail("enter the path of a .safetensors or official .pkl model")
            return
        device = self.device
        self.tasks.start("model", f"loading {os.path.basename(path.rstrip('/'))}",
                         lambda progress, cancel: (S.load_model(path, device=device), S.projection_ref(path)),
                         on_finish=lambda task: self._model_opened(path, task))

    def _model_opened(self, path: str, task) -> None:
        ctx = self.ctx
        if task.error is not None:
            kept = f" (kept {ctx.info.name})" if ctx.info is not None else ""
            self.fail(f"could not open {path}: {task.error}{kept}")
            return
        G, projection = task.result
        had_latent = ctx.info.has_latent if ctx.info is not None else True
        self.worker.set_model(G)
        self._model_serial += 1
        ctx.error, ctx.frame, ctx.sensitivity = None, None, None
        ctx.model, ctx.info = G, ModelInfo.of(G, path, task.seconds)
        self._last_request = None
        if bool(G.has_latent) != had_latent:
            ctx.state.camera = S.CameraSection()     # a generator's camera means nothing for a scene
        if ctx.state.render.type not in ctx.render_types():
            ctx.state.render.type = "final"
        self._set_projected(projection)
        self._add_recent(path)
        self.glfw.set_window_title(self.window, f"{APP_NAME} - {ctx.info.name}")
        self.message(f"opened {ctx.info.name} in {task.seconds:.1f} s")

    def _set_projected(self, projection: Optional[Tuple[str, str]]) -> None:
        """A projection file opened: its latent becomes the current one (psi 1, no mixing) unless
        the state already references this very file (a saved view being reproduced). Any other
        model: back to seeds (another model's projection does not fit it)."""
        lat = self.ctx.state.latent
        if projection is None:
            lat.projection = lat.projection_sha256 = None
        elif (lat.projection, lat.projection_sha256) != projection:
            lat.projection, lat.projection_sha256 = projection
            lat.trunc_psi, lat.trunc_cutoff, lat.interp_enabled, lat.mix_enabled = 1.0, None, False, False

    def texture(self, key: str, rgb: np.ndarray) -> int:
        """A GL texture holding rgb (uint8 [H, W, 3]) for a panel's image, one per key."""
        tex = self._textures.get(key)
        if tex is None:
            tex = self._textures[key] = self.viewport._make_texture()
        self.viewport._upload(tex, np.ascontiguousarray(rgb, dtype=np.uint8), True)
        return tex

    def load_dataset(self, path: str) -> None:
        path = os.path.expanduser(str(path).strip())
        self.ctx.dataset_error = None

        def done(task):
            if task.error is None:
                self.ctx.dataset_poses = task.result
            else:
                self.ctx.dataset_error = task.error

        self.tasks.start("dataset", "dataset cameras", lambda progress, cancel: read_dataset_poses(path),
                         on_finish=done)

    def load_state(self, path: str) -> bool:
        try:
            self.set_state(S.ViewerState.load(os.path.expanduser(path)))
        except S.StateError as exc:
            self.fail(f"could not load state: {exc}")
            return False
        self.ctx.settings.state_path = str(path)
        self.message(f"loaded view state {path}")
        return True

    def set_state(self, state: S.ViewerState) -> None:
        self.ctx.state = state.copy()

    def save_state(self, path: Optional[str] = None) -> Optional[str]:
        path = os.path.expanduser(path or self.ctx.settings.state_path)
        try:
            text = self.ctx.state.to_json() + "\n"         # validated before anything is written
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except (OSError, S.StateError) as exc:
            self.fail(f"could not save state {path}: {exc}")
            return None
        self.message(f"saved view state {path}")
        return path

    def swap_conditioning(self) -> None:
        """Swap the conditioning pose and the camera pose (frozen at the camera when it follows)."""
        s = self.ctx.state
        pose = S.conditioning_pose(s)
        s.conditioning = S.ConditioningSection("custom", s.camera.yaw, s.camera.pitch)
        if pose is not None:
            s.camera.yaw, s.camera.pitch = pose

    def refresh_textures(self) -> None:
        if self.ctx.frame is not None and self.ctx.frame.rgb is not None:
            self.viewport.show(self.ctx.frame, self.ctx.settings.smooth)

    def pixel_zoom(self) -> None:
        self.viewport.pixel_zoom(self.ctx.view, self.ctx.frame, self.framebuffer_scale()[0])

    def camera(self) -> dict:
        """The render camera with the model's defaults filled in."""
        return S.resolved_camera(self.ctx.state, self.ctx.model)

    def orbit(self, dx: float, dy: float) -> None:
        from .viewport import orbit
        orbit(self.ctx.state.camera, dx, dy, self._ui_scale)

    def _load_recent(self) -> List[str]:
        try:
            with open(self.config_dir / "recent.json", "r", encoding="utf-8") as f:
                items = json.load(f)
            return [str(p) for p in items if isinstance(p, str)][:RECENT_MAX]
        except (OSError, ValueError, TypeError):
            return []

    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        self.recent[:] = ([path] + [p for p in self.recent if p != path])[:RECENT_MAX]
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True)
            with open(self.config_dir / "recent.json", "w", encoding="utf-8") as f:
                json.dump(self.recent, f, indent=1)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------
    # capture

    def save_render(self, path: Optional[str] = None) -> Optional[str]:
        """Save the frame on screen at full resolution, with its state and the model in PNG
        metadata (`--state IMAGE.png` reproduces it)."""
        frame = self.ctx.frame
        if frame is None or frame.rgb is None:
            self.fail("nothing rendered yet")
            return None
        from app.export import save_png
        try:
            text = dict(S.png_state_text(frame.state), eg3d_model=self.ctx.info.path if self.ctx.info else "")
            if path is None:
                os.makedirs(self.ctx.settings.out_dir, exist_ok=True)
                path = _next_free(os.path.join(self.ctx.settings.out_dir, f"seed{frame.state.latent.seed:04d}"), ".png")
            save_png(frame.rgb, path, extra_text=text)
        except (OSError, ValueError) as exc:
            self.fail(f"could not save {path}: {exc}")
            return None
        self.message(f"saved {path}")
        return str(path)

    def save_window(self, path: Optional[str] = None) -> str:
        """Ask for a screenshot of the whole window at the end of the next frame."""
        if path is None:
            os.makedirs(self.ctx.settings.out_dir, exist_ok=True)
            path = _next_free(os.path.join(self.ctx.settings.out_dir, "window"), ".png")
        self._pending_window_capture = path
        return path

    def read_framebuffer(self) -> np.ndarray:
        """Render one frame and return its pixels, uint8 [H, W, 3], top row first."""
        self._capture_fb = True
        self.step()
        img, self._captured = self._captured, None
        return img

    def _read_back(self) -> np.ndarray:
        gl = self.gl
        w, h = self.glfw.get_framebuffer_size(self.window)
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        gl.glReadBuffer(gl.GL_BACK)
        data = gl.glReadPixels(0, 0, w, h, gl.GL_RGB, gl.GL_UNSIGNED_BYTE)
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1].copy()

    def _write_window_capture(self, path: str, pixels: np.ndarray) -> None:
        from app.export import save_png
        try:
            save_png(pixels, path, extra_text=S.png_state_text(self.ctx.state))
            self.message(f"saved window {path}")
        except (OSError, ValueError) as exc:
            self.fail(f"could not save {path}: {exc}")

    def framebuffer_scale(self) -> Tuple[float, float]:
        ww, wh = self.glfw.get_window_size(self.window)
        fw, fh = self.glfw.get_framebuffer_size(self.window)
        return (fw / max(ww, 1), fh / max(wh, 1))

    # ------------------------------------------------------------------------------------------
    # the frame

    def _dragging(self) -> bool:
        st = self.ctx.settings
        return self.viewport.input.dragging or self.imgui.is_any_item_active() or st.animate or st.orbit

    def _submit_if_needed(self) -> None:
        ctx = self.ctx
        if ctx.model is None:
            return
        options = self.render_options()
        dragging = self._dragging()
        preview = ctx.settings.fast_preview and dragging and self._last_full_ms > PREVIEW_ABOVE_MS
        same = self._last_request == (ctx.state, options, self._model_serial)
        if same and (preview or not self._last_request_preview):
            return
        if same and self._last_request_preview and dragging and ctx.settings.fast_preview:
            return                              # still dragging: the preview is current
        try:
            ctx.state.validate()
        except S.StateError as exc:
            self.fail(str(exc))
            return
        req = RenderRequest(ctx.state.copy(), options, preview=preview_factor(self._last_full_ms) if preview else 0)
        self.worker.submit(req)
        self._last_request = (req.state, options, self._model_serial)
        self._last_request_preview = preview

    def render_options(self):
        """The settings' render options plus which inspection panels are open (their hooks and
        traces run only then)."""
        import dataclasses
        open_now = self.expanded_panels if self.ctx.settings.show_panel else set()
        return dataclasses.replace(self.ctx.settings.render_options(), layers="Layers" in open_now,
                                   planes="Tri-planes" in open_now, rays="Ray inspector" in open_now)

    def _needs_submit(self) -> bool:
        ctx = self.ctx
        return ctx.model is not None and (
            self._last_request != (ctx.state, self.render_options(), self._model_serial)
            or self._last_request_preview)

    def _take_results(self) -> None:
        ctx = self.ctx
        frame = self.worker.poll()
        if frame is not None:
            if frame.error:
                self.fail(f"render failed: {frame.error}")
            else:
                self.viewport.show(frame, ctx.settings.smooth)
                ctx.frame = frame
                if not frame.preview:           # the part a preview makes cheaper (not ws / planes)
                    t = frame.timings
                    self._last_full_ms = t.get("total", 0.0) - t.get("planes", 0.0) - t.get("mapping", 0.0)
                ctx.perf.add_render(time.perf_counter())
        sens = self.worker.poll_sensitivity()
        if sens is not None:
            ctx.sensitivity = sens
        if self.worker.exitcode is not None and not self._closed:
            self.fail(f"the render process stopped (exit code {self.worker.exitcode}); restart the viewer")
        ctx.perf.cache_hits, ctx.perf.cache_misses = self.worker.cache_hits, self.worker.cache_misses
        self.tasks.poll()

    def _animate(self, dt: float) -> None:
        st, lat = self.ctx.settings, self.ctx.state.latent
        if st.animate and lat.interp_enabled:           # A -> B -> A ping-pong
            self._anim_phase = (self._anim_phase + st.animate_speed * dt) % 2.0
            lat.interp_t = float(1.0 - abs(1.0 - self._anim_phase))
        elif st.animate:                                # sweep through consecutive seeds
            v = lat.seed + lat.seed_frac + st.animate_speed * dt
            lat.seed = int(np.floor(v)) % (S.MAX_SEED + 1)
            lat.seed_frac = float(v - np.floor(v))
        if st.orbit:
            cam = self.ctx.state.camera
            cam.yaw = ((cam.yaw + st.orbit_speed * dt) + 180.0) % 360.0 - 180.0

    def step(self) -> None:
        """Process input and draw exactly one frame."""
        glfw, imgui, gl, ctx = self.glfw, self.imgui, self.gl, self.ctx
        now = time.perf_counter()
        dt, self._last_time = now - self._last_time, now
        ctx.perf.add_frame(dt)
        glfw.poll_events()
        self._take_results()
        self.impl.process_inputs()
        imgui.new_frame()
        ctx.perf.ui_fps = imgui.get_io().framerate
        self.viewport.apply_gestures(ctx)
        self._animate(min(dt, 0.1))
        shortcuts.handle(ctx, lambda: glfw.set_window_should_close(self.window, True))
        panel_w = PANEL_WIDTH * self._ui_scale if ctx.settings.show_panel else 0.0
        self.viewport.draw(ctx, imgui.get_io().display_size.x - panel_w, self.messages, self.loading,
                           self.worker.busy)
        if ctx.settings.show_panel:
            self._draw_panels(panel_w)
        self.viewport.input.blockers = ([shortcuts.draw_help(ctx, panel_w)] if ctx.settings.show_help else [])
        if ctx.settings.show_perf and ctx.frame is not None:
            self.viewport.draw_perf_overlay(ctx)
        imgui.render()
        fw, fh = glfw.get_framebuffer_size(self.window)
        gl.glViewport(0, 0, fw, fh)
        gl.glClearColor(*CLEAR_COLOUR)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        self.impl.render(imgui.get_draw_data())
        if self._capture_fb or self._pending_window_capture:
            pixels = self._read_back()
            if self._capture_fb:
                self._captured, self._capture_fb = pixels, False
            if self._pending_window_capture:
                path, self._pending_window_capture = self._pending_window_capture, None
                self._write_window_capture(path, pixels)
        glfw.swap_buffers(self.window)
        self._submit_if_needed()

    def open_panels(self, titles) -> None:
        """Open exactly these panels (titles, or "*" for all) on the next frames; None = the user's."""
        self._open_panels = None if titles is None else set(titles)

    def _draw_panels(self, width: float) -> None:
        imgui, ctx = self.imgui, self.ctx
        H = imgui.get_io().display_size.y
        imgui.set_next_window_pos(imgui.ImVec2(imgui.get_io().display_size.x - width, 0))
        imgui.set_next_window_size(imgui.ImVec2(width, H))
        imgui.begin("Controls  (F1: help, Tab: hide)", None,
                    imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_collapse
                    | imgui.WindowFlags_.no_saved_settings)
        imgui.push_item_width(-130 * self._ui_scale)
        if ctx.error:
            imgui.push_text_wrap_pos(0.0)
            imgui.text_colored(imgui.ImVec4(1.0, 0.45, 0.4, 1.0), ctx.error)
            imgui.pop_text_wrap_pos()
            if imgui.small_button("dismiss"):
                ctx.error = None
            imgui.separator()
        self.drawn_panels = []
        expanded = set()
        for panel in self.panels:
            if not panel.available(ctx.model):
                continue
            self.drawn_panels.append(panel.title)
            if self._open_panels is not None:
                imgui.set_next_item_open(panel.title in self._open_panels or "*" in self._open_panels)
            if imgui.collapsing_header(panel.title, imgui.TreeNodeFlags_.default_open if panel.default_open else 0):
                expanded.add(panel.title)
                imgui.push_id(panel.title)
                try:
                    panel.draw(ctx)
                except Exception as exc:  # a panel bug must not take the viewer down
                    imgui.text_colored(imgui.ImVec4(1, 0.4, 0.4, 1), f"{type(exc).__name__}: {exc}")
                    self.ui_errors.append(f"{panel.title}: {type(exc).__name__}: {exc}")
                    traceback.print_exc()
                imgui.pop_id()
        imgui.pop_item_width()
        imgui.end()
        self.expanded_panels = expanded

    def run(self) -> None:
        glfw, st = self.glfw, self.ctx.settings
        while not glfw.window_should_close(self.window):
            # Sleep until an input event, a finished render (the worker posts an empty event) or
            # the next animation frame: the UI thread must not steal the CPU from the generator.
            if st.animate or st.orbit or self.tasks.running("export"):
                glfw.wait_events_timeout(1 / 60)
            elif self._dragging():
                glfw.wait_events_timeout(1 / 30)
            else:
                glfw.wait_events_timeout(0.1 if self.busy else 0.5)
            self.step()
        self.close()

    def run_until_idle(self, timeout: float = 30.0, min_frames: int = 2) -> bool:
        """Step until nothing is pending (tests, scripted screenshots). True if it settled."""
        end = time.perf_counter() + timeout
        n = 0
        while time.perf_counter() < end:
            self.step()
            n += 1
            if n >= min_frames and not self.busy and not self._needs_submit():
                self.step()
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.tasks.cancel_all()
        self.worker.stop()
        try:
            self.impl.shutdown()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        self.implot.destroy_context()
        self.imgui.destroy_context()
        self.glfw.destroy_window(self.window)
        self.glfw.terminate()
        import torch
        torch.set_num_threads(self._torch_threads)


def _next_free(stem: str, ext: str) -> str:
    i = 0
    while os.path.exists(p := f"{stem}_{i:03d}{ext}"):
        i += 1
    return p
