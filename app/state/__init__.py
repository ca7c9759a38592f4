"""The view state and what turns it into pixels, shared by the viewer and the exports.

- `schema`: `ViewerState` (latent / camera / conditioning / render sections), JSON + PNG
  loading, the one validation of every number (`StateError`, a ValueError naming the field);
- `render`: camera labels, ws (seeds or a projection file), the planes cache, `render_state` (`Renderable.render`);
- `display`: colour maps, robust ranges, `to_display_rgb`, the state in PNG metadata;
- `models`: `load_model` (a generator or a fitted scene).
"""
from .display import (feature_channel, image_to_uint8, png_state_text, robust_range, state_from_png,
                      state_from_png_safe, to_display_rgb)
from .models import load_model
from .render import (PlanesCache, camera_label, compute_ws, conditioning_label, conditioning_pose,
                     mix_layer_indices, model_camera_defaults, pose_label, projected_ws, projection_ref,
                     render_settings, render_state, resolved_camera, z_from_seed)
from .schema import (COND_MODES, FLAT_NAMES, MAX_SEED, NOISE_MODES, PNG_STATE_KEY, RENDER_TYPES,
                     STATE_VERSION, CameraSection, ConditioningSection, LatentSection, RenderSection,
                     StateError, ViewerState)

__all__ = [
    "feature_channel", "image_to_uint8", "png_state_text", "robust_range", "state_from_png",
    "state_from_png_safe", "to_display_rgb", "load_model", "PlanesCache", "camera_label", "compute_ws",
    "conditioning_label", "conditioning_pose", "mix_layer_indices", "model_camera_defaults", "pose_label",
    "projected_ws", "projection_ref", "render_settings", "render_state", "resolved_camera", "z_from_seed", "COND_MODES", "FLAT_NAMES",
    "MAX_SEED", "NOISE_MODES", "PNG_STATE_KEY", "RENDER_TYPES", "STATE_VERSION", "CameraSection",
    "ConditioningSection", "LatentSection", "RenderSection", "StateError", "ViewerState",
]
