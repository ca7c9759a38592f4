"""The EG3D training objective.

- Non-saturating logistic GAN loss: G minimises softplus(-D(G(z))), D minimises
  softplus(D(G(z))) + softplus(-D(x)).
- Lazy R1 on real images (every `r1_interval` D steps, weighted by the interval): gamma / 2 times
  the squared gradient norm of D with respect to both halves of the dual input (image and raw
  image).
- Dual discrimination: D sees the final image and the raw neural render (upsampled inside D);
  the real "raw" image is the real image resized to the neural rendering resolution
  (antialiased bilinear).
- Discriminator blur: a blur of sigma = blur_init_sigma * max(1 - kimg / blur_fade_kimg, 0) on the
  final image of every D input (real and fake) and on the real raw image before D, as in the
  official code (the fake raw image is not blurred; this asymmetry is the official behaviour).
- Neural rendering resolution schedule: round(initial * (1 - a) + final * a), a = min(kimg / fade, 1).
- Generator pose conditioning: G's mapping sees the rendering camera, replaced per sample by
  another sample's camera (the batch rolled by one) with probability swap_prob, which fades from 1
  to gpc_reg_prob over gpc_reg_fade_kimg; with GPC off it sees zeros.
- Density regularisation (reg_type 'l1'): every density_reg_every G steps, the L1 difference of
  raw densities at 1000 random points per sample in [-1, 1]^3 and at the same points perturbed
  by N(0, density_reg_p_dist^2), times density_reg (and the lazy interval).
- Style mixing with probability style_mixing_prob (a second z for the ws after a random cutoff).
- Ours, off by default: view consistency. On the same lazy G steps, each sample's planes are
  rendered from its camera and from that camera orbited by +-view_consistency_yaw (alternating);
  the first final image is warped into the second through its rendered depth (the reprojection of
  the `mvc` metric, `training.metrics.reprojection_error`) and the mean colour error on the pixels
  both views see, times view_consistency (and the interval), is minimised. Depth and opacity are
  detached: the loss teaches colour (the super-resolution's detail above all), not geometry.

Every formula follows the official EG3D StyleGAN2Loss; deviations are listed in `DEVIATIONS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from model import ops

from .metrics import alternating, orbit_pair, reprojection_error

# Half-width of the cube sampled by the density regulariser, in world units. The official code
# samples [-1, 1]^3 whatever box_warp is; points outside the tri-plane box read zero features.
DENSITY_REG_EXTENT = 1.0
DENSITY_REG_POINTS = 1000

DEVIATIONS = (
    "gradients of the micro-batches of one step are averaged (the official code sums them), so "
    "--batch-gpu only trades memory for time",
    "style mixing inside the density regulariser works (the official code refers to undefined "
    "variables there and fails when both are enabled)",
)


@dataclass
class LossConfig:
    r1_gamma: float = 10.0
    style_mixing_prob: float = 0.0
    blur_init_sigma: float = 0.0                 # official train.py: 10 (0 when fine-tuning)
    blur_fade_kimg: float = 0.0                  # already scaled by batch / 32 (see options.py)
    gpc_reg_prob: Optional[float] = None         # None = no generator pose conditioning
    gpc_reg_fade_kimg: float = 1000.0
    neural_rendering_resolution_initial: int = 64
    neural_rendering_resolution_final: Optional[int] = None
    neural_rendering_resolution_fade_kimg: float = 1000.0
    dual_discrimination: bool = True
    filter_mode: str = "antialiased"             # resizing of real images to the raw resolution
    blur_raw_target: bool = True
    density_reg: float = 0.25
    density_reg_p_dist: float = 0.004
    reg_type: str = "l1"
    view_consistency: float = 0.0                # ours (0 = off, the official objective)
    view_consistency_yaw: float = 0.1            # radians between the two views

    @property
    def regularizes_G(self) -> bool:
        """Whether G has lazy regularisation steps (Greg) at all."""
        return self.density_reg > 0 or self.view_consistency > 0


# ---------------------------------------------------------------------------------- schedules
def blur_sigma(cur_nimg: float, blur_init_sigma: float, blur_fade_kimg: float) -> float:
    """Discriminator blur: blur_init_sigma fading linearly to 0 over blur_fade_kimg."""
    if blur_fade_kimg <= 0:
        return 0.0
    return max(1.0 - cur_nimg / (blur_fade_kimg * 1e3), 0.0) * blur_init_sigma


def swap_probability(cur_nimg: float, gpc_reg_prob: Optional[float], gpc_reg_fade_kimg: float) -> Optional[float]:
    """Probability of conditioning G on another sample's camera; None = GPC off."""
    if gpc_reg_prob is None:
        return None
    alpha = min(cur_nimg / (gpc_reg_fade_kimg * 1e3), 1.0) if gpc_reg_fade_kimg > 0 else 1.0
    return (1 - alpha) * 1.0 + alpha * gpc_reg_prob


