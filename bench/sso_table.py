#!/usr/bin/env python3
"""The single-scene table: tri-plane vs. dense voxel grid vs. implicit MLP at an equal parameter budget.

    python bench/sso_table.py                                   # CPU size, ~10 min on 2 shared cores
    python bench/sso_table.py --cpu-scale 1 --steps 20000 --resolution 256 --device cuda   # paper size

Generates the project's test scene (`training.sso_scene`: one procedural object, `--views` training
cameras on a sphere, `--heldout` held-out cameras kept apart; or `--scene PATH` to reuse one), fits
each representation with the same settings (`training.sso.scaled_defaults(--cpu-scale)`, `--steps`
steps of `--batch-rays` rays, the same seed; only the representation differs) and prints a markdown
table: parameters, PSNR on all held-out views and on 8 training views, training wall time and CPU
time (process time: less sensitive to other processes on a shared machine), and seconds per step.
Evaluation time is not included in the times. `--json` also writes the raw numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from training import sso  # noqa: E402
from training.sso_scene import generate_scene  # noqa: E402

DESCRIPTIONS = {"triplane": "tri-plane", "voxel": "dense voxel grid", "mlp": "implicit MLP"}


def run(args) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tmp = None
    scene = args.scene
    if scene is None or not os.path.exists(scene):
        if scene is None:
            tmp = tempfile.TemporaryDirectory(prefix="sso_table_")
            scene = os.path.join(tmp.name, "scene.zip")
        t0 = time.perf_counter()
        generate_scene(scene, views=args.views, heldout=args.heldout, resolution=args.resolution, seed=args.seed)
        print(f"scene: {args.views} + {args.heldout} views at {args.resolution}px in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    data = sso.load_multiview(scene)
    rows = []
    try:
        for repr_ in args.reprs.split(","):
            cfg = sso.scaled_defaults(args.cpu_scale)
            cfg.field.repr = repr_
            cfg.field.box_size = data.box_size
            cfg.background = list(data.background)
            cfg.train.seed = args.seed
            cfg.train.eval_every = 0                    # evaluate once, at the end
            cfg.train.checkpoint_every = 0
            if args.steps:
                cfg.train.steps = args.steps
            if args.batch_rays:
                cfg.train.batch_rays = args.batch_rays
            outdir = os.path.join(args.outdir, repr_) if args.outdir else None
            summary = sso.fit(cfg, data, outdir, progress=not args.no_progress, device=args.device)
            field_cfg = summary["config"].field
            desc = {name: d for name, _, d in sso.budget_table(field_cfg)}[repr_]
            row = dict(repr=repr_, size=desc, params=summary["params"], steps=summary["step"],
                       psnr_heldout=summary["psnr_heldout"], psnr_train=summary["psnr_train"],
                       train_seconds=summary["train_seconds"], train_cpu_seconds=summary["train_cpu_seconds"],
                       heldout_views=summary["heldout_views"], train_views=summary["train_views"],
                       resolution=summary["resolution"])
            rows.append(row)
            print(f"{repr_}: {row['params']:,d} params, held-out {row['psnr_heldout']:.2f} dB, "
                  f"train {row['psnr_train']:.2f} dB, {row['train_seconds']:.0f} s", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return dict(rows=rows, samples=[cfg.rendering.depth_resolution, cfg.rendering.depth_resolution_importance],
                batch_rays=cfg.train.batch_rays, threads=torch.get_num_threads(),
                machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")


def markdown(result: dict, command: str) -> str:
    rows = result["rows"]
    r0 = rows[0]
    lines = [
        f"Single-scene fitting, equal parameter budget: {r0['train_views']} training + {r0['heldout_views']} held-out "
        f"views at {r0['resolution']}px of the project's test scene, {r0['steps']} steps of "
        f"{result['batch_rays']} rays, {result['samples'][0]} + {result['samples'][1]} samples per ray "
        f"({result['machine']}, {result['threads']} torch thread(s)).",
        "",
        "| representation | size | parameters | held-out PSNR (dB) | train PSNR (dB) | train wall time (s) "
        "| train CPU time (s) | s / step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {DESCRIPTIONS.get(r['repr'], r['repr'])} | {r['size']} | {r['params']:,d} | "
                     f"{r['psnr_heldout']:.2f} | {r['psnr_train']:.2f} | {r['train_seconds']:.0f} | "
                     f"{r['train_cpu_seconds']:.0f} | {r['train_seconds'] / max(r['steps'], 1):.3f} |")
    lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cpu-scale", type=float, default=8.0, help="training.sso --cpu-scale factor (1 = paper size)")
    p.add_argument("--steps", type=int, default=2000, help="steps per representation (0 = the scaled default)")
    p.add_argument("--batch-rays", type=int, default=0, help="rays per step (0 = the scaled default)")
    p.add_argument("--views", type=int, default=64)
    p.add_argument("--heldout", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=11, help="scene object and fitting seed")
    p.add_argument("--scene", help="use (or create) this scene dataset instead of a temporary one")
    p.add_argument("--reprs", default="triplane,voxel,mlp")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU; 0 = default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--outdir", help="keep each fitted scene in OUTDIR/<repr> (viewable with training.sso.load_scene)")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--json", help="also write the raw numbers to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    command = "python bench/sso_table.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    table = markdown(result, command.strip())
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(result, command=command.strip()), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
