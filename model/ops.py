"""Pure-PyTorch versions of the StyleGAN2 primitives EG3D is built from.

No compiled extension: these run on any device. They follow the maths of the official custom
ops (upfirdn2d, bias_act, conv2d_resample, modulated_conv2d) so that official weights reproduce
the official outputs to float rounding.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2

# Activation name -> (function, default gain). The gain keeps activations at unit variance.
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, SQRT2),
    "lrelu": (lambda x: F.leaky_relu(x, LRELU_SLOPE), SQRT2),
    "softplus": (F.softplus, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
}


def activation_gain(name: str) -> float:
    return ACTIVATIONS[name][1]


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, act: str = "linear",
             gain: Optional[float] = None, clamp: Optional[float] = None) -> torch.Tensor:
    """x [B, C, ...] + bias [C], activation, times gain, then clamp to [-clamp, clamp]."""
    fn, default_gain = ACTIVATIONS[act]
    gain = default_gain if gain is None else gain
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    x = fn(x)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def make_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable low-pass FIR taps -> normalised 2-D filter [k, k] (sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the 2-D FIR filter f, then decimate.

    x: [B, C, H, W]; f: [kh, kw]; padding: (left, right, top, bottom), negative values crop.
    Upsampling runs as one transposed depthwise convolution, which never multiplies the inserted
    zeros (the same sums; 2.6 ms against 8-22 ms for insert + pad + convolve on tiny128's
    96 x 128² skip image); its output is then cropped or zero-padded to the padded frame.
    """
    batch, channels, height, width = x.shape
    left, right, top, bottom = padding
    kh, kw = f.shape
    if up > 1:
        # conv_transpose2d(x, f, stride=up)[n] = sum_i x[i] f[n - up * i] is the full true
        # convolution of the zero-inserted image (length (H-1)*up + k); the padded, valid output
        # is its rows k-1-top .. and columns k-1-left .. (zeros where that runs past it).
        weight = (f * gain).to(x.dtype)[None, None].expand(channels, 1, kh, kw)
        out_h, out_w = height * up + top + bottom - kh + 1, width * up + left + right - kw + 1
        start = (kh - 1 - top, kw - 1 - left)
        end = ((height - 1) * up + kh - start[0] - out_h, (width - 1) * up + kw - start[1] - out_w)
        extra = (start[0] - end[0], start[1] - end[1])
        if min(start) >= 0 and all(0 <= e < up for e in extra):
            # the crop as the convolution's own padding: a contiguous result, no copy
            x = F.conv_transpose2d(x, weight, stride=up, padding=start, output_padding=extra,
                                   groups=channels)
        else:
            y = F.conv_transpose2d(x, weight, stride=up, groups=channels)
            row, col = start
            grow = [max(-col, 0), max(col + out_w - y.shape[3], 0), max(-row, 0), max(row + out_h - y.shape[2], 0)]
            if any(grow):
                y = F.pad(y, grow)
            row, col = max(row, 0), max(col, 0)
            x = y[:, :, row:row + out_h, col:col + out_w].contiguous()
    else:
        # A true convolution flips the filter; our filters are symmetric but keep the maths honest.
        weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(channels, 1, kh, kw)
        if left == right == top == bottom >= 0:
            x = F.conv2d(x, weight, padding=left, groups=channels)
        else:
            x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
            x = x[:, :, max(-top, 0):x.shape[2] - max(-bottom, 0), max(-left, 0):x.shape[3] - max(-right, 0)]
            x = F.conv2d(x, weight, groups=channels)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """2x (or up-x) upsampling with the FIR filter, keeping the DC gain."""
    k = f.shape[-1]
    pad = [(k + up - 1) // 2, (k - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pad * 2, gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    k = f.shape[-1]
    pad = [(k - down + 1) // 2, (k - down) // 2]
    return upfirdn2d(x, f, down=down, padding=pad * 2)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None,
                    up: int = 1, down: int = 1, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """Cross-correlation with w [O, I/groups, k, k] plus FIR-filtered 2x up- or downsampling.

    The padding is relative to the upsampled image, applied once. Upsampling uses a strided
    transposed convolution followed by the filter; downsampling filters, then strides.
    """
    out_channels, in_per_group, kh, kw = w.shape
    pad0 = pad1 = padding
    fk = f.shape[-1] if f is not None else 1
    if up > 1:
        pad0 += (fk + up - 1) // 2
        pad1 += (fk - up) // 2
    if down > 1:
        pad0 += (fk - down + 1) // 2
        pad1 += (fk - down) // 2

    if up > 1 and kw == 1 and kh == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[pad0, pad1] * 2, gain=up * up)
    if down > 1 and kw == 1 and kh == 1:
        x = upfirdn2d(x, f, down=down, padding=[pad0, pad1] * 2)
        return F.conv2d(x, w, groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, padding=[pad0, pad1] * 2)
        return F.conv2d(x, w, stride=down, groups=groups)
    if up > 1:
        # Transposed convolution wants [I, O/groups, k, k] per group; the official layer applies
        # the kernel unflipped here (a transposed correlation), which we reproduce.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        pad0 -= kw - 1
        pad1 -= kw - up
        inner = max(min(-pad0, -pad1), 0)
        x = F.conv_transpose2d(x, wt, stride=up, padding=inner, groups=groups)
        return upfirdn2d(x, f, padding=[pad0 + inner, pad1 + inner] * 2, gain=up * up)
    return F.conv2d(x, w, padding=padding, groups=groups)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: Optional[torch.Tensor] = None, up: int = 1, padding: int = 0,
                     resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                     fused: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x [B, I, H, W], weight [O, I, k, k], styles [B, I]. Each sample's kernel is scaled by its
    styles and (if demodulate) renormalised per output channel. `fused` runs one grouped
    convolution over the batch; otherwise the input is scaled instead (cheaper for training).
    The two paths agree to float rounding.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise to keep fp16 in range; demodulation removes the scale again.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) /
                           weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)          # [B, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()               # [B, O]

    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    if demodulate:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [B, C, H, W] with the discriminator-warm-up kernel of EG3D/StyleGAN3.

    Taps exp2(-(i / sigma)^2) for |i| <= floor(3 sigma), normalised, applied separably with zero
    padding so the size is kept. sigma < 1/3 leaves x unchanged.
    """
    size = math.floor(sigma * 3)
    if size <= 0:
        return x
    taps = torch.arange(-size, size + 1, device=x.device, dtype=torch.float32).div(sigma).square().neg().exp2()
    taps = (taps / taps.sum()).to(x.dtype)
    channels = x.shape[1]
    x = F.conv2d(F.pad(x, [size, size, 0, 0]), taps.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1),
                 groups=channels)
    return F.conv2d(F.pad(x, [0, 0, size, size]), taps.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1),
                    groups=channels)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
