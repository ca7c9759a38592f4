#!/usr/bin/env python3
"""Inversion speed: seconds per 100 steps of w projection and of pivotal tuning (PTI), against a
baseline measured in the same run: one bare optimisation step (render + loss + backward + Adam on
ws, nothing else), so the ratio is what the projector adds (w noise, schedule, MS-SSIM, history;
PTI: the locality regulariser's two extra renders and the generator's optimiser). The bare step is
also timed through the reference ray marcher (the projector's default is the fast one,
`InversionConfig.render_path`), so the gain of differentiating the fast path shows beside it.

    python bench/invert_speed.py                       # shipped model + ffhq512 (random weights), CPU
    python bench/invert_speed.py --device cuda --ffhq-steps 20
    python bench/invert_speed.py --models ffhq512 --threads 2

Models: checkpoints/portrait.safetensors (64 px, 32 px neural render) and the ffhq512
architecture (preset ffhq512: 512 px, 128 px neural render, 48 + 48 samples; random weights:
speed does not depend on them). Steps are timed after one warm-up step; per-100 figures are
extrapolated from --steps / --ffhq-steps steps (few on CPU, to stay within ~2 minutes).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model                                   # noqa: E402
from model import inversion as inv             # noqa: E402
from model.inversion_losses import ReconstructionLoss   # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "portrait.safetensors"


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bare_steps(G, target, c, steps: int, path: str = inv.InversionConfig.render_path) -> float:
    """Seconds for `steps` plain Adam steps on ws (the baseline), rendering through `path`."""
    ws = G.mapping(torch.zeros(1, G.z_dim, device=c.device), c).detach().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=0.01)
    loss_fn = ReconstructionLoss(target, G.img_resolution, G.neural_rendering_resolution)

    def step():
        out = inv.render(G, ws, c, path=path)
        loss = loss_fn(out)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    sync(c.device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(c.device)
    return time.perf_counter() - t


def timed_invert(G, target, c, steps: int, pti_steps: int, samples: int) -> float:
    """Seconds of the timed phase (w steps, or PTI steps after 0 latent steps), first step excluded."""
    stamps = []

    def callback(info):
        sync(c.device)
        stamps.append(time.perf_counter())
        return False
    cfg = inv.InversionConfig(w_avg_samples=samples)
    inv.invert(G, target, c, steps=steps + (1 if pti_steps == 0 else 0),
               pti_steps=pti_steps + (1 if pti_steps else 0), callback=callback, config=cfg)
    return stamps[-1] - stamps[0]


def bench(name: str, G, steps: int, device, samples: int) -> None:
    c = inv.frontal_label(G, device)
    with torch.no_grad():
        target = inv.render(G, G.mapping(torch.randn(1, G.z_dim, device=device), c), c)["image"]
    ref = bare_steps(G, target, c, steps, "reference") / steps * 100
    base = bare_steps(G, target, c, steps) / steps * 100
    w = timed_invert(G, target, c, steps, 0, samples) / steps * 100
    pti = timed_invert(G, target, c, 0, steps, samples) / steps * 100
    print(f"{name:28s} {device!s:6s} bare step {base:8.1f} s/100 (reference ray marcher {ref:8.1f}: "
          f"{ref / base:4.2f}x)   w projection {w:8.1f} s/100 ({w / base:4.2f}x)   PTI {pti:8.1f} s/100 "
          f"({pti / base:4.2f}x)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps, shipped model (default 10)")
    p.add_argument("--ffhq-steps", type=int, default=1, help="timed steps, ffhq512 (default 1 on CPU)")
    p.add_argument("--models", default="shipped,ffhq512", help="which of shipped, ffhq512 (default both)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    models = args.models.split(",")
    if "shipped" in models:
        G = model.load(SHIPPED, device=args.device)
        bench("shipped portrait (64 px)", G, args.steps, args.device, 10000)
    if "ffhq512" in models:
        G = model.build_generator(model.presets.generator_config("ffhq512")).to(args.device).eval()
        bench("ffhq512 random (512 px)", G.requires_grad_(False), args.ffhq_steps, args.device, 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
