"""The EG3D dual discriminator: final image and upsampled raw image side by side, camera-
conditioned through a projection head."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .backbone import channels_at
from .config import DiscriminatorConfig
from .layers import FILTER_TAPS, DiscriminatorBlock, DiscriminatorEpilogue
from .mapping import MappingNetwork


def resize_raw(image_raw: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of the neural render to the final image size."""
    return F.interpolate(image_raw, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


class DualDiscriminator(nn.Module):
    """D(dict(image [B,3,S,S], image_raw [B,3,R,R]), c [B,25]) -> logits [B, 1]."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        if cfg.architecture != "resnet":
            raise ValueError(f"only the 'resnet' discriminator architecture is supported, got {cfg.architecture!r}")
        self.cfg = cfg
        res_log2 = cfg.img_resolution.bit_length() - 1
        self.block_resolutions = [2 ** i for i in range(res_log2, 2, -1)]
        fp16_resolution = max(2 ** (res_log2 + 1 - cfg.num_fp16_res), 8)
        cmap_dim = channels_at(4, cfg.channel_base, cfg.channel_max) if cfg.cmap_dim is None else cfg.cmap_dim
        cmap_dim = 0 if cfg.c_dim == 0 else cmap_dim
        in_images = 2 * cfg.img_channels
        layer_idx = 0
        for res in self.block_resolutions:
            tmp = channels_at(res, cfg.channel_base, cfg.channel_max)
            block = DiscriminatorBlock(tmp if res < cfg.img_resolution else 0, tmp,
                                       channels_at(res // 2, cfg.channel_base, cfg.channel_max),
                                       res, in_images, layer_idx, use_fp16=res >= fp16_resolution,
                                       conv_clamp=cfg.conv_clamp, freeze_layers=cfg.freeze_layers)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if cfg.c_dim > 0:
            self.mapping = MappingNetwork(0, cfg.c_dim, cmap_dim, num_ws=None, w_avg_beta=None,
                                          num_layers=cfg.mapping_layers)
        self.b4 = DiscriminatorEpilogue(channels_at(4, cfg.channel_base, cfg.channel_max), cmap_dim, 4,
                                        mbstd_group_size=cfg.mbstd_group_size,
                                        mbstd_num_channels=cfg.mbstd_num_channels,
                                        conv_clamp=cfg.conv_clamp)
        # Unused by the forward pass; kept so official state dicts load one-to-one.
        self.register_buffer("resample_filter", ops.make_filter(FILTER_TAPS))

    c_dim = property(lambda self: self.cfg.c_dim)
    img_resolution = property(lambda self: self.cfg.img_resolution)

    def forward(self, img: Dict[str, torch.Tensor], c: torch.Tensor, blur_sigma: float = 0.0,
                blur_sigma_raw: float = 0.0, **_unused) -> torch.Tensor:
        """blur_sigma blurs the final image (the official warm-up blur); blur_sigma_raw blurs
        the upsampled raw image too (the official loss leaves it unblurred)."""
        image = ops.gaussian_blur(img["image"], blur_sigma)
        raw = ops.gaussian_blur(resize_raw(img["image_raw"], image.shape[-1]), blur_sigma_raw)
        x = torch.cat([image, raw], dim=1)
        h = None
        for res in self.block_resolutions:
            h = getattr(self, f"b{res}")(h, x if h is None else None)
        cmap = None
        if self.cfg.c_dim > 0:
            if self.cfg.disc_c_noise > 0:
                c = c + torch.randn_like(c) * c.std(0) * self.cfg.disc_c_noise
            cmap = self.mapping(None, c)
        return self.b4(h, cmap)
