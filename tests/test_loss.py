"""Unit tests of the EG3D loss pieces: R1, density regularisation, GPC swapping, schedules."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import model
from model import presets
from training import loss as L


pytestmark = pytest.mark.usefixtures("one_thread")


class ToyD(torch.nn.Module):
    """A small non-linear dual discriminator: logits from both images."""

    def __init__(self, size=8, raw=4):
        super().__init__()
        torch.manual_seed(0)
        self.wa = torch.nn.Parameter(torch.randn(3, size, size) * 0.1)
        self.wb = torch.nn.Parameter(torch.randn(3, raw, raw) * 0.1)
        self.v = torch.nn.Parameter(torch.tensor(0.7))

    def forward(self, img, c):
        a = (img["image"] * self.wa).sum(dim=[1, 2, 3])
        b = (img["image_raw"].square() * self.wb).sum(dim=[1, 2, 3])
        return torch.tanh(self.v * (a + b) + c[:, :1].sum(1)).unsqueeze(1)


def test_r1_penalty_matches_per_sample_autograd():
    D = ToyD()
    torch.manual_seed(1)
    image = torch.randn(5, 3, 8, 8, requires_grad=True)
    raw = torch.randn(5, 3, 4, 4, requires_grad=True)
    c = torch.randn(5, 25)
    logits = D({"image": image, "image_raw": raw}, c)
    penalty = L.r1_penalty(logits, [image, raw])
    for i in range(5):
        gi, gr = torch.autograd.grad(logits[i, 0], [image, raw], retain_graph=True)
        direct = gi[i].square().sum() + gr[i].square().sum()
        assert torch.allclose(penalty[i], direct, rtol=1e-5, atol=1e-7)
        assert gi[:i].abs().max() == 0 if i else True     # samples are independent


def test_r1_weight_gradient_closed_form():
    """Linear D: grad_x = w, penalty = |wa|^2 + |wb|^2, d/dw (gamma/2 penalty) = gamma w."""
    wa = torch.randn(3, 8, 8, requires_grad=True)
    wb = torch.randn(3, 4, 4, requires_grad=True)
    image = torch.randn(4, 3, 8, 8, requires_grad=True)
    raw = torch.randn(4, 3, 4, 4, requires_grad=True)
    logits = (image * wa).sum([1, 2, 3]) + (raw * wb).sum([1, 2, 3])
    penalty = L.r1_penalty(logits, [image, raw])
    expected = wa.square().sum() + wb.square().sum()
    assert torch.allclose(penalty, expected.detach().expand(4))
    gamma = 3.0
    (penalty * gamma / 2).mean().backward()
    assert torch.allclose(wa.grad, gamma * wa.detach(), rtol=1e-5)
    assert torch.allclose(wb.grad, gamma * wb.detach(), rtol=1e-5)


def test_r1_penalty_undoes_a_loss_scale():
    D = ToyD()
    image = torch.randn(3, 3, 8, 8, requires_grad=True)
    raw = torch.randn(3, 3, 4, 4, requires_grad=True)
    logits = D({"image": image, "image_raw": raw}, torch.zeros(3, 25))
    plain = L.r1_penalty(logits, [image, raw])
    scaled = L.r1_penalty(logits, [image, raw], scale=1024.0)
    assert torch.allclose(plain, scaled, rtol=1e-5)


class FakeScaler:
    def __init__(self, scale):
        self._s = scale

    def scale(self, t):
        return t * self._s

    def get_scale(self):
        return self._s

    def is_enabled(self):
        return True


def _tiny_nets():
    torch.manual_seed(0)
    gcfg = presets.generator_config("tiny")
    gcfg.img_resolution = 32
    gcfg.neural_rendering_resolution = 16
    dcfg = presets.discriminator_config("tiny")
    dcfg.img_resolution = 32
    G = model.build_generator(gcfg).train().requires_grad_(False)
    D = model.build_discriminator(dcfg).train().requires_grad_(False)
    return G, D


def test_dreg_phase_gradient_equals_direct_r1_on_both_inputs():
    """Dreg backpropagates gain * gamma/2 * mean(|dD/dimage|^2 + |dD/dimage_raw|^2), with and without a scaler."""
    G, D = _tiny_nets()
    cfg = L.LossConfig(r1_gamma=2.5, neural_rendering_resolution_initial=16)
    loss = L.EG3DLoss(G, D, cfg)
    torch.manual_seed(3)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    real_c = torch.randn(4, 25)
    z, c = torch.randn(4, G.z_dim), torch.randn(4, 25)
    D.requires_grad_(True)
    grads = lambda: [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in D.parameters()]  # noqa: E731
    loss.accumulate_gradients("Dreg", real, real_c, z, c, gain=16, cur_nimg=0)
    got = grads()
    D.zero_grad(set_to_none=True)

    image = real.clone().requires_grad_(True)
    raw = F.interpolate(real, size=(16, 16), mode="bilinear", align_corners=False, antialias=True).requires_grad_(True)
    logits = D({"image": image, "image_raw": raw}, real_c)
    gi, gr = torch.autograd.grad(logits.sum(), [image, raw], create_graph=True)
    penalty = gi.square().sum([1, 2, 3]) + gr.square().sum([1, 2, 3])
    (penalty * cfg.r1_gamma / 2).mean().mul(16).backward()
    want = grads()
    assert sum(float(w.abs().sum()) for w in want) > 0
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)

    D.zero_grad(set_to_none=True)
    loss.accumulate_gradients("Dreg", real, real_c, z, c, gain=16, cur_nimg=0, scaler=FakeScaler(256.0))
    for a, b in zip(grads(), want):
        assert torch.allclose(a / 256.0, b, rtol=1e-4, atol=1e-7)


def test_gmain_and_dmain_losses_are_the_logistic_loss():
    G, D = _tiny_nets()
    loss = L.EG3DLoss(G, D, L.LossConfig(r1_gamma=1, neural_rendering_resolution_initial=16))
    seen = []
    orig = loss.run_D

    def spy(img, c, sigma, update_emas=False):
        out = orig(img, c, sigma, update_emas)
        seen.append(out.detach())
        return out

    loss.run_D = spy
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    c = torch.randn(4, 25)
    z = torch.randn(4, G.z_dim)
    G.requires_grad_(True)
    out = loss.accumulate_gradients("Gmain", real, c, z, c, gain=1, cur_nimg=0)
    assert torch.allclose(out["Loss/G/loss"], F.softplus(-seen[-1]).mean())
    G.requires_grad_(False)
    G.zero_grad(set_to_none=True)
    D.requires_grad_(True)
    out = loss.accumulate_gradients("Dmain", real, c, z, c, gain=1, cur_nimg=0)
    fake_logits, real_logits = seen[-2], seen[-1]
    assert torch.allclose(out["Loss/D/loss_fake"], F.softplus(fake_logits).mean())
    assert torch.allclose(out["Loss/D/loss_real"], F.softplus(-real_logits).mean())
    assert all(p.grad is None for p in G.parameters())          # D phases never train G


class FieldG:
    """Stands in for G.sample_density with an analytic density."""

    def sample_density(self, planes, points):
        sigma = (points * planes).sum(-1, keepdim=True).sin() * 5
        return {"sigma": sigma, "rgb": torch.zeros(*points.shape[:2], 32)}


def test_density_l1_equals_direct_computation():
    torch.manual_seed(0)
    planes = torch.randn(2, 1, 3)
    points = L.density_points(2, 0.004, "cpu", num_points=500)
    assert points.shape == (2, 1000, 3)
    x, xp = points[:, :500], points[:, 500:]
    assert x.abs().max() <= L.DENSITY_REG_EXTENT
    assert abs(float((xp - x).std()) - 0.004) < 0.0005
    f = lambda p: ((p * planes).sum(-1, keepdim=True).sin() * 5)  # noqa: E731
    want = (f(x) - f(xp)).abs().mean()
    assert torch.allclose(L.density_l1(FieldG(), planes, points), want)


def test_greg_phase_backpropagates_density_reg_only():
    G, D = _tiny_nets()
    cfg = L.LossConfig(density_reg=0.25, neural_rendering_resolution_initial=16)
    loss = L.EG3DLoss(G, D, cfg)
    G.requires_grad_(True)
    out = loss.accumulate_gradients("Greg", torch.zeros(4, 3, 32, 32), torch.randn(4, 25), torch.randn(4, G.z_dim),
                                    torch.randn(4, 25), gain=4, cur_nimg=0)
    assert set(out) == {"Loss/G/density_reg"} and torch.isfinite(out["Loss/G/density_reg"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.decoder.parameters())
    assert all(p.grad is None for p in G.superresolution.parameters())   # no image is rendered
    # density_reg = 0 turns the phase off, as official.
    G.zero_grad(set_to_none=True)
    off = L.EG3DLoss(G, D, L.LossConfig(density_reg=0.0))
    assert off.accumulate_gradients("Greg", torch.zeros(4, 3, 32, 32), torch.randn(4, 25),
                                    torch.randn(4, G.z_dim), torch.randn(4, 25), gain=4, cur_nimg=0) == {}


def _opaque_tiny_nets():
    """_tiny_nets with the decoder's density raised everywhere, so renders are opaque (alpha > 0.5)."""
    G, D = _tiny_nets()
    out = G.decoder.net[2]
    with torch.no_grad():
        out.bias[0] += 3 / out.bias_gain
    return G, D


