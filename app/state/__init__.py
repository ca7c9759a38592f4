"""The view state and what turns it into pixels, shared by the viewer and the exports.

- `schema`: `ViewerState` (latent / camera / conditioning / render sections), JSON + PNG
  loading, the one validation of every number (`StateError`, a ValueError naming the field);
- `render`: camera labels, ws (seeds or a projection file), the planes cache, `render_state`
  (`Renderable.render`), and the inspection views (`layer_view`, `planes_view`, `trace_ray`);
- `display`: colour maps, robust ranges, `to_display_rgb`, the inspection views' normalisation
  (one channel, PCA, grid, planes side by side), the state in PNG metadata;
- `models`: `load_model` (a generator or a fitted scene).
"""
from .display import (channel_grid, colour_channel, fit_planes_pca, inspect_rgb, normalise, planes_rgb,
                      planes_side_by_side, feature_channel, image_to_uint8, png_state_text, robust_range, state_from_png,
                      state_from_png_safe, to_display_rgb)
from .models import load_model
from .render import (PCACache, bypasses_planes_cache, capture_layer, layer_view, planes_view, ray_index, state_planes,
                     trace_ray,
                     PlanesCache, camera_label, compute_ws, conditioning_label, conditioning_pose,
                     mix_layer_indices, model_camera_defaults, pose_label, projected_ws, projection_ref,
                     render_settings, render_state, resolved_camera, z_from_seed)
from .schema import (COND_MODES, FLAT_NAMES, MAX_SEED, NOISE_MODES, PNG_STATE_KEY, RENDER_TYPES,
                     STATE_VERSION, VIEW_MODES, CameraSection, ConditioningSection, LatentSection,
                     LayersSection, PlanesSection, RaySection, RenderSection, StateError, ViewerState)

__all__ = [
    "channel_grid", "colour_channel", "fit_planes_pca", "inspect_rgb", "normalise", "planes_rgb",
    "planes_side_by_side", "PCACache", "bypasses_planes_cache", "capture_layer", "layer_view", "planes_view", "ray_index", "state_planes",
    "trace_ray",
    "VIEW_MODES", "LayersSection", "PlanesSection", "RaySection",
    "feature_channel", "image_to_uint8", "png_state_text", "robust_range", "state_from_png",
    "state_from_png_safe", "to_display_rgb", "load_model", "PlanesCache", "camera_label", "compute_ws",
    "conditioning_label", "conditioning_pose", "mix_layer_indices", "model_camera_defaults", "pose_label",
    "projected_ws", "projection_ref", "render_settings", "render_state", "resolved_camera", "z_from_seed", "COND_MODES", "FLAT_NAMES",
    "MAX_SEED", "NOISE_MODES", "PNG_STATE_KEY", "RENDER_TYPES", "STATE_VERSION", "CameraSection",
    "ConditioningSection", "LatentSection", "RenderSection", "StateError", "ViewerState",
]
