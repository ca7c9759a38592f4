"""The pure-PyTorch StyleGAN2 ops against direct, loop-based definitions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import ops
from model.layers import MinibatchStdLayer


def naive_upfirdn(x, f, up, down, pad):
    """Direct definition on numpy: zero-insert, pad, true convolution, decimate."""
    x = x.numpy().astype(np.float64)
    f = f.numpy().astype(np.float64)
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    left, right, top, bottom = pad
    u = np.pad(u, ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))))
    u = u[:, :, max(-top, 0):u.shape[2] - max(-bottom, 0), max(-left, 0):u.shape[3] - max(-right, 0)]
    kh, kw = f.shape
    oh, ow = u.shape[2] - kh + 1, u.shape[3] - kw + 1
    out = np.zeros((b, c, oh, ow))
    fflip = f[::-1, ::-1]
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (u[:, :, i:i + kh, j:j + kw] * fflip).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (1, 1, (1, 2, 0, 3)),
                                         (1, 1, (2, 2, 2, 2)), (2, 1, (0, 0, 0, 0)), (2, 1, (5, 4, 6, 3)),
                                         (2, 1, (-1, 0, 1, -2)), (2, 2, (1, 2, 2, 1)), (4, 1, (3, 2, 2, 3))])
def test_upfirdn2d_matches_direct_definition(up, down, pad):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5)
    f = torch.tensor([[1.0, 2.0, 0.5, 0.1]]).T @ torch.tensor([[0.3, 1.0, 2.0, 1.0]])  # asymmetric
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=pad)
    np.testing.assert_allclose(got.numpy(), naive_upfirdn(x, f, up, down, pad), atol=1e-5)
    rect = f[:3]                                                                 # a 3 x 4 filter
    got = ops.upfirdn2d(x, rect, up=up, down=down, padding=pad, gain=2.0)
    np.testing.assert_allclose(got.numpy(), 2 * naive_upfirdn(x, rect, up, down, pad), atol=1e-5)


def test_resampling_keeps_constants():
    f = ops.make_filter()
    x = torch.full((1, 2, 8, 8), 3.0)
    assert torch.allclose(ops.upsample2d(x, f)[:, :, 2:-2, 2:-2], torch.tensor(3.0))
    assert torch.allclose(ops.downsample2d(x, f)[:, :, 1:-1, 1:-1], torch.tensor(3.0))


def test_up_conv_matches_transposed_definition():
    torch.manual_seed(1)
    x, w = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3)
    f = ops.make_filter()
    got = ops.conv2d_resample(x, w, f, up=2, padding=1)
    assert got.shape == (2, 6, 10, 10)
    # Same thing built from upfirdn (zero insertion) and a plain correlation with the flipped
    # kernel: conv_transpose(x, w) == correlate(zero_insert(x), flip(w)) with full padding.
    z = ops.upfirdn2d(x, torch.ones(1, 1), up=2, padding=[2, 2, 2, 2])[:, :, :-1, :-1]
    y = F.conv2d(z, w.flip([2, 3]))
    expected = ops.upfirdn2d(y, f, padding=[1, 1, 1, 1], gain=4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_down_conv_is_filter_then_strided_conv():
    torch.manual_seed(2)
    x, w = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3)
    f = ops.make_filter()
    got = ops.conv2d_resample(x, w, f, down=2, padding=1)
    expected = F.conv2d(ops.upfirdn2d(x, f, padding=[2, 2, 2, 2]), w, stride=2)
    torch.testing.assert_close(got, expected)
    assert got.shape == (2, 5, 4, 4)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_unfused_modulated_conv_agree(up, demodulate):
    torch.manual_seed(3)
    x, w = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3)
    styles = torch.randn(3, 4)
    noise = torch.randn(1, 1, 6 * up, 6 * up)
    f = ops.make_filter()
    a = ops.modulated_conv2d(x, w, styles, noise=noise, up=up, padding=1, resample_filter=f,
                             demodulate=demodulate, fused=True)
    b = ops.modulated_conv2d(x, w, styles, noise=noise, up=up, padding=1, resample_filter=f,
                             demodulate=demodulate, fused=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Per-sample reference: modulate, demodulate and convolve each sample separately.
    for i in range(3):
        wi = w * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            wi = wi / (wi.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        yi = ops.conv2d_resample(x[i:i + 1], wi, f, up=up, padding=1) + noise
        torch.testing.assert_close(a[i:i + 1], yi, atol=1e-5, rtol=1e-5)


def test_bias_act_gain_and_clamp():
    x = torch.tensor([[-2.0, 0.5, 10.0]])
    out = ops.bias_act(x, torch.tensor([1.0, 0.0, 0.0]), act="lrelu", clamp=5.0)
    expected = torch.tensor([[-1.0 * 0.2 * 2 ** 0.5, 0.5 * 2 ** 0.5, 5.0]])
    torch.testing.assert_close(out, expected)


def test_minibatch_std_groups_are_strided():
    torch.manual_seed(4)
    x = torch.randn(4, 6, 3, 3)
    out = MinibatchStdLayer(group_size=2, num_channels=1)(x)
    assert out.shape == (4, 7, 3, 3)
    # Groups pair sample i with sample i + 2.
    for i in range(2):
        pair = torch.stack([x[i], x[i + 2]])
        std = (pair.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 6], torch.full((3, 3), std.item()))
        torch.testing.assert_close(out[i + 2, 6], torch.full((3, 3), std.item()))


def test_gaussian_blur_matches_a_direct_2d_convolution():
    torch.manual_seed(5)
    x = torch.randn(1, 2, 12, 12)
    sigma = 1.3
    size = 3                                    # floor(3 * 1.3)
    i = torch.arange(-size, size + 1, dtype=torch.float32)
    taps = torch.exp2(-(i / sigma) ** 2)
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    expected = F.conv2d(F.pad(x, [size] * 4), kernel.expand(2, 1, -1, -1), groups=2)
    torch.testing.assert_close(ops.gaussian_blur(x, sigma), expected, atol=1e-5, rtol=1e-5)
    assert ops.gaussian_blur(x, 0.2) is x