def test_view_consistency_teaches_the_two_views_to_agree():
    """Adam on the super-resolution alone, on the view-consistency loss of fixed planes: the
    reprojection error of the two views falls (0.0153 -> 0.0025 in 20 steps, measured)."""
    G, _ = _opaque_tiny_nets()
    G.superresolution.requires_grad_(True)
    opt = torch.optim.Adam(G.superresolution.parameters(), lr=1e-2)
    torch.manual_seed(0)
    c = model.camera.orbit_label([1.4, 1.7, 1.5, 1.6], [1.5, 1.6, 1.55, 1.5], 2.7)
    ws = G.mapping(torch.randn(4, G.z_dim), c)
    planes = G.planes(ws)
    losses = []
    for _ in range(21):
        torch.manual_seed(1)                    # the same ray jitter every step
        vc = L.view_consistency(G, planes, ws, c, 0.1, 16)
        losses.append(float(vc.detach()))
        opt.zero_grad()
        vc.backward()
        opt.step()
    assert losses[0] > 0.005
    assert losses[-1] < losses[0] / 3


def test_greg_phase_with_view_consistency_alone():
    G, D = _opaque_tiny_nets()
    cfg = L.LossConfig(density_reg=0.0, view_consistency=2.0, neural_rendering_resolution_initial=16)
    assert cfg.regularizes_G and not L.LossConfig(density_reg=0.0).regularizes_G
    loss = L.EG3DLoss(G, D, cfg)
    G.requires_grad_(True)
    c = model.camera.orbit_label([1.4, 1.7, 1.5, 1.6], [1.5, 1.6, 1.55, 1.5], 2.7)
    out = loss.accumulate_gradients("Greg", torch.zeros(4, 3, 32, 32), c, torch.randn(4, G.z_dim), c,
                                    gain=4, cur_nimg=0)
    assert set(out) == {"Loss/G/view_consistency"} and float(out["Loss/G/view_consistency"]) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.superresolution.parameters())


