"""Camera utilities: look-at orbit poses, intrinsics, the 25-d label, ray generation.

Conventions (shared with the official EG3D datasets and checkpoints):
- cam2world is OpenCV-style: camera +x = image right, +y = image down, +z = viewing direction.
  World +y is up; the frontal camera sits near (0, 0, radius) looking along -z.
- A label is 25 floats: the 4x4 cam2world flattened row-major, then the 3x3 intrinsics
  flattened row-major, normalised by image size (cx = cy = 0.5).
- yaw and pitch are the official "horizontal / vertical mean": yaw = pitch = pi/2 is frontal;
  pitch < pi/2 puts the camera above. The camera centre lies on a sphere around the world origin
  (not around the pivot) and looks at the pivot.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch

TensorLike = Union[float, Sequence[float], torch.Tensor]

FRONTAL = math.pi / 2
DEFAULT_RADIUS = 2.7
DEFAULT_PIVOT = (0.0, 0.0, 0.2)
DEFAULT_FOV_DEG = 18.837                      # FFHQ-trained EG3D models
# The official helper approximates pi and sqrt(2) by these constants; labels of official datasets
# and checkpoints were made with them, so they are the default.
_OFFICIAL_PI = 3.14159
_OFFICIAL_SQRT2 = 1.414


def _as_column(x: TensorLike, device) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32, device=device)
    return t.reshape(-1, 1)


def look_at_pose(yaw: TensorLike, pitch: TensorLike, radius: TensorLike = DEFAULT_RADIUS,
                 pivot: Sequence[float] = DEFAULT_PIVOT, device="cpu") -> torch.Tensor:
    """cam2world [B, 4, 4] for cameras on a sphere (around the origin) looking at `pivot`.

    yaw, pitch, radius broadcast to a batch B. pitch is clamped to (1e-5, pi - 1e-5) as in the
    official sampler; the polar angle from +y is arccos(1 - 2 * pitch / pi).
    """
    yaw, pitch, radius = (_as_column(v, device) for v in (yaw, pitch, radius))
    yaw, pitch, radius = torch.broadcast_tensors(yaw, pitch, radius)
    pitch = pitch.clamp(1e-5, math.pi - 1e-5)
    phi = torch.arccos(1 - 2 * pitch / math.pi)
    origin = torch.cat([radius * torch.sin(phi) * torch.cos(math.pi - yaw),
                        radius * torch.cos(phi),
                        radius * torch.sin(phi) * torch.sin(math.pi - yaw)], dim=1)
    target = torch.as_tensor(pivot, dtype=torch.float32, device=device).reshape(1, 3)
    return look_at(origin, target)


def look_at(origin: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """cam2world [B, 4, 4] of cameras at origin [B, 3] looking at target [B or 1, 3], no roll."""
    forward = torch.nn.functional.normalize(target - origin, dim=-1)
    world_up = torch.tensor([0.0, 1.0, 0.0], device=origin.device).expand_as(forward)
    right = -torch.nn.functional.normalize(torch.cross(world_up, forward, dim=-1), dim=-1)
    up = torch.nn.functional.normalize(torch.cross(forward, right, dim=-1), dim=-1)
    cam2world = torch.eye(4, device=origin.device).repeat(origin.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, up, forward], dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world


def yaw_pitch_radius(cam2world: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `look_at_pose` for the camera centre: (yaw [B], pitch [B], radius [B])."""
    c = cam2world[..., :3, 3]
    radius = c.norm(dim=-1)
    phi = torch.arccos((c[..., 1] / radius).clamp(-1, 1))
    pitch = (1 - torch.cos(phi)) * math.pi / 2
    yaw = math.pi - torch.atan2(c[..., 2], c[..., 0])
    yaw = torch.remainder(yaw + math.pi, 2 * math.pi) - math.pi
    return yaw, pitch, radius


