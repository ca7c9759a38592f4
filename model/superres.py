"""StyleGAN2-block super-resolution from the neural render to the output image."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .config import SR_MODULES, SuperResConfig
from .layers import FILTER_TAPS, SynthesisBlock

SR_CONV_CLAMP = 256     # the official SR blocks clamp whenever they are marked fp16


class SuperResolution(nn.Module):
    """Two 'skip' synthesis blocks driven by the last w; the official Hybrid 2X/4X/8X/8XDC.

    rgb [B, 3, R, R] (first channels of the feature image) and x [B, C, R, R] are resized
    (bilinear, antialiased) to the input resolution, then block0 (keeps or doubles the
    resolution, by variant) and block1 (doubles) produce [B, 3, S, S].
    """

    def __init__(self, cfg: SuperResConfig, in_channels: int, img_resolution: int,
                 img_channels: int = 3, fused_modconv="inference_only", inplace_rgb: bool = True):
        super().__init__()
        if cfg.module not in SR_MODULES:
            raise ValueError(f"unknown super-resolution module {cfg.module!r}; "
                             f"known: {', '.join(SR_MODULES)}")
        variant = SR_MODULES[cfg.module]
        widths = list(cfg.channels) if cfg.channels else list(variant["channels"])
        first_up = variant["first_up"]
        self.input_resolution = img_resolution // (4 if first_up else 2)
        self.antialias = cfg.antialias and variant["antialias"]
        self.noise_mode = cfg.noise_mode
        # inplace_rgb reproduces an official quirk: when no resize is needed, block0 adds its
        # ToRGB output into the caller's rgb tensor, so the image_raw the official generator
        # returns (and D sees) is changed. Imported models keep it; clean models do not.
        self.inplace_rgb = inplace_rgb
        use_fp16 = cfg.num_fp16_res > 0
        clamp = SR_CONV_CLAMP if use_fp16 else None
        # Unused by the forward pass; kept where the official class has it, so official state
        # dicts load one-to-one.
        filter_buffer = variant["filter_buffer"] if cfg.filter_buffer is None else cfg.filter_buffer
        if filter_buffer:
            self.register_buffer("resample_filter", ops.make_filter(FILTER_TAPS))
        block0_res = self.input_resolution * (2 if first_up else 1)
        self.block0 = SynthesisBlock(in_channels, widths[0], cfg.w_dim, block0_res, img_channels,
                                     up=first_up, use_fp16=use_fp16, conv_clamp=clamp,
                                     fused_modconv=fused_modconv)
        self.block1 = SynthesisBlock(widths[0], widths[1], cfg.w_dim, img_resolution, img_channels,
                                     up=True, use_fp16=use_fp16, conv_clamp=clamp,
                                     fused_modconv=fused_modconv)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, force_fp32: bool = False,
                fused_modconv=None) -> torch.Tensor:
        """rgb [B,3,R,R], x [B,C,R,R], ws [B,num_ws,w_dim] (only ws[:, -1] is used)."""
        block_kwargs = dict(noise_mode=self.noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv)
        ws = ws[:, -1:].repeat(1, 3, 1)
        if x.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, rgb = self.block0(x, rgb, ws, inplace_img=self.inplace_rgb, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb
