"""StyleGAN2 synthesis backbone producing the tri-plane features."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import BackboneConfig, GeneratorConfig
from .layers import SynthesisBlock
from .mapping import MappingNetwork


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // res, channel_max)


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, C, res, res] through 'skip' blocks from 4x4 upwards."""

    def __init__(self, w_dim: int, cfg: BackboneConfig):
        super().__init__()
        res_log2 = cfg.resolution.bit_length() - 1
        if cfg.resolution < 4 or 2 ** res_log2 != cfg.resolution:
            raise ValueError(f"backbone resolution must be a power of two >= 4, got {cfg.resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, cfg.resolution, cfg.out_channels
        self.block_resolutions = [2 ** i for i in range(2, res_log2 + 1)]
        fp16_resolution = max(2 ** (res_log2 + 1 - cfg.num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, cfg.channel_base, cfg.channel_max) if res > 4 else 0
            out_ch = channels_at(res, cfg.channel_base, cfg.channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, cfg.out_channels,
                                   use_fp16=res >= fp16_resolution, conv_clamp=cfg.conv_clamp,
                                   fused_modconv=cfg.fused_modconv)
            setattr(self, f"b{res}", block)
            # Consecutive blocks share one w: a block's ToRGB w is the next block's conv0 w.
            self.num_ws += block.num_conv
        self.num_ws += 1    # the last block's ToRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv=None,
                force_fp32: bool = False, update_emas: bool = False) -> torch.Tensor:
        """update_emas is accepted for the official call signature; synthesis tracks no average."""
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_ws), noise_mode=noise_mode,
                           fused_modconv=fused_modconv, force_fp32=force_fp32)
            w_idx += block.num_conv
        return img


class Backbone(nn.Module):
    """Mapping + synthesis, stored under `backbone.` as in official checkpoints.

    Has the official StyleGAN2 generator's attributes (z_dim, c_dim, w_dim, img_resolution =
    plane resolution, img_channels = 3 * plane channels, num_ws) and call.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.backbone.resolution, cfg.backbone.out_channels
        self.synthesis = SynthesisNetwork(cfg.w_dim, cfg.backbone)
        self.num_ws = self.synthesis.num_ws
        m = cfg.mapping
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.synthesis.num_ws,
                                      num_layers=m.num_layers, embed_features=m.embed_features,
                                      layer_features=m.layer_features,
                                      lr_multiplier=m.lr_multiplier, w_avg_beta=m.w_avg_beta)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                **synthesis_kwargs) -> torch.Tensor:
        """z [B, z_dim], c [B, c_dim] (used as given, no c_scale) -> planes [B, 3*C, H, W]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