def fov_to_intrinsics(fov_degrees: float, official_constants: bool = True, device="cpu") -> torch.Tensor:
    """Normalised intrinsics [3, 3] for a vertical field of view in degrees.

    EG3D's convention is focal = 1 / (sqrt(2) tan(fov / 2)) (so "fov" is not the plain vertical
    field of view: 18.837 deg gives the FFHQ focal 4.26). official_constants=True reproduces the
    official helper's truncated pi ~ 3.14159 and sqrt 2 ~ 1.414 (focal 4.263391 at 18.837 deg, the
    value in official labels); False uses exact constants (4.262743).
    """
    if official_constants:
        focal = 1.0 / (math.tan(fov_degrees * _OFFICIAL_PI / 360) * _OFFICIAL_SQRT2)
    else:
        focal = 1.0 / (math.tan(math.radians(fov_degrees) / 2) * math.sqrt(2))
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], device=device)


def intrinsics_to_fov(intrinsics: torch.Tensor) -> torch.Tensor:
    """Field of view in degrees from normalised intrinsics [..., 3, 3] (official constants)."""
    focal = intrinsics[..., 0, 0]
    return torch.atan(1.0 / (focal * _OFFICIAL_SQRT2)) * 360 / _OFFICIAL_PI


def make_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pack cam2world [B, 4, 4] and intrinsics [B or 1, 3, 3] (or [3, 3]) into labels [B, 25]."""
    batch = cam2world.shape[0]
    intrinsics = intrinsics.reshape(-1, 9).to(cam2world).expand(batch, 9)
    return torch.cat([cam2world.reshape(batch, 16), intrinsics], dim=1)


def split_label(label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unpack labels [B, 25] into cam2world [B, 4, 4] and intrinsics [B, 3, 3]."""
    if label.shape[-1] != 25:
        raise ValueError(f"camera label must have 25 values, got shape {tuple(label.shape)}")
    return label[:, :16].reshape(-1, 4, 4), label[:, 16:25].reshape(-1, 3, 3)


def orbit_label(yaw: TensorLike, pitch: TensorLike, radius: TensorLike = DEFAULT_RADIUS,
                pivot: Sequence[float] = DEFAULT_PIVOT, fov_degrees: float = DEFAULT_FOV_DEG,
                device="cpu") -> torch.Tensor:
    """Labels [B, 25] of look-at cameras: the usual way to build `c` for G."""
    return make_label(look_at_pose(yaw, pitch, radius, pivot, device=device),
                      fov_to_intrinsics(fov_degrees, device=device))


def generate_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
    """Per-pixel rays of a pinhole camera.

    Returns origins [B, R*R, 3] (the camera centre, repeated) and unit world directions
    [B, R*R, 3], ray index = row * R + col, pixel centres at ((col + .5) / R, (row + .5) / R).
    Skew is honoured as in the official ray sampler.
    """
    batch, device = cam2world.shape[0], cam2world.device
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    centres = (torch.arange(resolution, dtype=torch.float32, device=device) + 0.5) / resolution
    row, col = torch.meshgrid(centres, centres, indexing="ij")
    x = col.reshape(1, -1)
    y = row.reshape(1, -1)
    x_cam = (x - cx + cy * sk / fy - sk * y / fy) / fx
    y_cam = (y - cy) / fy
    points = torch.stack([x_cam, y_cam, torch.ones_like(x_cam), torch.ones_like(x_cam)], dim=-1)
    world = torch.bmm(cam2world, points.expand(batch, -1, -1).transpose(1, 2)).transpose(1, 2)[..., :3]
    origin = cam2world[:, None, :3, 3]
    # contiguous first: the difference keeps the transposed layout, and the norm over its strided
    # last dimension costs 12x more (2.8 ms at 128², more than the rest of the function)
    directions = torch.nn.functional.normalize((world - origin).contiguous(), dim=-1)
    return origin.expand(-1, directions.shape[1], -1), directions
