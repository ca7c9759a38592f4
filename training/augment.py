"""ADA-style discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

`AugmentPipe` applies, per sample and each with probability `multiplier * p`:

- pixel blitting: x-flip, 90-degree rotations, integer translation (up to `xint_max` of the
  size, reflect padding); exact (an index gather), so p = 0 is the identity bit for bit;
- general geometry: isotropic scaling, arbitrary rotation (before and after the anisotropic
  scaling), anisotropic scaling, fractional translation, composed into one affine map and
  resampled once (bilinear, 2x supersampled, reflection padding);
- colour: brightness, contrast, luma flip, hue rotation, saturation, composed into one 4x4
  affine colour matrix.

The parameter distributions follow the official pipeline (e.g. x-flip picks flip / no-flip
uniformly once active, rotate90 picks k in 0..3, scaling is 2^N(0, std)). Not covered: the
official wavelet (sym6) up/down-sampling filter of the geometric path (we use bilinear
resampling at 2x, which is close but not identical), image-space filtering (`imgfilter`),
additive noise and cutout; EG3D's `--aug=ada` uses none of the last three.

Images may have 3 channels or 6 (EG3D's dual input: image ++ upsampled raw image). Geometry is
shared by all channels; the colour matrix is applied to each RGB triple.

`AdaController` is the adaptive heuristic: every `interval` steps,
p += sign(E[sign(D(real))] - target) * batch * interval / (ada_kimg * 1000), clamped at 0.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# The official EG3D `--aug=ada|fixed` pipeline ('bgc': blit + geometric + colour).
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
SPECS = {
    "bgc": BGC,
    "blit": dict(xflip=1, rotate90=1, xint=1),
    "geom": dict(scale=1, rotate=1, aniso=1, xfrac=1),
    "color": dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    "bg": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
}


def _eye(n: int, batch: int, device) -> torch.Tensor:
    return torch.eye(n, device=device).expand(batch, n, n).clone()


def _gate(value: torch.Tensor, identity: float, prob: torch.Tensor) -> torch.Tensor:
    """Per sample: value with probability prob, else the identity value."""
    keep = torch.rand(value.shape[0], device=value.device) < prob
    keep = keep.reshape([-1] + [1] * (value.ndim - 1))
    return torch.where(keep, value, torch.full_like(value, identity))


def _affine2d(a, b, c, d, tx, ty) -> torch.Tensor:
    """Batch of 3x3 matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from [B] tensors."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def _rotation2d(theta):
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    return _affine2d(cos, -sin, sin, cos, zero, zero)


def _scale2d(sx, sy):
    zero = torch.zeros_like(sx)
    return _affine2d(sx, zero, zero, sy, zero, zero)


def _translate2d(tx, ty):
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _affine2d(one, zero, zero, one, tx, ty)


def _only_where_changed(images: torch.Tensor, m: torch.Tensor, apply) -> torch.Tensor:
    """apply(images, m), keeping samples whose matrix is the identity bit-exact (and skipping
    the work when all are)."""
    eye = torch.eye(m.shape[-1], device=m.device)
    changed = (m - eye).abs().amax(dim=(1, 2)) > 0
    if not bool(changed.any()):
        return images
    out = apply(images, m)
    return torch.where(changed[:, None, None, None], out, images)