def neural_rendering_resolution(cur_nimg: float, initial: int, final: Optional[int], fade_kimg: float) -> int:
    if final is None:
        return int(initial)
    alpha = min(cur_nimg / (fade_kimg * 1e3), 1.0) if fade_kimg > 0 else 1.0
    return int(np.rint(initial * (1 - alpha) + final * alpha))


def lazy_regularization(lr: float, betas, interval: Optional[int]):
    """Adam settings for a module regularised every `interval` steps (StyleGAN2's correction)."""
    if not interval:
        return lr, tuple(betas)
    ratio = interval / (interval + 1)
    return lr * ratio, tuple(b ** ratio for b in betas)


# ---------------------------------------------------------------------------------- pieces
def gpc_conditioning(c: torch.Tensor, swap_prob: Optional[float], per_sample: bool = True) -> torch.Tensor:
    """The camera label G's mapping sees: c, some rows replaced by the previous row's camera.

    per_sample=False draws one decision for the whole batch (the official density regulariser).
    """
    if swap_prob is None:
        return torch.zeros_like(c)
    swapped = torch.roll(c, 1, 0)
    shape = (c.shape[0], 1) if per_sample else ()
    return torch.where(torch.rand(shape, device=c.device) < swap_prob, swapped, c)


def resize_real_raw(real_img: torch.Tensor, size: int, filter_mode: str = "antialiased") -> torch.Tensor:
    """The real counterpart of the raw neural render: the real image resized to `size`."""
    if filter_mode == "antialiased":
        return F.interpolate(real_img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if filter_mode == "none":
        return F.interpolate(real_img, size=(size, size), mode="bilinear", align_corners=False)
    raise ValueError(f"filter_mode must be 'antialiased' or 'none', got {filter_mode!r}")


def r1_penalty(logits: torch.Tensor, inputs, scale: float = 1.0) -> torch.Tensor:
    """Per-sample squared gradient norm of sum(logits) w.r.t. each input, summed over inputs.

    scale: the GradScaler factor the graph is differentiated with (undone before squaring).
    """
    grads = torch.autograd.grad(outputs=[logits.sum() * scale], inputs=list(inputs), create_graph=True,
                                only_inputs=True)
    penalty = 0
    for g in grads:
        if scale != 1.0:
            g = g / scale
        penalty = penalty + g.square().sum(dim=[1, 2, 3])
    return penalty


def density_points(batch: int, p_dist: float, device, num_points: int = DENSITY_REG_POINTS,
                   extent: float = DENSITY_REG_EXTENT) -> torch.Tensor:
    """[B, 2N, 3]: N uniform points in [-extent, extent]^3 followed by their perturbed copies."""
    initial = (torch.rand(batch, num_points, 3, device=device) * 2 - 1) * extent
    perturbed = initial + torch.randn_like(initial) * p_dist
    return torch.cat([initial, perturbed], dim=1)


def view_consistency(G, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, yaw: float,
                     neural_rendering_resolution: int) -> torch.Tensor:
    """Mean reprojection error [] of the final images of two views of planes [B, 3, C, H, W]:
    cameras c [B, 25] and c orbited by +-yaw (alternating over the batch) about G's pivot; the
    first warped into the second through its own depth, which (with the opacities) is detached."""
    c0, c1 = orbit_pair(c, alternating(np.arange(len(c)), yaw).to(c.device), list(G.cfg.rendering.avg_camera_pivot))
    va, vb = (G.render(planes, ws, cam, neural_rendering_resolution=neural_rendering_resolution)
              for cam in (c0, c1))
    r = reprojection_error(va["image"], va["image_depth"].detach(), va["image_alpha"].detach(), c0,
                           vb["image"], vb["image_depth"].detach(), vb["image_alpha"].detach(), c1)
    return (r["error_sum"] / r["valid"].clamp_min(1)).mean().float()


def density_l1(G, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean |sigma(x) - sigma(x')| over point pairs (first half of `points` vs second half)."""
    sigma = G.sample_density(planes, points)["sigma"]
    half = sigma.shape[1] // 2
    return F.l1_loss(sigma[:, :half], sigma[:, half:])


# ---------------------------------------------------------------------------------- the loss
class EG3DLoss:
    """accumulate_gradients(phase, ...) for phases Gmain, Greg, Gboth, Dmain, Dreg, Dboth.

    stats: an object with report(name, tensor) (or None). scaler: a torch.amp.GradScaler-like
    object per phase (or None) that scales what is backpropagated.
    """

    def __init__(self, G, D, cfg: LossConfig, augment_pipe=None, stats=None):
        if cfg.gpc_reg_prob is not None and not 0 <= cfg.gpc_reg_prob <= 1:
            raise ValueError(f"gpc_reg_prob must be in [0, 1], got {cfg.gpc_reg_prob}")
        if cfg.reg_type != "l1":
            raise ValueError(f"reg_type {cfg.reg_type!r} is not supported (only 'l1', the official default)")
        self.G, self.D, self.cfg = G, D, cfg
        self.augment_pipe = augment_pipe
        self.stats = stats

    # -------------------------------------------------------------- schedules at cur_nimg
    def schedule(self, cur_nimg: float) -> Dict[str, float]:
        c = self.cfg
        return dict(
            blur_sigma=blur_sigma(cur_nimg, c.blur_init_sigma, c.blur_fade_kimg),
            swap_prob=swap_probability(cur_nimg, c.gpc_reg_prob, c.gpc_reg_fade_kimg),
            neural_rendering_resolution=neural_rendering_resolution(
                cur_nimg, c.neural_rendering_resolution_initial, c.neural_rendering_resolution_final,
                c.neural_rendering_resolution_fade_kimg))

    def _report(self, name: str, value: torch.Tensor) -> None:
        if self.stats is not None:
            self.stats.report(name, value)

    # -------------------------------------------------------------- G and D
    def _mix(self, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.cfg.style_mixing_prob <= 0:
            return ws
        num_ws = ws.shape[1]
        cutoff = int(torch.randint(1, num_ws, ())) if num_ws > 1 else num_ws
        if float(torch.rand(())) >= self.cfg.style_mixing_prob:
            cutoff = num_ws
        if cutoff >= num_ws:
            return ws
        mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
        return torch.cat([ws[:, :cutoff], mixed[:, cutoff:]], dim=1)

    def run_G(self, z, c, swap_prob, nrr: int, update_emas: bool = False):
        c_cond = gpc_conditioning(c, swap_prob)
        ws = self.G.mapping(z, c_cond, update_emas=update_emas)
        ws = self._mix(ws, z, c)
        return self.G.synthesis(ws, c, neural_rendering_resolution=nrr), ws

    def run_D(self, img: Dict[str, torch.Tensor], c, sigma: float, update_emas: bool = False):
        image, image_raw = img["image"], img["image_raw"]
        if sigma > 0:
            image = ops.gaussian_blur(image, sigma)
        if self.augment_pipe is not None:
            size = image.shape[-1]
            up = F.interpolate(image_raw, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            pair = self.augment_pipe(torch.cat([image, up], dim=1))
            channels = image.shape[1]
            image = pair[:, :channels]
            image_raw = F.interpolate(pair[:, channels:], size=tuple(image_raw.shape[-2:]), mode="bilinear",
                                      align_corners=False, antialias=True)
        return self.D({"image": image, "image_raw": image_raw}, c)

    # -------------------------------------------------------------- phases
    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor,
                             gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float, cur_nimg: float,
                             scaler=None) -> Dict[str, torch.Tensor]:
        """Backpropagate one micro-batch of `phase`; returns the detached losses (for NaN checks)."""
        if phase not in ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth"):
            raise ValueError(f"unknown phase {phase!r}")
        cfg = self.cfg
        if not cfg.regularizes_G:
            phase = {"Greg": "none", "Gboth": "Gmain"}.get(phase, phase)
        if cfg.r1_gamma == 0:
            phase = {"Dreg": "none", "Dboth": "Dmain"}.get(phase, phase)
        sched = self.schedule(cur_nimg)
        sigma, swap_prob, nrr = sched["blur_sigma"], sched["swap_prob"], sched["neural_rendering_resolution"]
        scale = (lambda t: scaler.scale(t)) if scaler is not None else (lambda t: t)
        out: Dict[str, torch.Tensor] = {}

        real_raw = resize_real_raw(real_img, nrr, cfg.filter_mode)
        if cfg.blur_raw_target and sigma > 0:
            real_raw = ops.gaussian_blur(real_raw, sigma)

        if phase in ("Gmain", "Gboth"):
            gen_img, _ = self.run_G(gen_z, gen_c, swap_prob, nrr)
            logits = self.run_D(gen_img, gen_c, sigma)
            self._report("Loss/scores/fake", logits)
            self._report("Loss/signs/fake", logits.sign())
            loss = F.softplus(-logits)
            self._report("Loss/G/loss", loss)
            out["Loss/G/loss"] = loss.detach().mean()
            scale(loss.mean().mul(gain)).backward()

        if phase in ("Greg", "Gboth") and cfg.regularizes_G:
            c_cond = gpc_conditioning(gen_c, swap_prob, per_sample=False)
            ws = self.G.mapping(gen_z, c_cond, update_emas=False)
            ws = self._mix(ws, gen_z, gen_c)
            planes = self.G.planes(ws)
            reg = 0
            if cfg.density_reg > 0:
                points = density_points(ws.shape[0], cfg.density_reg_p_dist, ws.device)
                tv = density_l1(self.G, planes, points) * cfg.density_reg
                self._report("Loss/G/density_reg", tv)
                out["Loss/G/density_reg"] = tv.detach()
                reg = reg + tv
            if cfg.view_consistency > 0:
                vc = view_consistency(self.G, planes, ws, gen_c, cfg.view_consistency_yaw, nrr)
                self._report("Loss/G/view_consistency", vc)
                out["Loss/G/view_consistency"] = vc.detach()
                reg = reg + vc * cfg.view_consistency
            scale(reg.mul(gain)).backward()

        loss_dgen = 0
        if phase in ("Dmain", "Dboth"):
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, swap_prob, nrr, update_emas=True)
            logits = self.run_D(gen_img, gen_c, sigma, update_emas=True)
            self._report("Loss/scores/fake", logits)
            self._report("Loss/signs/fake", logits.sign())
            loss_dgen = F.softplus(logits)
            out["Loss/D/loss_fake"] = loss_dgen.detach().mean()
            scale(loss_dgen.mean().mul(gain)).backward()

        if phase in ("Dmain", "Dreg", "Dboth"):
            do_r1 = phase in ("Dreg", "Dboth")
            image = real_img.detach().requires_grad_(do_r1)
            image_raw = real_raw.detach().requires_grad_(do_r1)
            logits = self.run_D({"image": image, "image_raw": image_raw}, real_c, sigma)
            self._report("Loss/scores/real", logits)
            self._report("Loss/signs/real", logits.sign())
            total = 0
            if phase in ("Dmain", "Dboth"):
                loss_dreal = F.softplus(-logits)
                self._report("Loss/D/loss", loss_dgen + loss_dreal)
                out["Loss/D/loss_real"] = loss_dreal.detach().mean()
                total = total + loss_dreal
            if do_r1:
                inputs = [image, image_raw] if cfg.dual_discrimination else [image]
                s = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
                penalty = r1_penalty(logits, inputs, scale=s)
                loss_r1 = penalty * (cfg.r1_gamma / 2)
                self._report("Loss/r1_penalty", penalty)
                self._report("Loss/D/reg", loss_r1)
                out["Loss/D/reg"] = loss_r1.detach().mean()
                total = total + loss_r1
            out["signs_real"] = logits.detach().sign()
            scale(total.mean().mul(gain)).backward()
        return out


def check_finite(losses: Dict[str, torch.Tensor]) -> Optional[str]:
    """Name of the first non-finite loss (syncs with the device), or None."""
    for name, value in losses.items():
        if name == "signs_real":
            continue
        if not bool(torch.isfinite(value).all()):
            return name
    return None


__all__ = ["LossConfig", "EG3DLoss", "blur_sigma", "swap_probability", "neural_rendering_resolution",
           "lazy_regularization", "gpc_conditioning", "resize_real_raw", "r1_penalty", "density_points",
           "density_l1", "check_finite", "DEVIATIONS"]