def test_gpc_swap_probability():
    c = torch.arange(20000, dtype=torch.float32)[:, None].repeat(1, 25)
    torch.manual_seed(0)
    for p in (0.0, 0.3, 0.8, 1.0):
        cond = L.gpc_conditioning(c, p)
        swapped = (cond[:, 0] == torch.roll(c, 1, 0)[:, 0]).float().mean().item()
        assert abs(swapped - p) < 0.015, (p, swapped)
        assert torch.equal(cond[:, 0], cond[:, 24])                      # whole labels are swapped
    assert torch.equal(L.gpc_conditioning(c, None), torch.zeros_like(c))   # GPC off: zeros
    batch = L.gpc_conditioning(c[:8], 0.5, per_sample=False)              # one decision per batch
    assert torch.equal(batch, c[:8]) or torch.equal(batch, torch.roll(c[:8], 1, 0))
    # The swap probability fades from 1 to gpc_reg_prob over gpc_reg_fade_kimg.
    assert L.swap_probability(0, 0.5, 1000) == 1.0
    assert math.isclose(L.swap_probability(500_000, 0.5, 1000), 0.75)
    assert L.swap_probability(2_000_000, 0.5, 1000) == 0.5
    assert L.swap_probability(0, 0.5, 0) == 0.5
    assert L.swap_probability(123, None, 1000) is None


