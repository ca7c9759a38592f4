#!/usr/bin/env python3
"""Frames per second of the viewer's render path, with and without the tri-plane cache.

    python bench/viewer_fps.py                         # the shipped checkpoint
    python bench/viewer_fps.py --preset tiny           # random weights, tiny preset
    python bench/viewer_fps.py --network model.pkl --device cuda

Each frame is what the viewer's render worker does for one request at the model's native
resolution: the final (super-resolved) image for a new camera yaw, converted to display RGB.
"cached" reuses ws and planes (only the camera moves, the viewer's common case); "uncached"
recomputes mapping + planes every frame (a new seed each frame). Runs on CPU and, when present,
CUDA; prints the ratio cached / uncached.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import model  # noqa: E402
from app import DEFAULT_MODEL_PATH  # noqa: E402
from app import state as S  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(G, device: str, cached: bool, seconds: float, min_frames: int, warmup: int):
    """(fps from the median frame time, fps from the mean, frames, mean per-stage ms)."""
    cache = S.PlanesCache() if cached else None
    base = S.ViewerState(seed=0)
    stages = {}
    frames = 0
    times = []
    for i in range(warmup):                              # allocator / kernel warm-up
        S.to_display_rgb(S.render_state(G, base.copy(yaw=float(i)), cache), base)
    sync(device)
    t0 = time.perf_counter()
    while True:
        s = base.copy(yaw=(frames * 3.0) % 60 - 30) if cached else base.copy(seed=frames + 1)
        t = {}
        f0 = time.perf_counter()
        S.to_display_rgb(S.render_state(G, s, cache, timings=t), s)
        sync(device)
        times.append(time.perf_counter() - f0)
        for k, v in t.items():
            stages[k] = stages.get(k, 0.0) + v
        frames += 1
        elapsed = time.perf_counter() - t0
        if frames >= min_frames and elapsed >= seconds:
            break
    median = sorted(times)[len(times) // 2]
    return 1.0 / median, frames / elapsed, frames, {k: v / frames for k, v in stages.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default=str(DEFAULT_MODEL_PATH),
                   help="model to load (.safetensors or official .pkl); default: the shipped checkpoint")
    p.add_argument("--preset", choices=model.presets.PRESETS, default=None,
                   help="benchmark a random-weight generator of this preset instead of --network")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (= cpu, and cuda if present)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    p.add_argument("--min-frames", type=int, default=3, help="at least this many frames (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up frames (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: as the viewer, all cores but one)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" \
        else [args.device]
    if args.preset:
        torch.manual_seed(0)
        G0 = model.build_generator(model.presets.generator_config(args.preset)).eval().requires_grad_(False)
        name = f"preset {args.preset} (random weights)"
    else:
        if not os.path.isfile(args.network):
            print(f"error: {args.network} does not exist; pass --network PATH or --preset tiny|ffhq512",
                  file=sys.stderr)
            return 2
        G0 = model.load(args.network)
        name = args.network
    print(f"model: {name}: {G0.img_resolution} px output, {G0.neural_rendering_resolution} px neural "
          f"render, {G0.cfg.rendering.depth_resolution}+{G0.cfg.rendering.depth_resolution_importance} "
          f"samples/ray; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    rows = []
    for device in devices:
        G = G0.to(device)
        with torch.no_grad():
            res = {}
            for cached in (True, False):
                fps, fps_mean, n, stages = measure(G, device, cached, args.seconds, args.min_frames,
                                                   args.warmup)
                res[cached] = fps
                st = "  ".join(f"{k} {v:.1f}" for k, v in stages.items())
                label = "cached  " if cached else "uncached"
                print(f"{device:5s} {label}: {fps:8.2f} FPS (median frame; mean {fps_mean:.2f})  "
                      f"{n} frames; mean ms/frame: {st}")
            ratio = res[True] / res[False]
            print(f"{device:5s} ratio cached/uncached: {ratio:.2f}x")
            rows.append((device, res[True], res[False], ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
