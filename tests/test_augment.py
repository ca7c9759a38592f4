"""ADA-style augmentation: identity at p = 0, exact pixel blitting, colour invariants, adaptive p."""
from __future__ import annotations

import pytest
import torch

from training.augment import SPECS, AdaController, AugmentPipe


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=8, c=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def test_p_zero_is_the_identity():
    x = _images(c=6)
    for spec in SPECS:
        pipe = AugmentPipe.from_spec(spec, p=0.0)
        assert torch.equal(pipe(x), x), spec


def test_xflip_flips_whole_samples_about_half_the_time():
    x = _images(n=400, c=6, size=8)
    torch.manual_seed(0)
    y = AugmentPipe(xflip=1, p=1.0)(x)
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(len(x))])
    same = torch.tensor([torch.equal(y[i], x[i]) for i in range(len(x))])
    assert bool((flipped | same).all())              # exact, and image + raw halves flip together
    assert 0.4 < flipped.float().mean() < 0.6        # official: flip chosen uniformly once active


def test_rotate90_and_integer_translation_are_exact():
    x = _images(n=64, size=8)
    torch.manual_seed(1)
    y = AugmentPipe(rotate90=1, p=1.0)(x)
    for i in range(len(x)):
        assert any(torch.equal(y[i], torch.rot90(x[i], k, dims=(-2, -1))) for k in range(4))
    # Integer translation with reflect padding: every output pixel is an input pixel of the same
    # sample, and the interior is a shifted copy.
    x = _images(n=32, size=16)
    torch.manual_seed(2)
    y = AugmentPipe(xint=1, xint_max=0.125, p=1.0)(x)
    moved = 0
    for i in range(len(x)):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.roll(x[i], shifts=(dy, dx), dims=(-2, -1))
                if torch.equal(y[i][:, 2:-2, 2:-2], shifted[:, 2:-2, 2:-2]):
                    found = True
                    moved += (dx, dy) != (0, 0)
        assert found
    assert moved > len(x) // 2


def test_colour_transforms_keep_what_they_should():
    x = _images(n=16)
    torch.manual_seed(3)
    # Hue rotation and saturation act around the luma axis: the channel mean is unchanged.
    for kwargs in (dict(hue=1), dict(saturation=1)):
        y = AugmentPipe(**kwargs, p=1.0)(x)
        assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)
        assert not torch.allclose(y, x)
    # Brightness adds one offset per sample to every pixel.
    y = AugmentPipe(brightness=1, p=1.0)(x)
    offset = (y - x).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-6)
    # Luma flip is an involution: applied twice with the same draws it returns the input.
    pipe = AugmentPipe(lumaflip=1, p=1.0)
    torch.manual_seed(4)
    once = pipe(x)
    torch.manual_seed(4)
    twice = pipe(once)
    assert torch.allclose(twice, x, atol=1e-5)
    # 6 channels (image + raw): the same colour matrix on both halves.
    x6 = torch.cat([x, x], dim=1)
    y6 = AugmentPipe(hue=1, saturation=1, contrast=1, p=1.0)(x6)
    assert torch.allclose(y6[:, :3], y6[:, 3:], atol=1e-6)


def test_geometric_ops_keep_shape_and_range_and_double_backward():
    x = _images(n=4, c=6, size=16).requires_grad_(True)
    pipe = AugmentPipe.from_spec("bgc", p=1.0)
    torch.manual_seed(5)
    y = pipe(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    w = torch.randn(6, 16, 16, requires_grad=True)
    logits = (torch.tanh(y) * w).sum([1, 2, 3])
    (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)   # R1 through the pipe
    g.square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_ada_controller_steps_and_clamps():
    pipe = AugmentPipe.from_spec("bgc", p=0.0)
    ada = AdaController(target=0.6, interval=4, ada_kimg=500)
    ada.accumulate(sign_sum=32, count=32)               # D is sure about every real: overfitting
    assert ada.adjust(pipe, batch_size=32) == 1.0
    assert abs(float(pipe.p) - 32 * 4 / 500_000) < 1e-9
    ada.accumulate(-32, 32)
    ada.adjust(pipe, 32)
    ada.accumulate(-32, 32)
    ada.adjust(pipe, 32)
    assert float(pipe.p) == 0.0                          # clamped at 0
    assert ada.adjust(pipe, 32) is None                 # nothing accumulated: no change


def test_ada_p_converges_towards_the_target():
    """A simulated D whose E[sign(D(real))] falls as p grows: p settles where r_t = 0.6."""
    pipe = AugmentPipe.from_spec("bgc", p=0.0)
    ada = AdaController(target=0.6, interval=4, ada_kimg=2)
    history = []
    for _ in range(400):
        rt = 1.0 - 1.2 * float(pipe.p)                  # = 0.6 at p = 1/3
        ada.accumulate(rt * 64, 64)
        ada.adjust(pipe, batch_size=16)
        history.append(float(pipe.p))
    tail = torch.tensor(history[-100:])
    assert abs(float(tail.mean()) - 1 / 3) < 0.05
    assert float(tail.max() - tail.min()) <= 2 * 16 * 4 / 2000 + 1e-9


def test_state_round_trip():
    ada = AdaController()
    ada.accumulate(3, 8)
    other = AdaController()
    other.load_state_dict(ada.state_dict())
    assert other.sign_sum == 3 and other.sign_count == 8
