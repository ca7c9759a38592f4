#!/usr/bin/env python3
"""Train an EG3D tri-plane GAN. Accepts the official EG3D train.py options.

    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip --gpus=8 --batch=32 --gamma=1
    python train.py --cfg=tiny --data=syn32.zip --kimg=1 --device=cpu
    python train.py --resume=training-runs/00000-tiny-syn32-gpus1-batch4-gamma1     # continue exactly
    python train.py --cfg=ffhq --data=FFHQ_512.zip --dry-run                       # print the config
    python train.py sso --data=scene.zip --repr=triplane --cpu-scale                # single-scene fitting

`--gpus N` (N > 1) starts N processes itself (one per GPU; CPU processes with gloo when there is
no CUDA), or with `--launcher=torchrun` prints the equivalent torchrun command; running this
script under torchrun works too. Ctrl-C (or SIGTERM) stops after the current step and writes a
snapshot. Run `python train.py --help` for every option.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import tempfile
from typing import List, Optional

REPO = os.path.dirname(os.path.abspath(__file__))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "LOCAL_RANK" in os.environ


def torchrun_command(argv: List[str], gpus: int) -> str:
    args = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a.startswith("--launcher"):
            skip = a in ("--launcher",)
            continue
        args.append(a)
    script = os.path.relpath(os.path.abspath(__file__))
    if script.startswith(".."):
        script = os.path.abspath(__file__)
    return " ".join(["torchrun", "--standalone", f"--nproc_per_node={gpus}", shlex.quote(script)]
                    + [shlex.quote(a) for a in args])


def _error(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sso":
        from training import sso
        return sso.main(argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        from training import options
        options.build_parser().print_help()
        print("\nsubcommand:\n  sso    single-scene fitting: tri-plane vs. voxel grid vs. implicit MLP "
              "(python train.py sso --help)")
        return 0
    from model.checkpoint import CheckpointError
    from training import options
    from training.dataset import DatasetError
    from training.loop import TrainingError

    try:
        explicit = options.parse_args(argv)
    except options.OptionsError as exc:
        return _error(f"{exc}\n(run `python train.py --help` for the options)", 2)

    torchrun = _under_torchrun()
    gpus = explicit.get("gpus", 1)
    if not torchrun and explicit.get("launcher") == "torchrun" and gpus > 1:
        print("Run this (torchrun starts one process per GPU; this script picks the rank up from it):")
        print(torchrun_command(argv, gpus))
        return 0
    if torchrun:
        world = int(os.environ["WORLD_SIZE"])
        if "gpus" in explicit and explicit["gpus"] != world:
            print(f"note: --gpus={explicit['gpus']} but torchrun started {world} processes; using {world}",
                  file=sys.stderr)
        explicit["gpus"] = world

    try:
        config = options.resolve(explicit)
    except (options.OptionsError, DatasetError, CheckpointError) as exc:
        return _error(str(exc), 2)

    if config.options.get("dry_run"):
        if config.resume and config.resume["mode"] == "continue" and config.resume.get("run_dir"):
            config.run_dir = config.resume["run_dir"]
        else:
            config.run_dir = options.next_run_dir(config.options["outdir"], config.desc) + " (not created)"
        print(options.format_config(config))
        print("\nDry run; exiting.")
        return 0

    try:
        if torchrun:
            return _run_torchrun(config, options)
        if config.resume and config.resume["mode"] == "continue" and config.resume.get("run_dir"):
            config.run_dir = config.resume["run_dir"]
        else:
            config.run_dir = options.next_run_dir(config.options["outdir"], config.desc)
            os.makedirs(config.run_dir, exist_ok=False)
        if config.num_gpus == 1:
            from training.loop import training_loop
            training_loop(config)
            return 0
        return _spawn(config)
    except (TrainingError, DatasetError, CheckpointError) as exc:
        return _error(str(exc), 1)
    except KeyboardInterrupt:
        return _error("interrupted", 130)


def _spawn(config) -> int:
    import torch
    import torch.multiprocessing as mp
    from training.loop import resolve_device, spawn_worker

    n = config.num_gpus
    if resolve_device(config.device).type == "cuda" and n > torch.cuda.device_count():
        return _error(f"--gpus={n} but only {torch.cuda.device_count()} CUDA device(s) are visible", 2)
    print(f"Launching {n} processes...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        init_method = f"file://{os.path.join(tmp, '.torch_distributed_init')}"
        context = mp.start_processes(spawn_worker, args=(config.to_dict(), n, init_method), nprocs=n, join=False,
                                     start_method="spawn")
        notified = []

        def on_signal(signum, frame):  # the workers got the signal too and stop after a snapshot
            if not notified:
                print("\nstopping: the processes write a snapshot and exit...", file=sys.stderr, flush=True)
                notified.append(signum)

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not context.join():
                pass
        except mp.ProcessExitedException as exc:
            return _error(f"a training process exited with code {exc.exit_code} (see its message above)", 1)
        except mp.ProcessRaisedException as exc:
            return _error(f"a training process failed:\n{exc}", 1)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    return 0


def _run_torchrun(config, options) -> int:
    import datetime

    import torch
    from training.loop import training_loop

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    backend = "nccl" if (config.device != "cpu" and torch.cuda.is_available()) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local % torch.cuda.device_count())
    torch.distributed.init_process_group(backend=backend, init_method="env://", timeout=datetime.timedelta(hours=6))
    try:
        holder = [None]
        if rank == 0:
            if config.resume and config.resume["mode"] == "continue" and config.resume.get("run_dir"):
                holder[0] = config.resume["run_dir"]
            else:
                holder[0] = options.next_run_dir(config.options["outdir"], config.desc)
                os.makedirs(holder[0], exist_ok=False)
        torch.distributed.broadcast_object_list(holder, src=0)
        config.run_dir = holder[0]
        training_loop(config, rank=rank, world_size=world, local_rank=local)
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
