"""GAN inversion: an image and a (rough) camera become a latent of the generator.

`invert(G, image, camera)` follows the StyleGAN2 projector: start at w_avg (the mean of
`w_avg_samples` mapped latents, conditioned on the frontal camera), add noise to w that decays
to zero over the first `noise_ramp` of the steps, ramp the learning rate up and cosine it down.
- space "w": one w shared by all layers; "w+": one w per layer, each pulled towards the mean of
  the layers (`wplus_reg`) so the latent stays near the generator's W and its 3D shape
  holds up in novel views.
- refine_camera: yaw, pitch, log-radius and log-focal are optimised with the latent after a
  short latent-only warm-up; the camera starts at the given label (yaw = pitch = pi/2 frontal,
  as in `model.camera`) and anything the label has beyond a look-at camera (roll, off-centre
  principal point) is kept as a fixed residual.
- pti_steps: Pivotal Tuning (Roich et al. 2022): the generator is fine-tuned so that the pivot
  latent reproduces the image; a locality regulariser keeps the outputs of latents at a fixed
  distance around the pivot equal to the original generator's.

Rendering is deterministic with constant synthesis noise, so a projection renders the same
everywhere. Ctrl-C (KeyboardInterrupt) during a phase ends the optimisation and returns the
best result so far (`history["interrupted"] = True`); so does a callback returning True.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from . import camera as cam
from .inversion_losses import LossWeights, ReconstructionLoss, psnr

SPACES = ("w", "w+")


@dataclass
class InversionConfig:
    """Optimiser settings (defaults: the StyleGAN2 projector's, adapted to EG3D)."""
    steps: int = 500
    space: str = "w"
    pti_steps: int = 0
    refine_camera: bool = False
    lr: float = 0.05                   # latent learning rate (Adam), in units of w
    lr_rampup: float = 0.05            # fraction of the steps the learning rate ramps up over
    lr_rampdown: float = 0.25          # fraction of the steps it cosines down over
    noise_start: float = 0.05          # initial w noise, times the std of W
    noise_ramp: float = 0.75           # fraction of the steps over which the noise decays to 0
    w_avg_samples: int = 10000
    wplus_reg: float = 0.1             # weight of mean_l |w_l - mean(w)|^2 / w_std^2 (w+ only)
    camera_lr: float = 0.01            # Adam step of yaw / pitch (radians)
    camera_scale_lr: float = 0.002     # Adam step of log radius / log focal
    camera_warmup: float = 0.1         # fraction of the steps before the camera moves
    camera_prior: float = 0.0          # weight of |log radius, log focal change|^2
    pti_lr: float = 3e-4
    locality_weight: float = 1.0       # PTI locality regulariser weight (0 = off)
    locality_distance: float = 1.0     # distance of the probe latents from the pivot, times w_std
    locality_every: int = 1            # apply the regulariser every N PTI steps
    neural_rendering_resolution: Optional[int] = None   # None = the model's
    # The ray marcher, differentiated: "fast" (model/fast_render.py: same gradients within
    # 1e-3; a step 1.5-1.6x faster here, bench/invert_speed.py) or "reference" (the oracle).
    render_path: str = "fast"
    seed: int = 0

    def validate(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.render_path not in ("fast", "reference"):
            raise ValueError(f"render_path must be 'fast' or 'reference', got {self.render_path!r}")
        if self.steps < 0 or self.pti_steps < 0:
            raise ValueError(f"steps and pti_steps must be >= 0, got {self.steps}, {self.pti_steps}")


@dataclass
class Projection:
    """The result: ws [1, num_ws, w_dim], camera [1, 25], the fine-tuned generator (PTI) or
    None, and the history (per step: phase, loss terms, PSNR of the input view)."""
    ws: torch.Tensor
    camera: torch.Tensor
    tuned_G: Optional[torch.nn.Module]
    history: Dict[str, list]
    losses: str = ""
    space: str = "w"
    target: Optional[torch.Tensor] = None
    initial_camera: Optional[torch.Tensor] = None
    interrupted: bool = False


def frontal_label(G, device=None) -> torch.Tensor:
    """The frontal camera at the model's average radius / pivot / fov, [1, 25]."""
    r = G.cfg.rendering
    return cam.orbit_label(cam.FRONTAL, cam.FRONTAL, r.avg_camera_radius, list(r.avg_camera_pivot),
                           fov_degrees=r.avg_camera_fov, device=device or _device(G))


def w_stats(G, n: int, c: Optional[torch.Tensor] = None, seed: int = 0):
    """(w_avg [1, 1, w_dim], w_std scalar) of n mapped z ~ N(0, I), conditioned on c (frontal)."""
    device = _device(G)
    c = frontal_label(G, device) if c is None else c
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    with torch.no_grad():
        w = G.mapping(z, c.expand(n, -1))[:, :1]
    w_avg = w.mean(0, keepdim=True)
    w_std = ((w - w_avg).square().sum() / n).sqrt().item()
    return w_avg, w_std


class CameraRig(torch.nn.Module):
    """A differentiable look-at camera around a given label: parameters are the offsets of yaw,
    pitch (model.camera's convention), log radius and log focal from the label's values."""

    def __init__(self, label: torch.Tensor, pivot):
        super().__init__()
        cam2world, K = cam.split_label(label)
        yaw, pitch, radius = cam.yaw_pitch_radius(cam2world)
        self.register_buffer("yaw0", yaw.detach().clone())
        self.register_buffer("pitch0", pitch.detach().clone())
        self.register_buffer("radius0", radius.detach().clone())
        self.register_buffer("K0", K.detach().clone())
        self.pivot = [float(v) for v in pivot]
        base = cam.look_at_pose(yaw, pitch, radius, self.pivot, device=label.device)
        self.register_buffer("residual", torch.linalg.inv(base) @ cam2world)
        self.angles = torch.nn.Parameter(torch.zeros(2, device=label.device))   # yaw, pitch
        self.scales = torch.nn.Parameter(torch.zeros(2, device=label.device))   # log radius, log focal

    @staticmethod
    def pivot_for(label: torch.Tensor, default_pivot) -> List[float]:
        """The model's pivot when the label's optical axis passes through it, else the point of
        the axis closest to the world origin."""
        cam2world, _ = cam.split_label(label)
        origin, forward = cam2world[0, :3, 3], cam2world[0, :3, 2]
        p = torch.tensor(default_pivot, dtype=origin.dtype, device=origin.device)
        t = torch.dot(p - origin, forward)
        if (origin + t * forward - p).norm() < 1e-3:
            return [float(v) for v in default_pivot]
        t = torch.dot(-origin, forward)
        return (origin + t * forward).tolist()

    def yaw_pitch_radius(self):
        return (self.yaw0 + self.angles[0], self.pitch0 + self.angles[1],
                self.radius0 * torch.exp(self.scales[0]))

    def forward(self) -> torch.Tensor:
        yaw, pitch, radius = self.yaw_pitch_radius()
        pose = cam.look_at_pose(yaw, pitch, radius, self.pivot, device=self.K0.device) @ self.residual
        K = self.K0.clone()
        focal = torch.exp(self.scales[1])
        K = torch.cat([K[:, :2, :2] * focal, K[:, :2, 2:]], dim=2)
        K = torch.cat([K, self.K0[:, 2:]], dim=1)
        return cam.make_label(pose, K)


def _device(G) -> torch.device:
    return next(G.parameters()).device


def _lr_at(t: float, cfg: InversionConfig) -> float:
    """StyleGAN2 projector schedule: linear ramp-up, cosine ramp-down; t in [0, 1]."""
    down = min(1.0, (1.0 - t) / max(cfg.lr_rampdown, 1e-8))
    down = 0.5 - 0.5 * math.cos(down * math.pi)
    up = min(1.0, t / max(cfg.lr_rampup, 1e-8))
    return cfg.lr * down * up


def render(G, ws: torch.Tensor, c: torch.Tensor, nrr: Optional[int] = None,
           path: str = InversionConfig.render_path) -> Dict[str, torch.Tensor]:
    """G's deterministic render of ws from cameras c (constant synthesis noise)."""
    return G.synthesis(ws, c, noise_mode="const", deterministic=True, neural_rendering_resolution=nrr,
                       path=path)


def invert(G, image: torch.Tensor, camera: Optional[torch.Tensor] = None, space: str = "w",
           steps: Optional[int] = None, pti_steps: Optional[int] = None, refine_camera: Optional[bool] = None,
           losses: Optional[LossWeights] = None, callback: Optional[Callable[[dict], Optional[bool]]] = None,
           config: Optional[InversionConfig] = None, lpips=None, D=None) -> Projection:
    """Project image [1, 3, H, W] in [-1, 1] seen from camera [1, 25] (None = frontal) into G.

    steps / pti_steps / refine_camera / space override `config`. losses: the term weights;
    lpips: a `model.lpips.LPIPS` (from a local VGG16 file), D: the model's discriminator.
    callback(info) is called every step with phase, step, steps, loss terms, psnr and (cheaply,
    the render of that step) image; returning True stops the current phase.
    """
    cfg = copy.deepcopy(config) if config is not None else InversionConfig()
    cfg.space = space if space is not None else cfg.space
    cfg.steps = cfg.steps if steps is None else int(steps)
    cfg.pti_steps = cfg.pti_steps if pti_steps is None else int(pti_steps)
    cfg.refine_camera = cfg.refine_camera if refine_camera is None else bool(refine_camera)
    cfg.validate()
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be [1, 3, H, W] in [-1, 1], got shape {tuple(image.shape)}")
    device = _device(G)
    image = image.to(device=device, dtype=torch.float32)
    camera = frontal_label(G, device) if camera is None else camera.to(device=device, dtype=torch.float32)
    if camera.shape != (1, 25):
        raise ValueError(f"camera must be a [1, 25] EG3D label, got shape {tuple(camera.shape)}")
    nrr = cfg.neural_rendering_resolution or G.neural_rendering_resolution
    G = G.eval().requires_grad_(False)
    loss_fn = ReconstructionLoss(image, G.img_resolution, nrr, losses, lpips=lpips, D=D)
    history: Dict[str, list] = {"phase": [], "step": [], "loss": [], "psnr": []}
    result = _project(G, loss_fn, camera, cfg, nrr, history, callback)
    ws, label, interrupted = result
    tuned = None
    if cfg.pti_steps > 0 and not interrupted:
        tuned, interrupted = _pivotal_tuning(G, loss_fn, ws, label, cfg, nrr, history, callback)
    return Projection(ws=ws, camera=label, tuned_G=tuned, history=history, losses=loss_fn.describe(),
                      space=cfg.space, target=loss_fn.target.detach().cpu(), initial_camera=camera.detach().cpu(),
                      interrupted=interrupted)


def _step(opt, loss, history, phase, step, terms, out, target, callback, steps) -> bool:
    """One optimiser step on loss, then the record; True when the callback asks to stop."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return _record(history, phase, step, terms, out, target, callback, steps)


def _record(history, phase, step, terms, out, target, callback, steps) -> bool:
    p = psnr(out["image"].detach(), target)
    history["phase"].append(phase)
    history["step"].append(step)
    history["loss"].append(float(terms["total"].detach()))
    history["psnr"].append(p)
    for k, v in terms.items():
        if k != "total":
            history.setdefault(k, []).append(float(v.detach()))
    if callback is None:
        return False
    info = dict(phase=phase, step=step, steps=steps, psnr=p, image=out["image"].detach(),
                **{k: float(v.detach()) for k, v in terms.items()})
    return bool(callback(info))


def _project(G, loss_fn, camera, cfg: InversionConfig, nrr, history, callback):
    device = camera.device
    w_avg, w_std = w_stats(G, cfg.w_avg_samples, seed=cfg.seed)
    num_ws = G.num_ws
    layers = num_ws if cfg.space == "w+" else 1
    w_opt = w_avg.repeat(1, layers, 1).clone().requires_grad_(True)
    rig = None
    params = [{"params": [w_opt], "lr": cfg.lr}]
    if cfg.refine_camera:
        pivot = CameraRig.pivot_for(camera, G.cfg.rendering.avg_camera_pivot)
        rig = CameraRig(camera, pivot).to(device)
        params += [{"params": [rig.angles], "lr": cfg.camera_lr},
                   {"params": [rig.scales], "lr": cfg.camera_scale_lr}]
    opt = torch.optim.Adam(params, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    best = (float("inf"), w_opt.detach().clone(), camera.detach().clone())
    interrupted = False
    try:
        for step in range(cfg.steps):
            t = step / max(cfg.steps, 1)
            lr_scale = _lr_at(t, cfg) / cfg.lr
            camera_on = rig is not None and t >= cfg.camera_warmup
            opt.param_groups[0]["lr"] = cfg.lr * lr_scale
            for g in opt.param_groups[1:]:
                g["lr"] = (cfg.camera_lr if g["params"][0] is rig.angles else cfg.camera_scale_lr) \
                    * (lr_scale if camera_on else 0.0)
            noise_scale = w_std * cfg.noise_start * max(0.0, 1.0 - t / max(cfg.noise_ramp, 1e-8)) ** 2
            w_noisy = w_opt + torch.randn(w_opt.shape, generator=gen).to(device) * noise_scale
            ws = w_noisy.expand(1, num_ws, -1) if layers == 1 else w_noisy
            label = rig() if rig is not None else camera
            out = render(G, ws, label, nrr, cfg.render_path)
            terms = loss_fn(out)
            loss = terms["total"]
            if layers > 1 and cfg.wplus_reg > 0:
                reg = (w_opt - w_opt.mean(1, keepdim=True)).square().sum(-1).mean() / w_std ** 2
                terms["wplus_reg"] = reg
                loss = loss + cfg.wplus_reg * reg
            if rig is not None and cfg.camera_prior > 0:
                loss = loss + cfg.camera_prior * rig.scales.square().sum()
            if float(terms["total"].detach()) < best[0]:      # the latent this loss was measured at
                best = (float(terms["total"].detach()), w_opt.detach().clone(), label.detach().clone())
            if _step(opt, loss, history, "latent", step, terms, out, loss_fn.target, callback, cfg.steps):
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        w_final, label = best[1], best[2]
    else:
        w_final = w_opt.detach()
        label = rig().detach() if rig is not None else camera.detach()
    ws = w_final.expand(1, num_ws, -1).clone() if layers == 1 else w_final.clone()
    return ws, label, interrupted


def _pivotal_tuning(G, loss_fn, ws, label, cfg: InversionConfig, nrr, history, callback):
    """Fine-tune a copy of G around the pivot ws; returns (tuned G, interrupted)."""
    device = ws.device
    tuned = copy.deepcopy(G).requires_grad_(True)          # eval mode: no EMA updates, same renders
    opt = torch.optim.Adam(tuned.parameters(), lr=cfg.pti_lr)
    w_avg, w_std = w_stats(G, min(cfg.w_avg_samples, 1000), seed=cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    frontal = frontal_label(G, device)
    interrupted = False
    try:
        for step in range(cfg.pti_steps):
            out = render(tuned, ws, label, nrr, cfg.render_path)
            terms = loss_fn(out)
            loss = terms["total"]
            if cfg.locality_weight > 0 and step % cfg.locality_every == 0:
                z = torch.randn(1, G.z_dim, generator=gen).to(device)
                with torch.no_grad():
                    w_z = G.mapping(z, frontal)
                    direction = w_z - ws
                    probe = ws + direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8) \
                        * cfg.locality_distance * w_std
                    yaw = cam.FRONTAL + (torch.rand(1, generator=gen).item() - 0.5) * 0.6
                    probe_cam = cam.orbit_label(yaw, cam.FRONTAL, G.cfg.rendering.avg_camera_radius,
                                                list(G.cfg.rendering.avg_camera_pivot),
                                                fov_degrees=G.cfg.rendering.avg_camera_fov, device=device)
                    ref = render(G, probe, probe_cam, nrr, cfg.render_path)
                got = render(tuned, probe, probe_cam, nrr, cfg.render_path)
                local = (torch.nn.functional.mse_loss(got["image"], ref["image"])
                         + torch.nn.functional.mse_loss(got["image_raw"], ref["image_raw"]))
                terms["locality"] = local
                loss = loss + cfg.locality_weight * local
            if _step(opt, loss, history, "pti", step, terms, out, loss_fn.target, callback, cfg.pti_steps):
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    return tuned.eval().requires_grad_(False), interrupted
