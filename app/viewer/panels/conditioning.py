"""Conditioning panel: the pose the mapping network sees, the A/B debugger, its sensitivity, and
the pose plot (render camera, conditioning pose, a dataset's cameras)."""
from __future__ import annotations

import numpy as np
from imgui_bundle import imgui, implot

from app import state as S

from .base import Panel, help_marker, needs_latent, text_error

PLOT_LIMITS = (-60, 60, -40, 40)          # yaw, elevation (deg)
PLOT_HEIGHT = 230
MAX_PITCH_UI = 89.0
CAMERA_COLOUR = (1.0, 0.35, 0.3, 1.0)
COND_COLOUR = (0.3, 1.0, 0.4, 1.0)
DATASET_COLOUR = (0.65, 0.65, 0.8, 0.35)


def _spec(marker, size, colour):
    col = imgui.ImVec4(*colour)
    return implot.Spec(marker=marker.value, marker_size=size, line_color=col, fill_color=col,
                       marker_line_color=col, marker_fill_color=col)


class ConditioningPanel(Panel):
    title = "Conditioning pose"
    section = "conditioning"
    default_open = True

    def available(self, model) -> bool:
        return needs_latent(model)

    def draw(self, ctx) -> None:
        cond, st = ctx.state.conditioning, ctx.settings
        for mode, label in (("frontal", "frontal"), ("camera", "follow camera"), ("custom", "custom")):
            if imgui.radio_button(label, cond.mode == mode):
                cond.mode = mode
            imgui.same_line()
        imgui.new_line()
        if cond.mode == "custom":
            flags = imgui.SliderFlags_.always_clamp
            _, cond.yaw = imgui.slider_float("cond yaw", cond.yaw, -180.0, 180.0, "%.1f", flags)
            _, cond.pitch = imgui.slider_float("cond pitch", cond.pitch, -MAX_PITCH_UI, MAX_PITCH_UI, "%.1f", flags)
        if imgui.button("swap cond <-> camera (X)"):
            ctx.actions.swap_conditioning()
        if ctx.info is not None and not ctx.info.cond:
            imgui.text_disabled("this model ignores the conditioning pose")
        imgui.separator()
        _, st.split_ab = imgui.checkbox("A/B split (B)", st.split_ab)
        help_marker("Left (A): conditioning fixed at the pose above (frontal if it follows the "
                    "camera). Right (B): conditioning = camera. Drag the split below.")
        if st.split_ab:
            _, st.split_pos = imgui.slider_float("split", st.split_pos, 0.0, 1.0, "%.2f",
                                                 imgui.SliderFlags_.always_clamp)
        self._pose_plot(ctx)
        _, st.sensitivity = imgui.checkbox("measure sensitivity", st.sensitivity)
        help_marker("Mean absolute pixel change (0..255) of the shown render when only the "
                    "conditioning pose moves by +10 deg yaw / pitch, or switches to the camera pose.")
        if st.sensitivity:
            sens = ctx.sensitivity
            if sens is None:
                imgui.text_disabled("measuring...")
            elif "error" in sens:
                text_error(sens["error"])
            else:
                imgui.text(f"cond yaw +{sens['delta_deg']:.0f}: {sens['yaw']:.2f}   "
                           f"pitch +{sens['delta_deg']:.0f}: {sens['pitch']:.2f}")
                imgui.text(f"fixed -> camera cond: {sens['camera']:.2f}  (mean |dpixel|)")
        submitted, st.dataset_path = imgui.input_text("dataset", st.dataset_path,
                                                      imgui.InputTextFlags_.enter_returns_true)
        imgui.same_line()
        if imgui.button("read") or submitted:
            ctx.actions.load_dataset(st.dataset_path)
        help_marker("A dataset zip or folder with dataset.json camera labels (as --dataset)")
        if ctx.tasks.running("dataset"):
            imgui.text_disabled("reading dataset cameras...")
        if ctx.dataset_error:
            text_error(ctx.dataset_error)

    def _pose_plot(self, ctx) -> None:
        """y = -pitch (up = camera above). The conditioning point drags; the camera point is shown
        (the camera is the camera panel's and the viewport's)."""
        s, cond = ctx.state, ctx.state.conditioning
        if not implot.begin_plot("poses (deg from frontal)", imgui.ImVec2(-1, PLOT_HEIGHT * ctx.scale)):
            return
        implot.setup_axes("yaw (deg)", "elevation (deg)")
        implot.setup_axes_limits(*PLOT_LIMITS)
        poses = ctx.dataset_poses
        if poses is not None and len(poses):
            implot.plot_scatter("dataset", np.ascontiguousarray(poses[:, 0]), np.ascontiguousarray(-poses[:, 1]),
                                _spec(implot.Marker_.circle, 1.5, DATASET_COLOUR))
        pose = S.conditioning_pose(s)
        cond_xy = pose if pose is not None else (s.camera.yaw, s.camera.pitch)
        implot.plot_scatter("render camera", np.array([s.camera.yaw], np.float64),
                            np.array([-s.camera.pitch], np.float64), _spec(implot.Marker_.circle, 5.0, CAMERA_COLOUR))
        implot.plot_scatter("conditioning", np.array([cond_xy[0]], np.float64), np.array([-cond_xy[1]], np.float64),
                            _spec(implot.Marker_.square, 4.0, COND_COLOUR))
        if pose is not None:
            changed, x, y, *_ = implot.drag_point(1, float(pose[0]), float(-pose[1]), imgui.ImVec4(*COND_COLOUR), 4.0)
            if changed and np.isfinite(x) and np.isfinite(y):
                cond.mode = "custom"
                cond.yaw, cond.pitch = float(np.clip(x, -180, 180)), float(np.clip(-y, -MAX_PITCH_UI, MAX_PITCH_UI))
        implot.end_plot()
        imgui.text_disabled("red: render camera, green: conditioning (drag it); grey: dataset cameras")