def test_blur_schedule_and_where_it_applies():
    assert L.blur_sigma(0, 10, 200) == 10
    assert math.isclose(L.blur_sigma(100_000, 10, 200), 5)
    assert L.blur_sigma(200_000, 10, 200) == 0 and L.blur_sigma(10 ** 7, 10, 200) == 0
    assert L.blur_sigma(0, 10, 0) == 0

    G, D = _tiny_nets()
    cfg = L.LossConfig(r1_gamma=1, blur_init_sigma=2.0, blur_fade_kimg=1.0, neural_rendering_resolution_initial=16)
    loss = L.EG3DLoss(G, D, cfg)
    inputs = []
    weight = torch.nn.Parameter(torch.ones(()))

    def fake_d(img, c, **kwargs):
        inputs.append({k: v.detach() for k, v in img.items()})
        return img["image"].mean([1, 2, 3])[:, None] * weight

    D.forward = fake_d
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    c = torch.randn(4, 25)
    loss.accumulate_gradients("Dmain", real, c, torch.randn(4, G.z_dim), c, gain=1, cur_nimg=500)
    sigma = L.blur_sigma(500, 2.0, 1.0)
    from model import ops
    raw = F.interpolate(real, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    fake_in, real_in = inputs
    assert torch.allclose(real_in["image"], ops.gaussian_blur(real, sigma), atol=1e-6)
    assert torch.allclose(real_in["image_raw"], ops.gaussian_blur(raw, sigma), atol=1e-6)
    assert fake_in["image_raw"].shape[-1] == 16


def test_neural_rendering_resolution_schedule_and_lazy_reg():
    assert L.neural_rendering_resolution(0, 64, 128, 1000) == 64
    assert L.neural_rendering_resolution(500_000, 64, 128, 1000) == 96
    assert L.neural_rendering_resolution(5_000_000, 64, 128, 1000) == 128
    assert L.neural_rendering_resolution(10 ** 6, 64, None, 1000) == 64
    lr, betas = L.lazy_regularization(0.002, (0, 0.99), 16)
    assert math.isclose(lr, 0.002 * 16 / 17) and betas[0] == 0 and math.isclose(betas[1], 0.99 ** (16 / 17))
    assert L.lazy_regularization(0.0025, (0, 0.99), None) == (0.0025, (0, 0.99))


def test_style_mixing_changes_late_ws_only():
    G, D = _tiny_nets()
    loss = L.EG3DLoss(G, D, L.LossConfig(style_mixing_prob=1.0))
    z, c = torch.randn(2, G.z_dim), torch.zeros(2, 25)
    ws = G.mapping(z, c)
    torch.manual_seed(5)
    mixed = loss._mix(ws, z, c)
    same = (mixed == ws).all(dim=2).all(dim=0)
    assert same[0] and not same.all()                          # a cutoff in 1..num_ws-1
    k = int(same.float().argmin())
    assert same[:k].all() and not same[k:].any()


def test_bad_config_is_rejected():
    G, D = _tiny_nets()
    with pytest.raises(ValueError, match="gpc_reg_prob"):
        L.EG3DLoss(G, D, L.LossConfig(gpc_reg_prob=1.5))
    with pytest.raises(ValueError, match="reg_type"):
        L.EG3DLoss(G, D, L.LossConfig(reg_type="monotonic-fixed"))
