#!/usr/bin/env python3
"""Training speed: sec/kimg and peak memory of the real training step, for a --cfg preset.

    python bench/train_speed.py --cfg tiny --resolution 32 --batch 4 --device cpu
    python bench/train_speed.py --cfg tiny --compare fused_modconv=always          # vs the baseline
    python bench/train_speed.py --cfg synthetic --compare render_path=fast          # fast ray marcher
    python bench/train_speed.py --cfg ffhq --resolution 512 --batch 32 --batch-gpu 4 --device cuda \
        --compare batch_gpu=8 --compare fp16=0

Each configuration runs in its own process (so peak memory is its own): warm-up steps, then
`--steps` timed steps of `training.loop.Trainer.step` (all phases, lazy R1 / density
regularisation at their intervals, EMA) on random images and cameras drawn from the portrait
distribution. The first configuration is the baseline; every `--compare KEY=VALUE[,KEY=VALUE]`
adds one variant and the table shows its speed ratio (baseline sec/kimg / variant sec/kimg, > 1 =
faster) and memory ratio. Keys: render_path (reference|fast: the ray marcher of G's training
renders, model/fast_render.py: train.py --render-path), fused_modconv (inference_only|always|never), batch, batch_gpu,
nrr (neural rendering resolution), fp16 (G backbone, SR and D fp16 resolutions), threads, tf32,
aug (noaug|ada|fixed), density_reg, gamma; or any train.py option as --opt=value
(e.g. --compare=--cbase=16384).

Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the process's peak resident set
size (ru_maxrss), which includes the Python interpreter and torch (~0.3 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

KEYS = {"render_path": "--render-path", "batch": "--batch", "batch_gpu": "--batch-gpu", "nrr": "--neural_rendering_resolution_initial",
        "threads": "--threads", "tf32": "--tf32", "aug": "--aug", "density_reg": "--density_reg", "gamma": "--gamma"}


def variant_args(spec: str):
    """'fused_modconv=always,batch=8' -> (train.py args, {fused_modconv} set)."""
    args, settings = [], {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item.startswith("--"):
            args.append(item)
            continue
        if "=" not in item:
            raise SystemExit(f"--compare: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key == "fused_modconv":
            if value not in ("inference_only", "always", "never"):
                raise SystemExit("fused_modconv must be inference_only, always or never")
            settings["fused_modconv"] = value
        elif key == "fp16":
            args += [f"--g_num_fp16_res={value}", f"--sr_num_fp16_res={value}", f"--d_num_fp16_res={value}"]
        elif key in KEYS:
            args.append(f"{KEYS[key]}={value}")
        else:
            raise SystemExit(f"--compare: unknown key {key!r} "
                             f"(known: fused_modconv, fp16, {', '.join(KEYS)})")
    return args, settings


def worker(payload: dict) -> dict:
    import numpy as np
    import torch

    from model import camera
    from training import options
    from training.loop import Trainer, build_networks, resolve_device

    explicit = options.parse_args(payload["args"])
    config = options.resolve(explicit, dataset_info=dict(resolution=payload["resolution"], size=1024, name="random"))
    settings = payload.get("settings") or {}
    if settings.get("fused_modconv"):
        config.G.backbone.fused_modconv = settings["fused_modconv"]
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    else:
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    yaw = np.pi / 2 + np.clip(rng.randn(1024) * 0.25, -0.5, 0.5)
    pitch = np.pi / 2 + np.clip(rng.randn(1024) * 0.1, -0.25, 0.25)
    labels = camera.orbit_label(torch.tensor(yaw, dtype=torch.float32), torch.tensor(pitch, dtype=torch.float32))
    G, D, G_ema = build_networks(config, device)
    trainer = Trainer(config, G, D, G_ema, labels, device)
    b, res = trainer.batch_per_rank, config.resolution

    def batch():
        img = torch.rand(b, 3, res, res, device=device) * 2 - 1
        return img, labels[torch.randint(len(labels), (b,))].to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(payload["warmup"]):
        trainer.step(*batch())
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(payload["steps"]):
        trainer.step(*batch())
    sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    images = payload["steps"] * config.batch_size
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        peak_kind = "cuda_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        peak_kind = "cpu_maxrss"
    return dict(sec_per_kimg=wall / images * 1000, cpu_sec_per_kimg=cpu / images * 1000, images_per_sec=images / wall,
                peak_gb=peak, peak_kind=peak_kind, device=str(device), batch=config.batch_size,
                batch_gpu=trainer.batch_gpu, resolution=res, nrr=config.loss.neural_rendering_resolution_initial,
                fused_modconv=config.G.backbone.fused_modconv, render_path=config.render_path,
                g_params=sum(p.numel() for p in G.parameters()), d_params=sum(p.numel() for p in D.parameters()),
                finite=all(bool(torch.isfinite(v).all()) for v in trainer.last_losses.values()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--cfg", default="tiny", help="train.py --cfg preset [tiny]")
    parser.add_argument("--resolution", type=int, default=None, help="image resolution [preset's: tiny 32, "
                                                                      "synthetic 64, ffhq/afhq 512, shapenet 128]")
    parser.add_argument("--batch", type=int, default=None, help="total batch [preset]")
    parser.add_argument("--batch-gpu", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=16, help="timed steps (16 = one R1 interval) [16]")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads [all cores]")
    parser.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE[,...]",
                        help="a variant to compare with the baseline (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args._worker:
        print("RESULT " + json.dumps(worker(json.loads(args._worker))), flush=True)
        return 0

    resolution = args.resolution or {"tiny": 32, "synthetic": 64, "synthetic360": 64, "shapenet": 128}.get(args.cfg, 512)
    base = [f"--cfg={args.cfg}", "--data=random", f"--device={args.device}"] + extra
    if args.batch:
        base.append(f"--batch={args.batch}")
    if args.batch_gpu:
        base.append(f"--batch-gpu={args.batch_gpu}")
    if args.threads:
        base.append(f"--threads={args.threads}")
    variants = [("baseline", base, {})]
    for spec in args.compare:
        vargs, settings = variant_args(spec)
        variants.append((spec, base + vargs, settings))

    results = []
    for name, vargs, settings in variants:
        payload = dict(args=vargs, settings=settings, resolution=resolution, steps=args.steps, warmup=args.warmup)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(payload)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            results.append(dict(name=name, error=err))
            print(f"{name}: failed: {err}", file=sys.stderr)
            continue
        results.append(dict(name=name, **json.loads(line[len("RESULT "):])))

    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if all("error" not in r for r in results) else 1
    ok = [r for r in results if "error" not in r]
    if ok:
        r0 = ok[0]
        print(f"cfg={args.cfg} resolution={resolution} device={r0['device']} G={r0['g_params']:,} D={r0['d_params']:,} "
              f"params; {args.steps} timed steps after {args.warmup} warm-up")
    base_r = results[0] if "error" not in results[0] else None
    header = f"{'variant':<34} {'batch':>5} {'b/gpu':>5} {'nrr':>4} {'sec/kimg':>9} {'img/s':>8} {'cpu s/kimg':>10} " \
             f"{'peak GB':>8} {'speed x':>8} {'mem x':>6}"
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['name']:<34} failed: {r['error']}")
            continue
        speed = base_r["sec_per_kimg"] / r["sec_per_kimg"] if base_r else float("nan")
        mem = r["peak_gb"] / base_r["peak_gb"] if base_r else float("nan")
        print(f"{r['name'][:34]:<34} {r['batch']:>5} {r['batch_gpu']:>5} {r['nrr']:>4} {r['sec_per_kimg']:>9.2f} "
              f"{r['images_per_sec']:>8.2f} {r['cpu_sec_per_kimg']:>10.2f} {r['peak_gb']:>8.3f} {speed:>8.2f} {mem:>6.2f}")
    if ok:
        print(f"peak memory: {ok[0]['peak_kind']}; speed x = baseline sec/kimg / variant sec/kimg (> 1: faster)")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