class AugmentPipe(nn.Module):
    """Differentiable augmentation of [B, C, H, W] images in [-1, 1] (C = 3 or 6).

    Each `<op>` argument is a probability multiplier (0 = off, 1 = on with probability p);
    `p` (a buffer, saved in snapshots) is the overall strength.
    """

    def __init__(self, xflip=0, rotate90=0, xint=0, xint_max=0.125,
                 scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2,
                 xfrac_std=0.125, brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0,
                 brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1, p: float = 0.0):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.xflip, self.rotate90, self.xint, self.xint_max = float(xflip), float(rotate90), float(xint), float(xint_max)
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.rotate_max, self.aniso_std, self.xfrac_std = (
            float(scale_std), float(rotate_max), float(aniso_std), float(xfrac_std))
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)

    @classmethod
    def from_spec(cls, spec: str = "bgc", p: float = 0.0) -> "AugmentPipe":
        if spec not in SPECS:
            raise ValueError(f"unknown augmentation spec {spec!r}; choose one of {', '.join(SPECS)}")
        return cls(**SPECS[spec], p=p)

    # ------------------------------------------------------------------ geometry
    def _blit_matrix(self, batch: int, width: int, height: int, device) -> Optional[torch.Tensor]:
        """Inverse map (output pixel -> input pixel, centred coordinates) of the integer ops."""
        p = self.p
        m = None

        def compose(t):
            nonlocal m
            m = t if m is None else m @ t

        if self.xflip > 0:
            flip = _gate(torch.floor(torch.rand(batch, device=device) * 2), 0.0, self.xflip * p)
            compose(_scale2d(1 - 2 * flip, torch.ones_like(flip)))
        if self.rotate90 > 0:
            k = _gate(torch.floor(torch.rand(batch, device=device) * 4), 0.0, self.rotate90 * p)
            compose(_rotation2d(k * (math.pi / 2)))
        if self.xint > 0:
            t = (torch.rand(batch, 2, device=device) * 2 - 1) * self.xint_max
            t = _gate(t, 0.0, self.xint * p)
            compose(_translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height)))
        return m

    def _geom_matrix(self, batch: int, width: int, height: int, device) -> Optional[torch.Tensor]:
        p = self.p
        m = None

        def compose(t):
            nonlocal m
            m = t if m is None else m @ t

        if self.scale > 0:
            s = _gate(torch.exp2(torch.randn(batch, device=device) * self.scale_std), 1.0, self.scale * p)
            compose(_scale2d(1 / s, 1 / s))
        # Rotation is applied before and after the anisotropic scaling, each with p_rot, so that
        # P(any rotation) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
        if self.rotate > 0:
            theta = _gate((torch.rand(batch, device=device) * 2 - 1) * math.pi * self.rotate_max, 0.0, p_rot)
            compose(_rotation2d(theta))
        if self.aniso > 0:
            s = _gate(torch.exp2(torch.randn(batch, device=device) * self.aniso_std), 1.0, self.aniso * p)
            compose(_scale2d(1 / s, s))
        if self.rotate > 0:
            theta = _gate((torch.rand(batch, device=device) * 2 - 1) * math.pi * self.rotate_max, 0.0, p_rot)
            compose(_rotation2d(theta))
        if self.xfrac > 0:
            t = _gate(torch.randn(batch, 2, device=device) * self.xfrac_std, 0.0, self.xfrac * p)
            compose(_translate2d(-t[:, 0] * width, -t[:, 1] * height))
        return m

    @staticmethod
    def _apply_blit(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Exact integer resampling (reflect padding) by an index gather."""
        batch, channels, height, width = images.shape
        device = images.device
        ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
        cx, cy = (width - 1) / 2, (height - 1) / 2
        coords = torch.stack([xs.flatten() - cx, ys.flatten() - cy, torch.ones(height * width, device=device)])
        src = m @ coords                                              # [B, 3, HW]
        sx = torch.round(src[:, 0] + cx).long()
        sy = torch.round(src[:, 1] + cy).long()

        def reflect(i, n):
            if n == 1:
                return torch.zeros_like(i)
            period = 2 * (n - 1)
            i = torch.remainder(i, period)
            return torch.where(i >= n, period - i, i)

        index = reflect(sy, height) * width + reflect(sx, width)       # [B, HW]
        flat = images.reshape(batch, channels, height * width)
        out = torch.gather(flat, 2, index.unsqueeze(1).expand(batch, channels, -1))
        return out.reshape(batch, channels, height, width)

    @staticmethod
    def _apply_affine(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Bilinear resampling by the inverse map m (centred pixel units), 2x supersampled."""
        batch, channels, height, width = images.shape
        # Centred pixel units -> grid_sample's normalised units (align_corners=False).
        to_norm = torch.diag(torch.tensor([2 / width, 2 / height, 1.0], device=images.device))
        from_norm = torch.diag(torch.tensor([width / 2, height / 2, 1.0], device=images.device))
        theta = (to_norm @ m @ from_norm)[:, :2, :]
        up = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
        grid = F.affine_grid(theta, [batch, channels, 2 * height, 2 * width], align_corners=False)
        out = F.grid_sample(up, grid.to(up.dtype), mode="bilinear", padding_mode="reflection",
                            align_corners=False)
        return F.avg_pool2d(out, 2)

    # ------------------------------------------------------------------ colour
    def _color_matrix(self, batch: int, device) -> Optional[torch.Tensor]:
        p = self.p
        c = None
        eye = _eye(4, batch, device)

        def compose(t):
            nonlocal c
            c = t if c is None else t @ c

        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
        vv = torch.outer(luma, luma)
        if self.brightness > 0:
            b = _gate(torch.randn(batch, device=device) * self.brightness_std, 0.0, self.brightness * p)
            t = eye.clone()
            t[:, :3, 3] = b[:, None]
            compose(t)
        if self.contrast > 0:
            s = _gate(torch.exp2(torch.randn(batch, device=device) * self.contrast_std), 1.0, self.contrast * p)
            t = eye.clone()
            t[:, :3, :3] *= s[:, None, None]
            compose(t)
        if self.lumaflip > 0:
            flip = _gate(torch.floor(torch.rand(batch, device=device) * 2), 0.0, self.lumaflip * p)
            compose(eye - 2 * vv * flip[:, None, None])              # Householder reflection
        if self.hue > 0:
            theta = _gate((torch.rand(batch, device=device) * 2 - 1) * math.pi * self.hue_max, 0.0, self.hue * p)
            # Rodrigues rotation about the luma axis.
            k = torch.zeros(4, 4, device=device)
            a = luma[:3]
            k[:3, :3] = torch.tensor([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]], device=device)
            sin, cos = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]
            rot = eye + sin * k + (1 - cos) * (k @ k)
            compose(rot)
        if self.saturation > 0:
            s = _gate(torch.exp2(torch.randn(batch, device=device) * self.saturation_std), 1.0, self.saturation * p)
            compose(vv + (eye - vv) * s[:, None, None])
        return c

    @staticmethod
    def _apply_color(images: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        if channels % 3 != 0:
            raise ValueError(f"colour augmentation needs RGB triples, got {channels} channels")
        x = images.reshape(batch, channels // 3, 3, height * width)
        x = c[:, None, :3, :3] @ x + c[:, None, :3, 3:]
        return x.reshape(batch, channels, height, width)

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        batch, _, height, width = images.shape
        device = images.device
        if float(self.p) == 0:
            return images
        blit = self._blit_matrix(batch, width, height, device)
        geom = self._geom_matrix(batch, width, height, device)
        if geom is not None:
            m = geom if blit is None else blit @ geom
            images = _only_where_changed(images, m, self._apply_affine)
        elif blit is not None:
            images = self._apply_blit(images, blit)
        color = self._color_matrix(batch, device)
        if color is not None:
            images = _only_where_changed(images, color, self._apply_color)
        return images

    def extra_repr(self) -> str:
        ops = [k for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                           "contrast", "lumaflip", "hue", "saturation") if getattr(self, k) > 0]
        return f"p={float(self.p):.4f}, ops={ops}"


class AdaController:
    """Adaptive augmentation strength: drives E[sign(D(real))] towards `target` (official 0.6)."""

    def __init__(self, target: float = 0.6, interval: int = 4, ada_kimg: float = 500):
        self.target, self.interval, self.ada_kimg = float(target), int(interval), float(ada_kimg)
        self.sign_sum = 0.0
        self.sign_count = 0.0

    def accumulate(self, sign_sum: float, count: float) -> None:
        self.sign_sum += float(sign_sum)
        self.sign_count += float(count)

    def adjust(self, pipe: AugmentPipe, batch_size: int) -> Optional[float]:
        """Update pipe.p from the signs accumulated since the last call; returns E[sign] or None."""
        if self.sign_count <= 0:
            return None
        rt = self.sign_sum / self.sign_count
        step = math.copysign(1.0, rt - self.target) if rt != self.target else 0.0
        step *= batch_size * self.interval / (self.ada_kimg * 1000)
        with torch.no_grad():
            pipe.p.copy_((pipe.p + step).clamp(min=0))
        self.sign_sum = 0.0
        self.sign_count = 0.0
        return rt

    def state_dict(self) -> dict:
        return dict(sign_sum=self.sign_sum, sign_count=self.sign_count)

    def load_state_dict(self, state: dict) -> None:
        self.sign_sum = float(state.get("sign_sum", 0.0))
        self.sign_count = float(state.get("sign_count", 0.0))
