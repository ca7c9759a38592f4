#!/usr/bin/env python3
"""Turntable export speed: frames per second of `app.export.export_turntable` (planes computed
once per seed, frames streamed to x264) against a baseline measured in the same run that
recomputes the planes every frame (what a naive `G.synthesis` loop, e.g. the official
gen_videos.py, does), plus the encoder alone.

    python bench/export_speed.py                         # CPU (and CUDA when present), 128^2 and 512^2
    python bench/export_speed.py --frames 8 --device cuda --sample-mult 1

Sizes: 128^2 is the neural render (render type 'raw', no super-resolution) of the FFHQ
architecture (preset ffhq512, random weights: speed does not depend on the weights), 512^2 is
its super-resolved final image. Timings exclude model building and one warm-up export; each figure is the best of --repeat
runs (the two pipelines alternate), which keeps it meaningful on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model                                   # noqa: E402
from app import export as E                    # noqa: E402
from app import state as S                     # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def naive_frames(G, st: S.ViewerState, seeds, frames: int):
    """Baseline: mapping + planes + render for every frame (no caching), same pixels."""
    yaws, pitches = E.camera_path("360", frames)
    cells = [E.seed_state(st, s) for s in seeds]
    for f in range(frames):
        states = [E.posed_state(c, yaws[f], pitches[f]) for c in cells]
        rgb = [S.to_display_rgb(S.render_state(G, s, None), s) for s in states]
        yield E.layout_grid(np.stack(rgb), (len(seeds), 1))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg), all threads."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_export(fn, device: str) -> tuple:
    """(wall seconds, CPU seconds) of fn()."""
    sync(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    fn()
    sync(device)
    return time.perf_counter() - t0, cpu_seconds() - c0


def bench_device(device: str, args) -> list:
    torch.manual_seed(0)
    G = model.build_generator(model.presets.generator_config(args.preset)).eval().to(device)
    rows = []
    seeds = list(range(args.seeds))
    for size, render in ((G.neural_rendering_resolution, "raw"), (G.img_resolution, "final")):
        st = S.ViewerState(render_type=render, depth_mult=args.sample_mult, importance_mult=args.sample_mult)
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            # warm-up (allocator, kernels, ffmpeg start-up)
            E.export_turntable(G, Path(tmp) / "warm.mp4", st, seeds, frames=1, bar=False)
            def ours():
                E.export_turntable(G, Path(tmp) / "ours.mp4", st, seeds, grid=(len(seeds), 1),
                                   frames=args.frames, bar=False)

            def baseline():
                with E.VideoWriter(Path(tmp) / "naive.mp4", fps=30) as w:
                    for frame in naive_frames(G, st, seeds, args.frames):
                        w.write(frame)
            # alternate the two and keep each one's best run: robust to other load on the machine
            t_ours = t_naive = (float("inf"), float("inf"))
            for _ in range(args.repeat):
                t_ours = min(t_ours, time_export(ours, device))
                t_naive = min(t_naive, time_export(baseline, device))

            frame = np.random.RandomState(0).randint(0, 255, (size, size * len(seeds), 3), np.uint8)
            frame = np.ascontiguousarray(np.repeat(np.repeat(frame[::8, ::8], 8, 0), 8, 1)[:size, :size * len(seeds)])

            def encode_only():
                with E.VideoWriter(Path(tmp) / "enc.mp4", fps=30) as w:
                    for i in range(args.frames * 4):
                        w.write(np.roll(frame, 4 * i, axis=1))
            t_enc = min(time_export(encode_only, device) for _ in range(args.repeat))[0] / 4
        n = args.frames
        rows.append(dict(device=device, size=size, render=render, frames=n, ours=n / t_ours[0],
                         naive=n / t_naive[0], encoder=n / t_enc, ours_cpu=t_ours[1] / n, naive_cpu=t_naive[1] / n))
        r = rows[-1]
        cpu = (f"   CPU-s/frame {r['ours_cpu']:.2f} vs {r['naive_cpu']:.2f} (x{r['naive_cpu'] / r['ours_cpu']:.2f})"
               if device == "cpu" else "")
        print(f"{device:5s} {size:4d}^2 {render:5s}  export {r['ours']:7.3f} fps   "
              f"baseline (planes per frame) {r['naive']:7.3f} fps   ratio x{r['ours'] / r['naive']:.2f}   "
              f"encoder alone {r['encoder']:7.1f} fps{cpu}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (default: cpu + cuda if present)")
    p.add_argument("--frames", type=int, default=None, help="frames per measurement (default 3 CPU, 30 CUDA)")
    p.add_argument("--seeds", type=int, default=1, help="grid cells (seeds) per frame (default 1)")
    p.add_argument("--preset", default="ffhq512", help="architecture preset (default ffhq512)")
    p.add_argument("--sample-mult", type=float, default=2.0,
                   help="depth samples multiplier (default 2, the turntable default)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeat", type=int, default=2, help="runs per measurement, best kept (default 2)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device != "all":
            print("CUDA is not available", file=sys.stderr)
            return 1
        devices.remove("cuda")
    print(f"turntable export speed: preset {args.preset}, {args.seeds} seed(s), sample mult {args.sample_mult:g}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores")
    frames_arg = args.frames
    for device in devices:
        args.frames = frames_arg or (30 if device == "cuda" else 3)
        bench_device(device, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
