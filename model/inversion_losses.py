"""The reconstruction losses of the inversion: pixel, MS-SSIM, discriminator features, LPIPS-VGG.

Nothing here downloads: MS-SSIM comes from `pytorch-msssim`, the feature distance from the
model's own discriminator (when the file has one) and LPIPS from a local VGG16 file
(`model.lpips`). `describe()` names the active set; it is stored with every projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

# pytorch-msssim's 5 default scale weights; it needs smaller side > (win - 1) * 2**4.
MSSSIM_DOWNSAMPLE = 16
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MSSSIM_MAX_WIN = 11
MSSSIM_MIN_WIN = 3


@dataclass
class LossWeights:
    """Weights of the reconstruction terms (0 switches a term off)."""
    pixel: float = 1.0          # MSE of the final image, [-1, 1] range
    raw: float = 0.5            # MSE of the neural render against the target downsampled to it
    msssim: float = 0.2         # 1 - MS-SSIM of the final image, [0, 1] range
    lpips: float = 1.0          # LPIPS-VGG (only with a VGG16 file)
    discriminator: float = 0.1  # mean squared difference of D's block features (only with a D)


def msssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM of images [B, 3, H, W] in [-1, 1]; the window shrinks to what the image size
    allows (pytorch-msssim needs side > (win - 1) * 16), plain SSIM below that."""
    from pytorch_msssim import ms_ssim, ssim

    x01, y01 = (x + 1) / 2, (y + 1) / 2
    side = min(x.shape[-2:])
    for win in range(MSSSIM_MAX_WIN, MSSSIM_MIN_WIN - 1, -2):
        if side > (win - 1) * MSSSIM_DOWNSAMPLE:
            return 1 - ms_ssim(x01, y01, data_range=1.0, win_size=win, weights=list(MSSSIM_WEIGHTS))
    win = max(MSSSIM_MIN_WIN, min(MSSSIM_MAX_WIN, side - (side + 1) % 2))
    return 1 - ssim(x01, y01, data_range=1.0, win_size=win)


def discriminator_features(D, image: torch.Tensor, image_raw: torch.Tensor) -> List[torch.Tensor]:
    """The activations after each block of the dual discriminator, [B, C, r, r] per block."""
    from .discriminator import resize_raw

    x = torch.cat([image, resize_raw(image_raw, image.shape[-1])], dim=1)
    h, feats = None, []
    for res in D.block_resolutions:
        h = getattr(D, f"b{res}")(h, x if h is None else None)
        feats.append(h)
    return feats


class ReconstructionLoss:
    """Distance between a render (G.render's dict) and one fixed target image [1, 3, H, W].

    The target is resized (antialiased) to the generator's output and neural-render sizes once;
    its LPIPS and D features are cached.
    """

    def __init__(self, target: torch.Tensor, img_resolution: int, raw_resolution: int,
                 weights: Optional[LossWeights] = None, lpips=None, D=None):
        self.weights = weights or LossWeights()
        self.target = resize(target, img_resolution)
        self.target_raw = resize(target, raw_resolution)
        self.lpips = lpips if self.weights.lpips > 0 else None
        self.D = D if self.weights.discriminator > 0 else None
        with torch.no_grad():
            self._lpips_target = self.lpips.features(self.target) if self.lpips is not None else None
            self._d_target = (discriminator_features(self.D, self.target, self.target_raw)
                              if self.D is not None else None)

    def describe(self) -> str:
        """The active terms and their weights, e.g. 'pixel 1 + raw 0.5 + msssim 0.2'."""
        w = self.weights
        terms = [("pixel", w.pixel), ("raw", w.raw), ("msssim", w.msssim)]
        if self.lpips is not None:
            terms.append((f"lpips-vgg ({self.lpips.source})", w.lpips))
        if self.D is not None:
            terms.append(("discriminator features", w.discriminator))
        return " + ".join(f"{name} {weight:g}" for name, weight in terms if weight > 0)

    def __call__(self, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Loss terms of one render; 'total' is their weighted sum (batch 1)."""
        w = self.weights
        image, raw = out["image"], out["image_raw"]
        terms = {"pixel": F.mse_loss(image, self.target)}
        if w.raw > 0:
            terms["raw"] = F.mse_loss(raw, self.target_raw)
        if w.msssim > 0:
            terms["msssim"] = msssim_loss(image, self.target)
        if self.lpips is not None:
            terms["lpips"] = self.lpips.distance_to_features(image, self._lpips_target).mean()
        if self.D is not None:
            feats = discriminator_features(self.D, image, raw)
            terms["discriminator"] = sum(F.mse_loss(a, b) for a, b in zip(feats, self._d_target)) / len(feats)
        total = sum(getattr(w, name) * value for name, value in terms.items())
        terms["total"] = total
        return terms


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of [B, C, H, W] to size x size (identity when it matches)."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak = the [0, 1] range), mean over the batch's pixels."""
    mse = ((x.clamp(-1, 1) - y.clamp(-1, 1)) / 2).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
