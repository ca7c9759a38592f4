"""Camera panel: yaw, pitch, radius, fov, pivot of the render camera; scroll mode; auto-orbit."""
from __future__ import annotations

import math

import numpy as np
from imgui_bundle import imgui

from app import state as S
from model.camera import DEFAULT_FOV_DEG

from .base import Panel, help_marker

RADIUS_SLIDER = (0.25, 3.0)          # x the model's average radius
FOV_SLIDER = (1.0, 90.0)
PIVOT_SLIDER = 2.0
MAX_PITCH_UI = 89.0


class CameraPanel(Panel):
    title = "Camera"
    section = "camera"
    default_open = True

    def draw(self, ctx) -> None:
        cam, st = ctx.state.camera, ctx.settings
        resolved = S.resolved_camera(ctx.state, ctx.model)
        _, cam.yaw = imgui.slider_float("yaw (deg)", cam.yaw, -180.0, 180.0, "%.1f", imgui.SliderFlags_.always_clamp)
        _, cam.pitch = imgui.slider_float("pitch (deg)", cam.pitch, -MAX_PITCH_UI, MAX_PITCH_UI, "%.1f",
                                          imgui.SliderFlags_.always_clamp)
        r0 = S.model_camera_defaults(ctx.model)["radius"]
        lo, hi = RADIUS_SLIDER[0] * r0, RADIUS_SLIDER[1] * r0
        changed, r = imgui.slider_float("radius", float(resolved["radius"]), lo, hi, "%.3f",
                                        imgui.SliderFlags_.always_clamp)
        if changed and math.isfinite(r):
            cam.radius = float(np.clip(r, lo, hi))
        changed, fov = imgui.slider_float("fov (deg)", float(resolved["fov"]), *FOV_SLIDER, "%.2f",
                                          imgui.SliderFlags_.always_clamp)
        if changed and math.isfinite(fov):
            cam.fov = float(np.clip(fov, *FOV_SLIDER))
        changed, piv = imgui.drag_float3("pivot", list(resolved["pivot"]), 0.005, -PIVOT_SLIDER, PIVOT_SLIDER,
                                         "%.3f", imgui.SliderFlags_.always_clamp)
        if changed and all(math.isfinite(v) for v in piv):
            cam.pivot = [float(np.clip(v, -PIVOT_SLIDER, PIVOT_SLIDER)) for v in piv]
        if imgui.button("reset camera (R)"):
            ctx.state.camera = S.CameraSection()
        help_marker("The model's average camera: frontal, avg_camera_radius / pivot / fov "
                    f"(fov {DEFAULT_FOV_DEG} for FFHQ-style models)")
        imgui.same_line()
        if imgui.radio_button("scroll: radius", st.scroll_zooms == "radius"):
            st.scroll_zooms = "radius"
        imgui.same_line()
        if imgui.radio_button("fov", st.scroll_zooms == "fov"):
            st.scroll_zooms = "fov"
        _, st.orbit = imgui.checkbox("auto-orbit (O)", st.orbit)
        imgui.same_line()
        imgui.push_item_width(90 * ctx.scale)
        _, st.orbit_speed = imgui.slider_float("deg/s", st.orbit_speed, -180.0, 180.0, "%.0f")
        imgui.pop_item_width()
