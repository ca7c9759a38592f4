"""The interactive EG3D viewer: glfw window + PyOpenGL + Dear ImGui (imgui-bundle) + ImPlot.

    python visualizer.py [MODEL] [--state VIEW.json] [--dataset DATASET.zip] [--device cpu|cuda]

MODEL is a generator (.safetensors or official .pkl) or a fitted scene (`train.py sso`:
scene.safetensors, checkpoint.safetensors or its run folder), told apart by the file header; a
scene is orbited like a generator, without the latent / conditioning panels.

The UI thread only draws; the generator runs in `app.renderer_worker` threads (the latest request
wins, the last finished frame stays on screen). `Viewer.step()` draws exactly one UI frame, so
tests (and scripts) can drive the window programmatically: inject input with `on_cursor_pos`,
`on_mouse_button`, `on_scroll`, `on_key`, `on_drop` and read pixels with `read_framebuffer()`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import DEFAULT_MODEL_PATH
from . import state as S
from .renderer_worker import (ModelLoader, RenderRequest, RenderResult, RenderWorker,
                              preview_factor, read_dataset_poses)

APP_NAME = "EG3D viewer"
BASE_FONT_PX = 15.0
PANEL_WIDTH = 380.0            # side panel width in (unscaled) UI units
RECENT_MAX = 12
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
    ("Tab", "show / hide the side panel"),
    ("F1 / H", "show / hide this help"),
    ("F2", "show / hide the performance overlay"),
    ("Esc", "close help; stop animation"),
]


SCENE_RENDER_TYPES = ("final", "depth", "alpha")     # what a fitted scene offers
SCENE_HIDDEN_SECTIONS = ("Latent", "Style mixing", "Conditioning pose")


def _is_scene(path: str) -> bool:
    from model.scene import is_scene
    return is_scene(path)


def config_dir_default() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "eg3d-viewer"


@dataclass
class UIState:
    """Viewer-only settings (not part of the shareable view state)."""
    show_panel: bool = True
    show_help: bool = False
    show_perf: bool = True
    split_ab: bool = False
    split_pos: float = 0.5
    zoom: float = 1.0                 # 2D image magnification
    pan: Tuple[float, float] = (0.0, 0.0)
    smooth: bool = True               # linear texture filtering
    scroll_zooms: str = "radius"      # 'radius' | 'fov'
    animate: bool = False
    animate_speed: float = 0.5        # seeds per second
    orbit: bool = False
    orbit_speed: float = 30.0         # degrees per second
    cache_planes: bool = True
    fast_preview: bool = True
    sensitivity: bool = False
    model_path: str = ""
    state_path: str = "out/viewer/state.json"
    out_dir: str = "out/viewer"
    dataset_path: str = ""
    # turntable export
    tt_frames: int = 120
    tt_fps: int = 30
    tt_path: str = "360"              # '360' | 'sweep' | 'orbit' (app.export.CAMERA_PATHS)
    tt_yaw_range: float = 30.0
    tt_pitch: float = 5.0
    tt_res: int = 0                   # 0 = model's native resolution
    tt_out: str = "out/viewer/turntable.mp4"
    # mesh export (app.mesh.export_mesh)
    mesh_res: int = 128
    mesh_level: Optional[float] = None    # None = the model's (a scene's surface_level, else 10)
    mesh_trim: Optional[float] = None     # None = the model's (0 for a scene, else 30/256)
    mesh_ply: bool = True
    mesh_obj: bool = False
    mesh_mrc: bool = False
    mesh_chunk: int = 1 << 16             # density points per batch (progress granularity)
    mesh_out: str = "out/viewer/mesh.ply"


class Job:
    """A background export with progress and cancel."""

    def __init__(self, name: str, fn, on_done=None, unit: str = "frames"):
        self.name = name
        self.unit = unit
        self.done = 0
        self.total = 0
        self.error: Optional[str] = None
        self.output: Optional[str] = None
        self.finished = False
        self.cancel = threading.Event()
        self.started = time.perf_counter()
        self._on_done = on_done

        def run():
            try:
                self.output = str(fn(self._progress, self.cancel))
            except BaseException as exc:  # noqa: BLE001
                if self.cancel.is_set() or type(exc).__name__ == "ExportCancelled":
                    self.error = "cancelled"
                else:
                    self.error = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
            self.finished = True
            if self._on_done:
                self._on_done()

        self._thread = threading.Thread(target=run, name=f"eg3d-{name}", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


class Viewer:
    def __init__(self, model_path: Optional[str] = None, state: Optional[S.ViewerState] = None,
                 dataset: Optional[str] = None, device: str = "cpu",
                 size: Tuple[int, int] = (1400, 860), config_dir: Optional[str] = None,
                 vsync: bool = True, font_scale: Optional[float] = None, visible: bool = True,
                 title: str = APP_NAME, threads: Optional[int] = None):
        import glfw
        from imgui_bundle import imgui, implot
        self.glfw, self.imgui, self.implot = glfw, imgui, implot
        import OpenGL.GL as gl
        self.gl = gl

        self.state = state.copy() if state is not None else S.ViewerState()
        self.ui = UIState()
        self.device = device
        self.config_dir = Path(config_dir) if config_dir else config_dir_default()
        self.recent: List[str] = self._load_recent()
        self.error: Optional[str] = None          # shown in the UI until dismissed
        self.messages: List[Tuple[float, str]] = []  # transient status lines (time, text)
        self.model_path: Optional[str] = None
        self.model_info: Dict[str, object] = {}
        self.loader: Optional[ModelLoader] = None
        self.job: Optional[Job] = None
        self.dataset_poses: Optional[np.ndarray] = None
        self.dataset_error: Optional[str] = None
        self._dataset_loading = False
        self.sensitivity: Optional[Dict[str, float]] = None
        self.frame_count = 0
        self.result: Optional[RenderResult] = None   # the frame on screen
        self.viewport_rect = (0.0, 0.0, 0.0, 0.0)    # window coordinates (x, y, w, h)
        self.image_rect = (0.0, 0.0, 0.0, 0.0)       # where the render is drawn
        self.viewport_text = ""                      # the message drawn when there is no image
        self.ui_errors: List[str] = []               # exceptions caught while drawing the panel
        self.missing_default: Optional[str] = None   # the default checkpoint, when it is absent
        self._open_sections: Optional[set] = None    # force sections open/closed (None = user's)
        self._drawn_sections: List[str] = []          # the side-panel sections of the last frame
        self._last_request_key = None
        self._last_request_preview = False
        self._last_full_ms = 0.0
        self._dragging = False
        self._orbit_last: Optional[Tuple[float, float]] = None
        self._pan_last: Optional[Tuple[float, float]] = None
        self._render_times: List[float] = []
        self._frame_ms_hist = np.zeros(120, np.float32)
        self._upload_ms = 0.0
        self._pending_window_capture: Optional[str] = None
        self._capture_fb = False
        self._captured: Optional[np.ndarray] = None
        self._focus_path = False
        self._last_time = time.perf_counter()
        self._closed = False
        # Leave one core to the UI thread: torch's OpenMP threads spin when a core is taken, and
        # an oversubscribed CPU renders several times slower (measured: 13 vs 0.9 FPS, tiny model).
        import torch
        self._torch_threads = torch.get_num_threads()
        if threads is None and not str(device).startswith("cuda"):
            threads = max(1, min(self._torch_threads, (os.cpu_count() or 2) - 1))
        if threads:
            torch.set_num_threads(int(threads))

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
        io = imgui.get_io()
        io.set_ini_filename(None)                 # layout is programmatic; no imgui.ini litter
        from imgui_bundle.python_backends.glfw_backend import GlfwRenderer
        self.impl = GlfwRenderer(self.window, attach_callbacks=False)
        glfw.set_key_callback(self.window, self.on_key)
        glfw.set_char_callback(self.window, self.on_char)
        glfw.set_cursor_pos_callback(self.window, self.on_cursor_pos)
        glfw.set_mouse_button_callback(self.window, self.on_mouse_button)
        glfw.set_scroll_callback(self.window, self.on_scroll)
        glfw.set_window_size_callback(self.window, self.on_resize)
        glfw.set_drop_callback(self.window, self.on_drop)
        glfw.set_window_content_scale_callback(self.window, self.on_content_scale)
        self._font_scale_override = font_scale
        self._setup_style_and_fonts()

        self.tex = self._make_texture()
        self.tex_b = self._make_texture()
        self._tex_size = {self.tex: (0, 0), self.tex_b: (0, 0)}

        self.worker = RenderWorker(on_result=self._wake)
        if dataset:
            self.ui.dataset_path = str(dataset)
            self.load_dataset(dataset)
        if model_path:
            self.open_model(model_path)

    # ------------------------------------------------------------------------------------------
    # setup

    def _scale(self) -> float:
        if self._font_scale_override:
            return float(self._font_scale_override)
        try:
            sx, sy = self.glfw.get_window_content_scale(self.window)
            return max(1.0, float(sx))
        except Exception:
            return 1.0

    def _setup_style_and_fonts(self) -> None:
        imgui = self.imgui
        imgui.style_colors_dark()
        style = imgui.get_style()
        style.window_rounding = 4.0
        style.frame_rounding = 3.0
        style.grab_rounding = 3.0
        self._ui_scale = self._scale()
        style.scale_all_sizes(self._ui_scale)
        style.font_scale_dpi = self._ui_scale
        io = imgui.get_io()
        import imgui_bundle
        font_dir = Path(imgui_bundle.__file__).resolve().parent / "assets" / "fonts"
        for name in ("Roboto/Roboto-Regular.ttf", "DroidSans.ttf"):
            f = font_dir / name
            if f.is_file():
                try:
                    io.fonts.add_font_from_file_ttf(str(f), BASE_FONT_PX)
                    break
                except Exception:
                    continue
        style.font_size_base = BASE_FONT_PX

    def on_content_scale(self, window, sx, sy) -> None:
        if self._font_scale_override:
            return
        new = max(1.0, float(sx))
        style = self.imgui.get_style()
        style.scale_all_sizes(new / self._ui_scale)
        style.font_scale_dpi = new
        self._ui_scale = new

    def _make_texture(self) -> int:
        gl = self.gl
        tex = int(gl.glGenTextures(1))
        gl.glBindTexture(gl.GL_TEXTURE_2D, tex)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR)
        gl.glBindTexture(gl.GL_TEXTURE_2D, 0)
        return tex

    def _upload(self, tex: int, rgb: np.ndarray) -> None:
        gl = self.gl
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        gl.glBindTexture(gl.GL_TEXTURE_2D, tex)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)
        if self._tex_size.get(tex) != (w, h):
            gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGB8, w, h, 0, gl.GL_RGB,
                            gl.GL_UNSIGNED_BYTE, rgb)
            self._tex_size[tex] = (w, h)
        else:
            gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, w, h, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, rgb)
        filt = gl.GL_LINEAR if self.ui.smooth else gl.GL_NEAREST
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, filt)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR)
        gl.glBindTexture(gl.GL_TEXTURE_2D, 0)

    def _wake(self) -> None:
        try:
            self.glfw.post_empty_event()
        except Exception:
            pass

    def _message(self, text: str) -> None:
        self.messages.append((time.perf_counter(), text))
        self.messages = self.messages[-6:]

    # ------------------------------------------------------------------------------------------
    # input callbacks (glfw -> imgui); tests call these directly to inject events

    def on_key(self, window, key, scancode, action, mods) -> None:
        self.impl.keyboard_callback(window, key, scancode, action, mods)

    def on_char(self, window, char) -> None:
        self.impl.char_callback(window, char)

    def on_cursor_pos(self, window, x, y) -> None:
        self.imgui.get_io().add_mouse_pos_event(float(x), float(y))

    def on_mouse_button(self, window, button, action, mods) -> None:
        if 0 <= button < 5:
            self.imgui.get_io().add_mouse_button_event(button, action == self.glfw.PRESS)

    def on_scroll(self, window, dx, dy) -> None:
        self.imgui.get_io().add_mouse_wheel_event(float(dx), float(dy))

    def on_resize(self, window, w, h) -> None:
        self.imgui.get_io().display_size = self.imgui.ImVec2(w, h)

    def on_drop(self, window, paths) -> None:
        for p in paths:
            p = str(p)
            low = p.lower()
            if low.endswith(".json") or (low.endswith(".png") and S.state_from_png_safe(p)):
                self.load_state(p)
            elif os.path.isdir(p) and _is_scene(p):          # a fitted scene's run folder
                self.open_model(p)
            elif low.endswith(".zip") or os.path.isdir(p):
                self.ui.dataset_path = p
                self.load_dataset(p)
            else:
                self.open_model(p)

    # ------------------------------------------------------------------------------------------
    # model / dataset / state

    def open_model(self, path: str) -> None:
        """Start loading a model in the background; the current model stays until it succeeds."""
        path = os.path.expanduser(str(path).strip())
        self.ui.model_path = path
        if not path:
            self.error = "enter the path of a .safetensors or official .pkl model"
            return
        self.loader = ModelLoader(path, device=self.device, on_done=self._wake)

    @property
    def model(self):
        return self.worker.model

    @property
    def is_scene(self) -> bool:
        """The open model is a fitted scene (no latent, no conditioning pose)."""
        return S.is_scene_model(self.model)

    def _render_types(self) -> Tuple[str, ...]:
        return SCENE_RENDER_TYPES if self.is_scene else S.RENDER_TYPES

    @property
    def loading(self) -> bool:
        return self.loader is not None        # cleared when the UI thread takes the result

    def _finish_load(self) -> None:
        res = self.loader.result
        self.loader = None
        if res.error is not None:
            kept = f" (kept {os.path.basename(self.model_path)})" if self.model_path else ""
            self.error = f"could not open {res.path}: {res.error}{kept}"
            return
        G = res.G
        self.error = None
        self.worker.set_model(G)
        self.model_path = res.path
        self.result = None
        self._last_request_key = None
        self.sensitivity = None
        n = sum(p.numel() for p in G.parameters())
        scene = S.is_scene_model(G)
        if scene != bool(self.model_info.get("scene", False)):
            self.reset_camera()          # a generator's camera means nothing for a scene and back
        if scene and self.state.render_type not in SCENE_RENDER_TYPES:
            self.state.render_type = "final"
        self.model_info = dict(
            scene=scene, repr=getattr(G, "repr", ""), fov=float(G.cfg.rendering.avg_camera_fov),
            name=os.path.basename(res.path), img_resolution=G.img_resolution,
            neural_res=G.neural_rendering_resolution, z_dim=G.z_dim, w_dim=G.w_dim,
            num_ws=G.num_ws, params=n, load_s=res.seconds,
            depth=(G.cfg.rendering.depth_resolution, G.cfg.rendering.depth_resolution_importance),
            cond=not G.cfg.c_gen_conditioning_zero)
        self._add_recent(res.path)
        self.glfw.set_window_title(self.window, f"{APP_NAME} - {os.path.basename(res.path)}")
        self._message(f"opened {os.path.basename(res.path)} in {res.seconds:.1f} s")

    def load_dataset(self, path: str) -> None:
        path = os.path.expanduser(str(path).strip())
        self._dataset_loading = True
        self.dataset_error = None

        def run():
            try:
                self.dataset_poses = read_dataset_poses(path)
                self.dataset_error = None
            except Exception as exc:  # noqa: BLE001
                self.dataset_error = f"{type(exc).__name__}: {exc}"
            self._dataset_loading = False
            self._wake()

        threading.Thread(target=run, name="eg3d-dataset", daemon=True).start()

    def load_state(self, path: str) -> bool:
        try:
            self.state = S.ViewerState.load(os.path.expanduser(path))
            self.ui.state_path = str(path)
            self._message(f"loaded view state {path}")
            return True
        except Exception as exc:  # noqa: BLE001
            self.error = f"could not load state {path}: {exc}"
            return False

    def save_state(self, path: Optional[str] = None) -> Optional[str]:
        path = os.path.expanduser(path or self.ui.state_path)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.state.save(path)
            self._message(f"saved view state {path}")
            return path
        except Exception as exc:  # noqa: BLE001
            self.error = f"could not save state {path}: {exc}"
            return None

    def _load_recent(self) -> List[str]:
        try:
            with open(self.config_dir / "recent.json", "r", encoding="utf-8") as f:
                items = json.load(f)
            return [str(p) for p in items if isinstance(p, str)][:RECENT_MAX]
        except Exception:
            return []

    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        self.recent = [path] + [p for p in self.recent if p != path]
        self.recent = self.recent[:RECENT_MAX]
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True)
            with open(self.config_dir / "recent.json", "w", encoding="utf-8") as f:
                json.dump(self.recent, f, indent=1)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------
    # camera helpers

    def reset_camera(self) -> None:
        s = self.state
        s.yaw, s.pitch, s.radius, s.pivot, s.fov = 0.0, 0.0, None, None, None   # None = the model's

    def camera(self) -> Dict[str, object]:
        G = self.model
        if G is None:
            return dict(yaw=self.state.yaw, pitch=self.state.pitch,
                        radius=self.state.radius or 2.7, pivot=self.state.pivot or [0, 0, 0.2],
                        fov=self.state.fov or S.DEFAULT_FOV_DEG)
        return S.resolved_camera(self.state, G)

    def orbit(self, dx: float, dy: float) -> None:
        """Orbit by a mouse delta in pixels (drag right = the subject turns right)."""
        k = 0.35 / self._ui_scale
        s = self.state
        s.yaw = ((s.yaw - dx * k) + 180.0) % 360.0 - 180.0
        s.pitch = float(np.clip(s.pitch - dy * k, -89.0, 89.0))

    def zoom_camera(self, wheel: float) -> None:
        s = self.state
        factor = 0.93 ** wheel
        if self.ui.scroll_zooms == "fov":
            s.fov = float(np.clip(self.camera()["fov"] * factor, 1.0, 120.0))
        else:
            r = self.camera()["radius"]
            s.radius = float(np.clip(r * factor, 0.05, 50.0))

    def swap_conditioning(self) -> None:
        """Swap the conditioning pose and the camera pose."""
        s = self.state
        pose = S.conditioning_pose(s)
        if pose is None:       # conditioning follows the camera: freeze it at the camera pose
            s.cond_mode, s.cond_yaw, s.cond_pitch = "custom", s.yaw, s.pitch
            return
        s.cond_mode, s.cond_yaw, s.cond_pitch, s.yaw, s.pitch = "custom", s.yaw, s.pitch, pose[0], pose[1]

    def set_seed(self, seed: int) -> None:
        self.state.seed = int(seed) % (S.MAX_SEED + 1)
        self.state.seed_frac = 0.0

    # ------------------------------------------------------------------------------------------
    # capture

    def save_render(self, path: Optional[str] = None) -> Optional[str]:
        """Save the frame on screen at full resolution, with the state + model in PNG metadata."""
        if self.result is None or self.result.rgb is None:
            self.error = "nothing rendered yet"
            return None
        if path is None:
            os.makedirs(self.ui.out_dir, exist_ok=True)
            path = _next_free(os.path.join(self.ui.out_dir, f"seed{self.result.state.seed:04d}"), ".png")
        try:
            extra = {"eg3d_model": self.model_path or "", "software": APP_NAME}
            S.save_png(path, self.result.rgb, self.result.state, extra)
            self._message(f"saved {path}")
            self.last_saved = path
            return path
        except Exception as exc:  # noqa: BLE001
            self.error = f"could not save {path}: {exc}"
            return None

    def save_window(self, path: Optional[str] = None) -> str:
        """Ask for a screenshot of the whole window at the end of the next frame."""
        if path is None:
            os.makedirs(self.ui.out_dir, exist_ok=True)
            path = _next_free(os.path.join(self.ui.out_dir, "window"), ".png")
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

    def framebuffer_scale(self) -> Tuple[float, float]:
        ww, wh = self.glfw.get_window_size(self.window)
        fw, fh = self.glfw.get_framebuffer_size(self.window)
        return (fw / max(ww, 1), fh / max(wh, 1))

    # ------------------------------------------------------------------------------------------
    # the frame

    def _request_key(self):
        return (self.state.to_json(indent=None), self.ui.split_ab, self.ui.cache_planes,
                self.ui.sensitivity, id(self.model))

    def _submit_if_needed(self) -> None:
        if self.model is None:
            return
        key = self._request_key()
        dragging = self._dragging or self.imgui.is_any_item_active() or self.ui.animate or self.ui.orbit
        preview = (self.ui.fast_preview and dragging and self._last_full_ms > 40.0)
        factor = preview_factor(self._last_full_ms) if preview else 0
        if key == self._last_request_key and (preview or not self._last_request_preview):
            return
        if key == self._last_request_key and self._last_request_preview and dragging and self.ui.fast_preview:
            return                              # still dragging: the preview is current
        try:
            self.state.validate()
        except ValueError as exc:
            self.error = str(exc)
            return
        self.worker.submit(RenderRequest(self.state.copy(), preview=factor,
                                         split_ab=self.ui.split_ab,
                                         sensitivity=self.ui.sensitivity and not preview,
                                         cache_planes=self.ui.cache_planes))
        self._last_request_key = key
        self._last_request_preview = preview

    def _take_results(self) -> None:
        res = self.worker.poll()
        if res is not None:
            if res.error:
                self.error = f"render failed: {res.error}"
            else:
                t0 = time.perf_counter()
                self._upload(self.tex, res.rgb)
                if res.rgb_b is not None:
                    self._upload(self.tex_b, res.rgb_b)
                self._upload_ms = (time.perf_counter() - t0) * 1e3
                res.timings["upload"] = self._upload_ms
                self.result = res
                if not res.preview:
                    t = res.timings       # the part a preview makes cheaper (not ws / planes)
                    self._last_full_ms = t.get("total", 0.0) - t.get("planes", 0.0) - t.get("mapping", 0.0)
                now = time.perf_counter()
                self._render_times.append(now)
                self._render_times = [t for t in self._render_times if now - t < 2.0]
        sens = self.worker.poll_sensitivity()
        if sens is not None:
            self.sensitivity = sens
        if self.loader is not None and self.loader.done:
            self._finish_load()
        if self.job is not None and self.job.finished and not getattr(self.job, "_reported", False):
            self.job._reported = True
            if self.job.error:
                self._message(f"{self.job.name}: {self.job.error}")
                if self.job.error != "cancelled":
                    self.error = f"{self.job.name} failed: {self.job.error}"
            else:
                self._message(f"{self.job.name}: wrote {self.job.output}")

    def _animate(self, dt: float) -> None:
        s = self.state
        if self.ui.animate and s.interp_enabled:        # A -> B -> A ping-pong
            self._anim_phase = (getattr(self, "_anim_phase", 0.0) + self.ui.animate_speed * dt) % 2.0
            s.interp_t = float(1.0 - abs(1.0 - self._anim_phase))
        elif self.ui.animate:                            # sweep through consecutive seeds
            v = s.seed + s.seed_frac + self.ui.animate_speed * dt
            s.seed = int(math.floor(v)) % (S.MAX_SEED + 1)
            s.seed_frac = float(v - math.floor(v))
        if self.ui.orbit:
            s.yaw = ((s.yaw + self.ui.orbit_speed * dt) + 180.0) % 360.0 - 180.0

    @property
    def busy(self) -> bool:
        """Something is still going on (a render, a load, an export, a dataset read)."""
        return (self.worker.busy or self.loading or self._dataset_loading
                or (self.job is not None and not self.job.finished))

    def step(self) -> None:
        """Process input and draw exactly one frame."""
        glfw, imgui, gl = self.glfw, self.imgui, self.gl
        now = time.perf_counter()
        dt, self._last_time = now - self._last_time, now
        self._frame_ms_hist = np.roll(self._frame_ms_hist, -1)
        self._frame_ms_hist[-1] = dt * 1e3
        glfw.poll_events()
        self._take_results()
        self.impl.process_inputs()
        imgui.new_frame()
        self._animate(min(dt, 0.1))
        self._shortcuts()
        self._draw_viewport()
        if self.ui.show_panel:
            self._draw_panel()
        if self.ui.show_help:
            self._draw_help()
        if self.ui.show_perf and self.result is not None:
            self._draw_perf_overlay()
        imgui.render()
        fw, fh = glfw.get_framebuffer_size(self.window)
        gl.glViewport(0, 0, fw, fh)
        gl.glClearColor(0.08, 0.08, 0.09, 1.0)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        self.impl.render(imgui.get_draw_data())
        if self._capture_fb or self._pending_window_capture:
            pixels = self._read_back()
            if self._capture_fb:
                self._captured, self._capture_fb = pixels, False
            if self._pending_window_capture:
                path, self._pending_window_capture = self._pending_window_capture, None
                try:
                    S.save_png(path, pixels, self.state, {"software": APP_NAME})
                    self._message(f"saved window {path}")
                except Exception as exc:  # noqa: BLE001
                    self.error = f"could not save {path}: {exc}"
        glfw.swap_buffers(self.window)
        self._submit_if_needed()
        self.frame_count += 1

    def run(self) -> None:
        glfw = self.glfw
        while not glfw.window_should_close(self.window):
            # Sleep until an input event, a finished render (the worker posts an empty event) or
            # the next animation frame: the UI thread must not steal the CPU from the generator.
            if self.ui.animate or self.ui.orbit or (self.job is not None and not self.job.finished):
                glfw.wait_events_timeout(1 / 60)
            elif self._dragging or self.imgui.is_any_item_active():
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

    def _needs_submit(self) -> bool:
        return self.model is not None and (self._request_key() != self._last_request_key
                                           or self._last_request_preview)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.job is not None:
            self.job.cancel.set()
        self.worker.stop()
        try:
            self.impl.shutdown()
        except Exception:
            pass
        self.implot.destroy_context()
        self.imgui.destroy_context()
        self.glfw.destroy_window(self.window)
        self.glfw.terminate()
        import torch
        torch.set_num_threads(self._torch_threads)

    # ------------------------------------------------------------------------------------------
    # keyboard shortcuts

    def _shortcuts(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        if io.want_text_input:
            return
        K = imgui.Key
        ctrl, shift = io.key_ctrl, io.key_shift

        def pressed(key, repeat=False):
            return imgui.is_key_pressed(key, repeat)

        if ctrl:
            if pressed(K.s):
                self.save_state()
            elif pressed(K.l):
                self.load_state(self.ui.state_path)
            elif pressed(K.o):
                self.ui.show_panel = True
                self._focus_path = True
            elif pressed(K.q):
                self.glfw.set_window_should_close(self.window, True)
            return
        if pressed(K.f1) or pressed(K.h):
            self.ui.show_help = not self.ui.show_help
        if pressed(K.f2):
            self.ui.show_perf = not self.ui.show_perf
        if pressed(K.tab):
            self.ui.show_panel = not self.ui.show_panel
        if pressed(K.escape):
            self.ui.show_help = False
            self.ui.animate = self.ui.orbit = False
        if pressed(K.r):
            self.reset_camera()
        if pressed(K.f):
            self.ui.zoom, self.ui.pan = 1.0, (0.0, 0.0)
        if pressed(K.right_arrow, True) or pressed(K.right_bracket, True):
            self.set_seed(self.state.seed + 1)
        if pressed(K.left_arrow, True) or pressed(K.left_bracket, True):
            self.set_seed(self.state.seed - 1)
        if pressed(K.space):
            self.ui.animate = not self.ui.animate
        if pressed(K.o):
            self.ui.orbit = not self.ui.orbit
        if pressed(K.c):
            i = S.COND_MODES.index(self.state.cond_mode)
            self.state.cond_mode = S.COND_MODES[(i + 1) % len(S.COND_MODES)]
        if pressed(K.x):
            self.swap_conditioning()
        if pressed(K.b):
            self.ui.split_ab = not self.ui.split_ab
        for i, key in enumerate((K._1, K._2, K._3, K._4, K._5)):
            if pressed(key) and S.RENDER_TYPES[i] in self._render_types():
                self.state.render_type = S.RENDER_TYPES[i]
        if pressed(K.f12) or (shift and pressed(K.s)):
            self.save_window()
        elif pressed(K.s):
            self.save_render()

    # ------------------------------------------------------------------------------------------
    # viewport

    def _panel_width(self) -> float:
        return PANEL_WIDTH * self._ui_scale if self.ui.show_panel else 0.0

    def _draw_viewport(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        W, H = io.display_size.x, io.display_size.y
        vw = max(1.0, W - self._panel_width())
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(vw, H))
        flags = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move
                 | imgui.WindowFlags_.no_saved_settings | imgui.WindowFlags_.no_bring_to_front_on_focus
                 | imgui.WindowFlags_.no_scroll_with_mouse | imgui.WindowFlags_.no_nav)
        imgui.push_style_var(imgui.StyleVar_.window_padding, imgui.ImVec2(0, 0))
        imgui.push_style_color(imgui.Col_.window_bg, imgui.ImVec4(0.11, 0.11, 0.12, 1.0))
        imgui.begin("##viewport", None, flags)
        imgui.pop_style_color()
        imgui.pop_style_var()
        self.viewport_rect = (0.0, 0.0, vw, H)
        dl = imgui.get_window_draw_list()
        imgui.set_cursor_pos(imgui.ImVec2(0, 0))
        imgui.invisible_button("##viewport_input", imgui.ImVec2(vw, H),
                               imgui.ButtonFlags_.mouse_button_left | imgui.ButtonFlags_.mouse_button_right
                               | imgui.ButtonFlags_.mouse_button_middle)
        hovered, active = imgui.is_item_hovered(), imgui.is_item_active()
        # interaction
        # Deltas are measured from the drag's own last position (not io.mouse_delta), so a press
        # that arrives together with a jump of the pointer does not turn the camera.
        pos = (io.mouse_pos.x, io.mouse_pos.y)
        self._dragging = active and imgui.is_mouse_down(0)
        if self._dragging:
            if self._orbit_last is not None:
                dx, dy = pos[0] - self._orbit_last[0], pos[1] - self._orbit_last[1]
                if dx or dy:
                    self.orbit(dx, dy)
            self._orbit_last = pos
        else:
            self._orbit_last = None
        if active and (imgui.is_mouse_down(1) or imgui.is_mouse_down(2)):
            if self._pan_last is not None:
                self.ui.pan = (self.ui.pan[0] + pos[0] - self._pan_last[0],
                               self.ui.pan[1] + pos[1] - self._pan_last[1])
            self._pan_last = pos
        else:
            self._pan_last = None
        if hovered and io.mouse_wheel:
            if io.key_ctrl:
                self._zoom_image(io.mouse_wheel, io.mouse_pos)
            else:
                self.zoom_camera(io.mouse_wheel)
        if hovered and imgui.is_mouse_double_clicked(0):
            self.ui.zoom, self.ui.pan = 1.0, (0.0, 0.0)

        # the image, letterboxed (square renders) and magnified / panned
        status_h = imgui.get_frame_height() + 4
        area_h = max(1.0, H - status_h)
        res = self.result
        if res is not None and res.rgb is not None:
            h, w = res.rgb.shape[:2]
            fit = min(vw / w, area_h / h)
            dw, dh = w * fit * self.ui.zoom, h * fit * self.ui.zoom
            x0 = (vw - dw) / 2 + self.ui.pan[0]
            y0 = (area_h - dh) / 2 + self.ui.pan[1]
            self.image_rect = (x0, y0, dw, dh)
            ref = imgui.ImTextureRef(self.tex)
            dl.add_image(ref, imgui.ImVec2(x0, y0), imgui.ImVec2(x0 + dw, y0 + dh))
            if self.ui.split_ab and res.rgb_b is not None:
                sp = float(np.clip(self.ui.split_pos, 0.0, 1.0))
                xs = x0 + dw * sp
                dl.add_image(imgui.ImTextureRef(self.tex_b), imgui.ImVec2(xs, y0),
                             imgui.ImVec2(x0 + dw, y0 + dh), imgui.ImVec2(sp, 0), imgui.ImVec2(1, 1))
                dl.add_line(imgui.ImVec2(xs, y0), imgui.ImVec2(xs, y0 + dh),
                            imgui.get_color_u32(imgui.ImVec4(1, 1, 0.2, 0.9)), 2.0)
                pose = S.conditioning_pose(self.state) or (0.0, 0.0)
                self._label(dl, x0 + 8, y0 + 8, f"A: cond fixed ({pose[0]:+.0f}, {pose[1]:+.0f})")
                self._label(dl, xs + 8, y0 + 8, "B: cond = camera")
            self.viewport_text = ""
            if res.preview:
                self._label(dl, x0 + 8, y0 + dh - 26 * self._ui_scale, "preview")
        else:
            self.image_rect = (0.0, 0.0, 0.0, 0.0)
            if self.model is None:
                note = f"\n({self.missing_default} does not exist)" if self.missing_default else ""
                text = ("loading model..." if self.loading else
                        f"no model loaded{note}\n\nopen a .safetensors or official .pkl file from the "
                        "panel (Model),\nor drag and drop it onto this window")
            else:
                text = "rendering..."
            self.viewport_text = text
            size = imgui.calc_text_size(text)
            dl.add_text(imgui.ImVec2((vw - size.x) / 2, (area_h - size.y) / 2),
                        imgui.get_color_u32(imgui.ImVec4(0.85, 0.85, 0.85, 1.0)), text)
        # status bar
        y = H - status_h
        dl.add_rect_filled(imgui.ImVec2(0, y), imgui.ImVec2(vw, H),
                           imgui.get_color_u32(imgui.ImVec4(0.06, 0.06, 0.07, 1.0)))
        cam = self.camera()
        if self.is_scene:
            latent = [f"scene ({self.model_info.get('repr', '')})"]
        else:
            latent = [f"seed {self.state.seed}" + (f"+{self.state.seed_frac:.2f}" if self.state.seed_frac else ""),
                      f"cond {self.state.cond_mode}"]
        parts = [self.model_info.get("name", "no model") if self.model is not None else "no model",
                 latent[0],
                 f"yaw {cam['yaw']:+.1f} pitch {cam['pitch']:+.1f} r {cam['radius']:.2f} fov {cam['fov']:.1f}",
                 *latent[1:], self.state.render_type]
        if self.loading:
            parts.append("loading...")
        if self.worker.busy:
            parts.append("rendering...")
        if self.ui.zoom != 1.0:
            parts.append(f"zoom {self.ui.zoom:.2f}x")
        dl.add_text(imgui.ImVec2(8, y + 2), imgui.get_color_u32(imgui.ImVec4(0.8, 0.8, 0.8, 1.0)),
                    "   |   ".join(parts))
        # recent messages
        now = time.perf_counter()
        self.messages = [(t, m) for t, m in self.messages if now - t < 6.0]
        for i, (_, m) in enumerate(self.messages[-3:]):
            self._label(dl, 8, y - (i + 1) * (imgui.get_text_line_height() + 8) - 4, m)
        if self.error:
            self._label(dl, 8, 8, "error: " + self.error, color=(1.0, 0.45, 0.4, 1.0))
        imgui.end()

    def _label(self, dl, x, y, text, color=(1, 1, 1, 1)) -> None:
        imgui = self.imgui
        size = imgui.calc_text_size(text)
        dl.add_rect_filled(imgui.ImVec2(x - 4, y - 2), imgui.ImVec2(x + size.x + 4, y + size.y + 2),
                           imgui.get_color_u32(imgui.ImVec4(0, 0, 0, 0.6)), 3.0)
        dl.add_text(imgui.ImVec2(x, y), imgui.get_color_u32(imgui.ImVec4(*color)), text)

    def _zoom_image(self, wheel: float, mouse) -> None:
        old = self.ui.zoom
        new = float(np.clip(old * (1.15 ** wheel), 0.1, 32.0))
        # keep the point under the mouse fixed
        vx, vy, vw, vh = self.viewport_rect
        cx, cy = vw / 2 + self.ui.pan[0], vh / 2 + self.ui.pan[1]
        mx, my = mouse.x - cx, mouse.y - cy
        k = new / old
        self.ui.pan = (self.ui.pan[0] + mx * (1 - k), self.ui.pan[1] + my * (1 - k))
        self.ui.zoom = new

    # ------------------------------------------------------------------------------------------
    # side panel

    def open_sections(self, names) -> None:
        """Open exactly these side-panel sections (names, or "*" for all) on the next frames."""
        self._open_sections = set(names)

    def _draw_panel(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        W, H = io.display_size.x, io.display_size.y
        pw = self._panel_width()
        imgui.set_next_window_pos(imgui.ImVec2(W - pw, 0))
        imgui.set_next_window_size(imgui.ImVec2(pw, H))
        flags = (imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_collapse
                 | imgui.WindowFlags_.no_saved_settings)
        imgui.begin("Controls  (F1: help, Tab: hide)", None, flags)
        imgui.push_item_width(-130 * self._ui_scale)
        if self.error:
            imgui.push_text_wrap_pos(0.0)
            imgui.text_colored(imgui.ImVec4(1.0, 0.45, 0.4, 1.0), self.error)
            imgui.pop_text_wrap_pos()
            if imgui.small_button("dismiss"):
                self.error = None
            imgui.separator()
        sections = (("Model", self._section_model, True), ("Latent", self._section_latent, True),
                    ("Style mixing", self._section_mixing, False), ("Camera", self._section_camera, True),
                    ("Conditioning pose", self._section_conditioning, True),
                    ("Render", self._section_render, True), ("Performance", self._section_perf, False),
                    ("Capture & view state", self._section_capture, False),
                    ("Turntable export", self._section_turntable, False),
                    ("Mesh export", self._section_mesh, False))
        if self.is_scene:        # a fitted scene has no latent and no conditioning pose
            sections = tuple(x for x in sections if x[0] not in SCENE_HIDDEN_SECTIONS)
        self._drawn_sections = [name for name, _, _ in sections]
        for name, fn, default_open in sections:
            flags = imgui.TreeNodeFlags_.default_open if default_open else 0
            if self._open_sections is not None:
                imgui.set_next_item_open(name in self._open_sections or "*" in self._open_sections)
            if imgui.collapsing_header(name, flags):
                imgui.push_id(name)
                try:
                    fn()
                except Exception as exc:  # a UI bug must not take the viewer down
                    imgui.text_colored(imgui.ImVec4(1, 0.4, 0.4, 1), f"{type(exc).__name__}: {exc}")
                    self.ui_errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    traceback.print_exc()
                imgui.pop_id()
        imgui.pop_item_width()
        imgui.end()

    def _help_marker(self, text: str) -> None:
        imgui = self.imgui
        imgui.same_line()
        imgui.text_disabled("(?)")
        if imgui.is_item_hovered():
            imgui.set_tooltip(text)

    def _section_model(self) -> None:
        imgui = self.imgui
        if self._focus_path:
            imgui.set_keyboard_focus_here()
            self._focus_path = False
        enter = imgui.InputTextFlags_.enter_returns_true
        submitted, self.ui.model_path = imgui.input_text("path##model", self.ui.model_path, enter)
        imgui.same_line()
        if imgui.button("Open") or submitted:
            self.open_model(self.ui.model_path)
        if self.recent and imgui.begin_combo("recent", "choose a recent model"):
            for p in list(self.recent):
                if imgui.selectable(p, p == self.model_path)[0]:
                    self.open_model(p)
            imgui.end_combo()
        if self.loading:
            t = time.perf_counter() - self.loader.started
            imgui.text(f"loading {os.path.basename(self.loader.path)}  {t:.1f} s")
            imgui.progress_bar(-1.0 * time.perf_counter(), imgui.ImVec2(-1, 0), "loading...")
        if self.model is None:
            imgui.text_colored(imgui.ImVec4(1.0, 0.8, 0.3, 1.0), "no model loaded")
            imgui.text_wrapped("Open a .safetensors or official EG3D .pkl (path above, recent list, "
                               "or drop it onto the window).")
        else:
            m = self.model_info
            imgui.text_wrapped(f"{self.model_path}")
            if m.get("scene"):
                imgui.text(f"fitted scene: {m['repr']}, {m['params'] / 1e6:.2f} M params")
                imgui.text(f"{m['neural_res']} px, fov {m['fov']:.2f}, samples {m['depth'][0]}+{m['depth'][1]}")
                imgui.text_disabled("no latent: orbit it (camera, render type, exports)")
                return
            imgui.text(f"{m['img_resolution']} px out, {m['neural_res']} px neural render, "
                       f"{m['num_ws']} ws")
            imgui.text(f"z {m['z_dim']}, w {m['w_dim']}, {m['params'] / 1e6:.2f} M params, "
                       f"samples {m['depth'][0]}+{m['depth'][1]}")
            if not m["cond"]:
                imgui.text_disabled("no generator pose conditioning (c is zeroed)")

    def _section_latent(self) -> None:
        imgui, s = self.imgui, self.state
        changed, seed = imgui.input_int("seed", s.seed, 1, 10)
        if changed:
            self.set_seed(max(0, seed))
        v = s.seed + s.seed_frac
        changed, v = imgui.drag_float("sweep", v, 0.01, 0.0, float(S.MAX_SEED - 1), "%.2f")
        if changed:
            v = max(0.0, v)
            s.seed, s.seed_frac = int(math.floor(v)), float(v - math.floor(v))
        self._help_marker("Drag to move continuously between seeds: w = lerp(w(seed), w(seed+1), frac)")
        _, self.ui.animate = imgui.checkbox("animate (Space)", self.ui.animate)
        imgui.same_line()
        imgui.push_item_width(90 * self._ui_scale)
        _, self.ui.animate_speed = imgui.slider_float("seeds/s", self.ui.animate_speed, 0.05, 5.0, "%.2f")
        imgui.pop_item_width()
        imgui.separator()
        _, s.interp_enabled = imgui.checkbox("A -> B interpolation (in w)", s.interp_enabled)
        if s.interp_enabled:
            _, a = imgui.input_int("seed A", s.interp_seed_a)
            _, b = imgui.input_int("seed B", s.interp_seed_b)
            s.interp_seed_a = int(np.clip(a, 0, S.MAX_SEED))
            s.interp_seed_b = int(np.clip(b, 0, S.MAX_SEED))
            _, s.interp_t = imgui.slider_float("t (A -> B)", s.interp_t, 0.0, 1.0, "%.3f")
        imgui.separator()
        _, s.trunc_psi = imgui.slider_float("truncation psi", s.trunc_psi, -1.0, 1.5, "%.2f")
        num_ws = self.model.num_ws if self.model is not None else 14
        all_layers = s.trunc_cutoff is None
        changed, all_layers = imgui.checkbox("truncate all layers", all_layers)
        if changed:
            s.trunc_cutoff = None if all_layers else min(14, num_ws)
        if s.trunc_cutoff is not None:
            _, c = imgui.slider_int("cutoff (layers)", s.trunc_cutoff, 0, num_ws)
            s.trunc_cutoff = int(c)

    def _section_mixing(self) -> None:
        imgui, s = self.imgui, self.state
        num_ws = self.model.num_ws if self.model is not None else 14
        _, s.mix_enabled = imgui.checkbox("enable style mixing", s.mix_enabled)
        _, ms = imgui.input_int("mix seed", s.mix_seed)
        s.mix_seed = int(np.clip(ms, 0, S.MAX_SEED))
        layers = sorted(i for i in s.mix_layers if 0 <= i < num_ws)
        lo, hi = (layers[0], layers[-1]) if layers else (num_ws // 2, num_ws - 1)
        changed, lo, hi = imgui.drag_int_range2("layer range", lo, hi, 0.1, 0, num_ws - 1)
        if changed:
            s.mix_layers = list(range(min(lo, hi), max(lo, hi) + 1))
        for label, rng in (("coarse", range(0, min(4, num_ws))), ("middle", range(4, min(8, num_ws))),
                           ("fine", range(8, num_ws)), ("none", range(0)), ("all", range(num_ws))):
            if imgui.small_button(label):
                s.mix_layers = list(rng)
            imgui.same_line()
        imgui.new_line()
        imgui.text("ws taken from the mix seed:")
        per_row = 7
        current = set(s.mix_layers)
        for i in range(num_ws):
            if i % per_row:
                imgui.same_line()
            changed, on = imgui.checkbox(f"{i}##mix", i in current)
            if changed:
                current = (current | {i}) if on else (current - {i})
                s.mix_layers = sorted(current)

    def _section_camera(self) -> None:
        imgui, s = self.imgui, self.state
        cam = self.camera()
        _, s.yaw = imgui.slider_float("yaw (deg)", s.yaw, -180.0, 180.0, "%.1f")
        _, s.pitch = imgui.slider_float("pitch (deg)", s.pitch, -89.0, 89.0, "%.1f")
        r0 = float(self.model.cfg.rendering.avg_camera_radius) if self.model is not None else 2.7
        changed, r = imgui.slider_float("radius", float(cam["radius"]), 0.25 * r0, 3.0 * r0, "%.3f")
        if changed:
            s.radius = float(r)
        changed, fov = imgui.slider_float("fov (deg)", float(cam["fov"]), 1.0, 90.0, "%.2f")
        if changed:
            s.fov = float(fov)
        changed, piv = imgui.drag_float3("pivot", list(cam["pivot"]), 0.005, -2.0, 2.0, "%.3f")
        if changed:
            s.pivot = [float(v) for v in piv]
        if imgui.button("reset camera (R)"):
            self.reset_camera()
        self._help_marker("The model's average camera: frontal, avg_camera_radius / pivot / fov "
                          "(fov 18.837 for FFHQ-style models)")
        imgui.same_line()
        if imgui.radio_button("scroll: radius", self.ui.scroll_zooms == "radius"):
            self.ui.scroll_zooms = "radius"
        imgui.same_line()
        if imgui.radio_button("fov", self.ui.scroll_zooms == "fov"):
            self.ui.scroll_zooms = "fov"
        _, self.ui.orbit = imgui.checkbox("auto-orbit (O)", self.ui.orbit)
        imgui.same_line()
        imgui.push_item_width(90 * self._ui_scale)
        _, self.ui.orbit_speed = imgui.slider_float("deg/s", self.ui.orbit_speed, -180.0, 180.0, "%.0f")
        imgui.pop_item_width()

    def _section_conditioning(self) -> None:
        imgui, s = self.imgui, self.state
        for mode, label in (("frontal", "frontal"), ("camera", "follow camera"), ("custom", "custom")):
            if imgui.radio_button(label, s.cond_mode == mode):
                s.cond_mode = mode
            imgui.same_line()
        imgui.new_line()
        if s.cond_mode == "custom":
            _, s.cond_yaw = imgui.slider_float("cond yaw", s.cond_yaw, -180.0, 180.0, "%.1f")
            _, s.cond_pitch = imgui.slider_float("cond pitch", s.cond_pitch, -89.0, 89.0, "%.1f")
        if imgui.button("swap cond <-> camera (X)"):
            self.swap_conditioning()
        if self.model is not None and self.model.cfg.c_gen_conditioning_zero:
            imgui.text_disabled("this model ignores the conditioning pose")
        imgui.separator()
        _, self.ui.split_ab = imgui.checkbox("A/B split (B)", self.ui.split_ab)
        self._help_marker("Left (A): conditioning fixed at the pose above (frontal if it follows the "
                          "camera). Right (B): conditioning = camera. Drag the split below.")
        if self.ui.split_ab:
            _, self.ui.split_pos = imgui.slider_float("split", self.ui.split_pos, 0.0, 1.0, "%.2f")
        self._pose_plot()
        _, self.ui.sensitivity = imgui.checkbox("measure sensitivity", self.ui.sensitivity)
        self._help_marker("Mean absolute pixel change (0..255) of the shown render when only the "
                          "conditioning pose moves by +10 deg yaw / pitch, or switches to the camera pose.")
        if self.ui.sensitivity:
            sens = self.sensitivity
            if sens is None:
                imgui.text_disabled("measuring...")
            elif "error" in sens:
                imgui.text_colored(imgui.ImVec4(1, 0.4, 0.4, 1), sens["error"])
            else:
                imgui.text(f"cond yaw +{sens['delta_deg']:.0f}: {sens['yaw']:.2f}   "
                           f"pitch +{sens['delta_deg']:.0f}: {sens['pitch']:.2f}")
                imgui.text(f"fixed -> camera cond: {sens['camera']:.2f}  (mean |dpixel|)")
        enter = imgui.InputTextFlags_.enter_returns_true
        submitted, self.ui.dataset_path = imgui.input_text("dataset", self.ui.dataset_path, enter)
        imgui.same_line()
        if imgui.button("read") or submitted:
            self.load_dataset(self.ui.dataset_path)
        self._help_marker("A dataset zip or folder with dataset.json camera labels (as --dataset)")
        if self._dataset_loading:
            imgui.text_disabled("reading dataset cameras...")
        if self.dataset_error:
            imgui.text_colored(imgui.ImVec4(1, 0.4, 0.4, 1), self.dataset_error)

    def _pose_plot(self) -> None:
        imgui, implot, s = self.imgui, self.implot, self.state
        size = imgui.ImVec2(-1, 230 * self._ui_scale)
        if not implot.begin_plot("poses (deg from frontal)", size):
            return
        # y = -pitch: up in the plot = camera above the subject
        implot.setup_axes("yaw (deg)", "elevation (deg)")
        implot.setup_axes_limits(-60, 60, -40, 40)
        def spec(marker, size, col):
            return implot.Spec(marker=marker.value, marker_size=size, line_color=col, fill_color=col,
                               marker_line_color=col, marker_fill_color=col)

        if self.dataset_poses is not None and len(self.dataset_poses):
            implot.plot_scatter("dataset", np.ascontiguousarray(self.dataset_poses[:, 0]),
                                np.ascontiguousarray(-self.dataset_poses[:, 1]),
                                spec(implot.Marker_.circle, 1.5, imgui.ImVec4(0.65, 0.65, 0.8, 0.35)))
        cam_col = imgui.ImVec4(1.0, 0.35, 0.3, 1.0)
        cond_col = imgui.ImVec4(0.3, 1.0, 0.4, 1.0)
        pose = S.conditioning_pose(s)
        cond_xy = pose if pose is not None else (s.yaw, s.pitch)
        implot.plot_scatter("render camera", np.array([s.yaw], np.float64), np.array([-s.pitch], np.float64),
                            spec(implot.Marker_.circle, 5.0, cam_col))
        implot.plot_scatter("conditioning", np.array([cond_xy[0]], np.float64),
                            np.array([-cond_xy[1]], np.float64), spec(implot.Marker_.square, 4.0, cond_col))
        changed, x, y, *_ = implot.drag_point(0, float(s.yaw), float(-s.pitch), cam_col, 5.0)
        if changed:
            s.yaw, s.pitch = float(np.clip(x, -180, 180)), float(np.clip(-y, -89, 89))
        if pose is not None:
            changed, x, y, *_ = implot.drag_point(1, float(pose[0]), float(-pose[1]), cond_col, 4.0)
            if changed:
                s.cond_mode = "custom"
                s.cond_yaw, s.cond_pitch = float(np.clip(x, -180, 180)), float(np.clip(-y, -89, 89))
        implot.end_plot()
        imgui.text_disabled("red: render camera, green: conditioning (drag them); "
                            "grey: dataset cameras")

    def _section_render(self) -> None:
        imgui, s = self.imgui, self.state
        names = dict(final="final (super-res)", raw="raw neural render", depth="depth", alpha="opacity",
                     feature="feature channel")
        if self.is_scene:
            names["final"] = "final (composited colour)"
        types = self._render_types()
        current = types.index(s.render_type) if s.render_type in types else 0
        changed, i = imgui.combo("render type", current, [names[t] for t in types])
        if changed:
            s.render_type = types[i]
        if s.render_type == "feature":
            nf = self.model.cfg.decoder.output_features if self.model is not None else 32
            _, ch = imgui.slider_int("channel", s.feature_channel, 0, nf - 1)
            s.feature_channel = int(ch)
        if s.render_type == "depth":
            auto = s.depth_range is None
            changed, auto = imgui.checkbox("auto depth range", auto)
            if changed:
                s.depth_range = None if auto else [2.25, 3.3]
            if s.depth_range is not None:
                changed, lo, hi = imgui.drag_float_range2("near/far", s.depth_range[0], s.depth_range[1],
                                                         0.005, 0.0, 20.0, "%.3f")
                if changed and hi > lo:
                    s.depth_range = [float(lo), float(hi)]
        native = self.model.neural_rendering_resolution if self.model is not None else 128
        nr = s.neural_res or native
        changed, nr = imgui.slider_int("neural res", nr, 16, max(512, 2 * native))
        if changed:
            s.neural_res = None if nr == native else int(nr)
        imgui.same_line()
        if imgui.small_button("native"):
            s.neural_res = None
        _, s.depth_mult = imgui.slider_float("uniform samples x", s.depth_mult, 0.125, 4.0, "%.3f",
                                             imgui.SliderFlags_.logarithmic)
        _, s.importance_mult = imgui.slider_float("importance x", s.importance_mult, 0.125, 4.0, "%.3f",
                                                  imgui.SliderFlags_.logarithmic)
        if self.model is not None:
            kw = S.render_settings(self.model, s)
            imgui.text_disabled(f"{kw['depth_resolution']} + {kw['depth_resolution_importance']} "
                                f"samples per ray, {kw['neural_rendering_resolution']} px")
        changed, i = imgui.combo("noise mode", S.NOISE_MODES.index(s.noise_mode), list(S.NOISE_MODES))
        if changed:
            s.noise_mode = S.NOISE_MODES[i]
        _, s.deterministic = imgui.checkbox("deterministic sampling", s.deterministic)
        self._help_marker("No stratified jitter: the same state always gives the same pixels.")
        _, self.ui.cache_planes = imgui.checkbox("cache planes", self.ui.cache_planes)
        self._help_marker("Reuse the tri-planes while only the camera / render settings change.")
        imgui.same_line()
        _, self.ui.fast_preview = imgui.checkbox("fast preview while dragging", self.ui.fast_preview)
        changed, self.ui.smooth = imgui.checkbox("smooth texture filter", self.ui.smooth)
        if changed and self.result is not None:
            self._upload(self.tex, self.result.rgb)
            if self.result.rgb_b is not None:
                self._upload(self.tex_b, self.result.rgb_b)
        _, self.ui.zoom = imgui.slider_float("image zoom", self.ui.zoom, 0.1, 16.0, "%.2fx",
                                             imgui.SliderFlags_.logarithmic)
        if imgui.small_button("fit (F)"):
            self.ui.zoom, self.ui.pan = 1.0, (0.0, 0.0)
        imgui.same_line()
        if imgui.small_button("1:1 pixels") and self.result is not None and self.result.rgb is not None:
            h, w = self.result.rgb.shape[:2]
            vw, vh = self.viewport_rect[2], self.viewport_rect[3] - imgui.get_frame_height() - 4
            fit = min(vw / w, vh / h)
            self.ui.zoom, self.ui.pan = 1.0 / (fit * self.framebuffer_scale()[0]), (0.0, 0.0)

    def _render_fps(self) -> float:
        """Finished renders per second over the last 2 s (the last frame's rate when fewer)."""
        t = self._render_times
        if len(t) >= 3:
            return (len(t) - 1) / max(t[-1] - t[0], 1e-6)
        total = self.result.timings.get("total", 0.0) if self.result is not None else 0.0
        return 1000.0 / total if total > 0 else 0.0

    def _section_perf(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        imgui.text(f"UI {io.framerate:.0f} FPS, renders {self._render_fps():.1f} FPS")
        res = self.result
        if res is not None:
            t = res.timings
            for k in ("mapping", "planes", "render", "superres", "to_rgb", "upload", "total"):
                if k in t:
                    extra = " (cached)" if k == "planes" and res.planes_cached else ""
                    imgui.text(f"{k:>9}: {t[k]:7.1f} ms{extra}")
            if res.preview:
                imgui.text_disabled("last frame was a fast preview")
            c = self.worker.cache
            imgui.text_disabled(f"plane cache: {c.hits} hits, {c.misses} misses")
        imgui.text_disabled("UI frame times (ms), last 120 frames")
        imgui.plot_lines("##frame_ms", self._frame_ms_hist, graph_size=imgui.ImVec2(-1, 40 * self._ui_scale))

    def _section_capture(self) -> None:
        imgui = self.imgui
        _, self.ui.out_dir = imgui.input_text("output folder", self.ui.out_dir)
        if imgui.button("save render PNG (S)"):
            self.save_render()
        imgui.same_line()
        if imgui.button("save window PNG (F12)"):
            self.save_window()
        imgui.separator()
        _, self.ui.state_path = imgui.input_text("state file", self.ui.state_path)
        if imgui.button("save state (Ctrl+S)"):
            self.save_state()
        imgui.same_line()
        if imgui.button("load state (Ctrl+L)"):
            self.load_state(self.ui.state_path)
        if imgui.button("copy JSON"):
            imgui.set_clipboard_text(self.state.to_json())
            self._message("state JSON copied to the clipboard")
        imgui.same_line()
        if imgui.button("paste JSON"):
            try:
                self.state = S.ViewerState.from_json(imgui.get_clipboard_text() or "")
                self._message("state pasted from the clipboard")
            except ValueError as exc:
                self.error = f"clipboard: {exc}"
        if imgui.button("reset view state"):
            self.state = S.ViewerState()
        self._help_marker("A state file (or a PNG saved here) reproduces the view exactly, also in "
                          "`visualizer.py turntable --state FILE`. Drop one onto the window to load it.")

    def _section_turntable(self) -> None:
        imgui, ui = self.imgui, self.ui
        _, ui.tt_frames = imgui.input_int("frames", ui.tt_frames, 10, 60)
        ui.tt_frames = int(np.clip(ui.tt_frames, 2, 100000))
        _, ui.tt_fps = imgui.input_int("fps", ui.tt_fps, 1, 10)
        ui.tt_fps = int(np.clip(ui.tt_fps, 1, 240))
        imgui.text_disabled(f"= {ui.tt_frames / ui.tt_fps:.1f} s")
        paths = ("360", "sweep", "orbit")
        labels = ["full 360 deg turn", "yaw sweep +- range", "official orbit (ellipse)"]
        changed, i = imgui.combo("camera path", paths.index(ui.tt_path) if ui.tt_path in paths else 0, labels)
        if changed:
            ui.tt_path = paths[i]
        if ui.tt_path != "360":
            _, ui.tt_yaw_range = imgui.slider_float("yaw range +-", ui.tt_yaw_range, 1.0, 90.0, "%.0f deg")
        _, ui.tt_pitch = imgui.slider_float("pitch wobble", ui.tt_pitch, 0.0, 45.0, "%.1f deg")
        native = self.model.img_resolution if self.model is not None else 512
        _, ui.tt_res = imgui.input_int("resolution (0 = native)", ui.tt_res, 64, 256)
        ui.tt_res = int(np.clip(ui.tt_res, 0, 4096))
        imgui.text_disabled(f"native {native} px")
        _, ui.tt_out = imgui.input_text("output", ui.tt_out)
        job = self.job
        if job is not None and not job.finished:
            self._job_progress(job)
        else:
            if imgui.button("export turntable") and self.model is not None:
                self.start_turntable()
            if job is not None and job.name == "turntable":
                imgui.text_wrapped(f"last: {job.error or job.output}")

    def _job_progress(self, job: Job) -> None:
        imgui = self.imgui
        imgui.progress_bar(job.fraction, imgui.ImVec2(-1, 0), f"{job.name}: {job.done}/{job.total} {job.unit}")
        if imgui.button(f"cancel {job.name}"):
            job.cancel.set()

    def _section_mesh(self) -> None:
        imgui, ui = self.imgui, self.ui
        from .mesh import default_level, default_trim
        _, ui.mesh_res = imgui.input_int("grid resolution", ui.mesh_res, 32, 128)
        ui.mesh_res = int(np.clip(ui.mesh_res, 8, 1024))
        G = self.model
        model_level = default_level(G) if G is not None else 10.0
        changed, level = imgui.input_float("level (raw density)", model_level if ui.mesh_level is None
                                           else ui.mesh_level, 1.0, 5.0, "%.2f")
        if changed:
            ui.mesh_level = float(level)
        imgui.same_line()
        if imgui.small_button("model's##level"):
            ui.mesh_level = None
        model_trim = default_trim(G) if G is not None else 30 / 256
        changed, trim = imgui.slider_float("border trim", model_trim if ui.mesh_trim is None else ui.mesh_trim,
                                           0.0, 0.3, "%.3f")
        if changed:
            ui.mesh_trim = float(trim)
        _, ui.mesh_ply = imgui.checkbox("PLY", ui.mesh_ply)
        imgui.same_line()
        _, ui.mesh_obj = imgui.checkbox("OBJ", ui.mesh_obj)
        imgui.same_line()
        _, ui.mesh_mrc = imgui.checkbox("MRC (density grid)", ui.mesh_mrc)
        _, ui.mesh_out = imgui.input_text("output##mesh", ui.mesh_out)
        self._help_marker("Marching cubes of the density on an N^3 grid over the box (app.mesh); the other "
                          "checked formats are written next to this path with their own suffix.")
        job = self.job
        if job is not None and not job.finished:
            self._job_progress(job)
        else:
            if imgui.button("export mesh") and self.model is not None:
                self.start_mesh()
            if job is not None and job.name == "mesh":
                imgui.text_wrapped(f"last: {job.error or job.output}")

    def mesh_formats(self) -> List[str]:
        ui = self.ui
        return [f for f, on in (("ply", ui.mesh_ply), ("obj", ui.mesh_obj), ("mrc", ui.mesh_mrc)) if on]

    def start_mesh(self, out: Optional[str] = None) -> Optional[Job]:
        """Export a mesh of the current state in a background thread (app.mesh.export_mesh), with
        progress (density chunks) and cancel; a cancelled export leaves no file."""
        if self.model is None:
            self.error = "no model loaded"
            return None
        if self.job is not None and not self.job.finished:
            return self.job
        formats = self.mesh_formats()
        if not formats:
            self.error = "mesh export: choose at least one format"
            return None
        try:
            from . import mesh
        except Exception as exc:  # noqa: BLE001
            self.error = f"mesh export is not available: {exc}"
            return None
        ui, G, state = self.ui, self.model, self.state.copy()
        out = os.path.expanduser(out or ui.mesh_out)
        root, ext = os.path.splitext(out)
        if ext.lower().lstrip(".") not in formats:
            out = f"{root}.{formats[0]}"
        kwargs = dict(res=ui.mesh_res, level=ui.mesh_level, trim=ui.mesh_trim, formats=formats,
                      chunk=max(1024, int(ui.mesh_chunk)), network=self.model_path)

        def fn(progress, cancel):
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            written = mesh.export_mesh(G, out, state, progress=progress, cancel=cancel, bar=False, **kwargs)
            return ", ".join(str(p) for p in written)

        self.job = Job("mesh", fn, on_done=self._wake, unit="chunks")
        return self.job

    def start_turntable(self, out: Optional[str] = None) -> Optional[Job]:
        """Export a turntable of the current state in a background thread (app.export)."""
        if self.model is None:
            self.error = "no model loaded"
            return None
        if self.job is not None and not self.job.finished:
            return self.job
        try:
            from . import export
        except Exception as exc:  # noqa: BLE001
            self.error = f"exports are not available: {exc}"
            return None
        ui, G, state = self.ui, self.model, self.state.copy()
        out = out or ui.tt_out
        kwargs = dict(frames=ui.tt_frames, path=ui.tt_path,
                      yaw_range=None if ui.tt_path == "360" else ui.tt_yaw_range,
                      pitch_range=ui.tt_pitch, size=ui.tt_res or None,
                      video=export.VideoOptions(fps=ui.tt_fps), network=self.model_path)

        def fn(progress, cancel):
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            written = export.export_turntable(G, out, state, progress=progress, cancel=cancel,
                                              bar=False, **kwargs)
            return ", ".join(str(p) for p in written)

        self.job = Job("turntable", fn, on_done=self._wake)
        return self.job

    # ------------------------------------------------------------------------------------------
    # overlays

    def _draw_help(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        imgui.set_next_window_pos(imgui.ImVec2(io.display_size.x * 0.5 - self._panel_width() * 0.5,
                                               io.display_size.y * 0.5), imgui.Cond_.always,
                                  imgui.ImVec2(0.5, 0.5))
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
        imgui.end()
        if opened is False:
            self.ui.show_help = False

    def _draw_perf_overlay(self) -> None:
        imgui = self.imgui
        res = self.result
        imgui.set_next_window_pos(imgui.ImVec2(self.viewport_rect[2] - 10 * self._ui_scale,
                                               self.viewport_rect[3] - imgui.get_frame_height()
                                               - 12 * self._ui_scale), imgui.Cond_.always,
                                  imgui.ImVec2(1.0, 1.0))
        imgui.set_next_window_bg_alpha(0.55)
        flags = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.always_auto_resize
                 | imgui.WindowFlags_.no_saved_settings | imgui.WindowFlags_.no_focus_on_appearing
                 | imgui.WindowFlags_.no_nav | imgui.WindowFlags_.no_inputs)
        imgui.begin("##perf", None, flags)
        io = imgui.get_io()
        imgui.text(f"UI {io.framerate:5.0f} FPS   render {self._render_fps():5.1f} FPS")
        if res is not None:
            t = res.timings
            imgui.text(" ".join(f"{k} {t[k]:.1f}" for k in ("mapping", "planes", "render", "superres",
                                                             "upload") if k in t) + " ms")
        imgui.end()


def _next_free(stem: str, ext: str) -> str:
    i = 0
    while True:
        p = f"{stem}_{i:03d}{ext}"
        if not os.path.exists(p):
            return p
        i += 1


# ----------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="visualizer.py",
        description="Interactive EG3D viewer (glfw + OpenGL + Dear ImGui).\n"
                    "Orbit with the mouse, explore seeds, truncation, style mixing, the conditioning\n"
                    "pose and render types; press F1 in the window for all keyboard shortcuts.\n\n"
                    "Command-line exports: visualizer.py turntable|interpolate|images|mesh --help",
        epilog="examples:\n"
               "  python visualizer.py                          # the shipped checkpoint\n"
               "  python visualizer.py ffhq512-128.pkl --dataset ffhq.zip\n"
               "  python visualizer.py model.safetensors --state view.json\n"
               "  python visualizer.py turntable --state view.json --out turntable.mp4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None,
                   help=f"generator to open: our .safetensors or an official EG3D .pkl, or a fitted "
                        f"scene (train.py sso: scene.safetensors or its run folder) "
                        f"(default: {DEFAULT_MODEL_PATH.relative_to(DEFAULT_MODEL_PATH.parent.parent)} "
                        f"if it exists, else the viewer opens with no model)")
    p.add_argument("--state", metavar="FILE",
                   help="view state to start from: a .json saved by the viewer or a PNG it captured")
    p.add_argument("--seed", type=int, default=None, help="start at this seed (overrides --state)")
    p.add_argument("--dataset", metavar="PATH",
                   help="dataset zip/folder (dataset.json labels) whose camera distribution is shown "
                        "in the pose plot")
    p.add_argument("--device", default=None,
                   help="torch device for the generator: cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--size", default="1400x860", metavar="WxH", help="window size (default 1400x860)")
    p.add_argument("--font-scale", type=float, default=None,
                   help="UI scale (default: the monitor's content scale, i.e. DPI-aware)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for rendering (default: all cores but one, so the UI "
                        "stays fluid)")
    p.add_argument("--no-vsync", action="store_true", help="do not wait for vertical sync")
    p.add_argument("--screenshot", metavar="PNG",
                   help="render until idle, save a screenshot of the window and exit (for docs/CI)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"--size must be WxH, got {args.size!r}", file=sys.stderr)
        return 2
    state = None
    if args.state:
        try:
            state = S.ViewerState.load(args.state)
        except Exception as exc:  # noqa: BLE001
            print(f"error: --state {args.state}: {exc}", file=sys.stderr)
            return 2
    if args.seed is not None:
        state = state or S.ViewerState()
        state.seed = args.seed
    device = args.device
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path = args.model
    if model_path is None and DEFAULT_MODEL_PATH.is_file():
        model_path = str(DEFAULT_MODEL_PATH)
    try:
        viewer = Viewer(model_path=model_path, state=state, dataset=args.dataset, device=device,
                        size=(w, h), vsync=not args.no_vsync, font_scale=args.font_scale,
                        threads=args.threads)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if model_path is None:
        viewer.missing_default = str(DEFAULT_MODEL_PATH)
        viewer.ui.model_path = str(DEFAULT_MODEL_PATH)
    if args.screenshot:
        viewer.run_until_idle(timeout=300)
        for _ in range(3):
            viewer.step()
        viewer.save_window(args.screenshot)
        viewer.step()
        viewer.close()
        print(f"wrote {args.screenshot}")
        return 0
    viewer.run()
    return 0
