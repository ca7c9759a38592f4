#!/usr/bin/env python3
"""Train an EG3D tri-plane GAN. Accepts the official EG3D train.py options.

    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip --gpus=8 --batch=32 --gamma=1
    python train.py --cfg=tiny --data=syn32.zip --kimg=1 --device=cpu
    python train.py --resume=training-runs/00000-tiny-syn32-gpus1-batch4-gamma1     # continue exactly
    python train.py --cfg=ffhq --data=FFHQ_512.zip --dry-run                       # print the config
    python train.py monitor training-runs/00000-tiny-syn32-gpus1-batch4-gamma1     # watch runs
    python train.py sso --data=scene.zip --repr=triplane --cpu-scale                # single-scene fitting

`--gpus N` (N > 1) starts N processes itself (one per GPU; CPU processes with gloo when there is
no CUDA), or with `--launcher=torchrun` prints the equivalent torchrun command; running this
script under torchrun works too. Ctrl-C (or SIGTERM) stops after the current step, writes a
snapshot and exits with 130 (143). Errors are one line `error: ...` (exit 2: the command line or an
input file, refused before anything starts; 1: a failure once training has started); `--debug`
shows the traceback.
Run `python train.py --help` for every option.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import tempfile
import traceback
from typing import List, Optional

REPO = os.path.dirname(os.path.abspath(__file__))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 128 + signal.SIGINT
SUBCOMMANDS = ("monitor: watch training runs: curves, sample grids, snapshots (python train.py monitor --help)",
               "sso:     single-scene fitting: tri-plane vs. voxel grid vs. implicit MLP (python train.py sso --help)")


def _under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "LOCAL_RANK" in os.environ


def torchrun_command(argv: List[str], gpus: int) -> str:
    args = []
    skip = False
    for a in argv:
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


def _error(message: str, code: int, debug: bool = False) -> int:
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sso":
        from training import sso
        return sso.main(argv[1:])
    if argv and argv[0] == "monitor":
        from training import monitor
        return monitor.main(argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        from training import options
        options.build_parser().print_help()
        print("\nsubcommands:\n" + "\n".join("  " + s for s in SUBCOMMANDS))
        return 0
    debug = "--debug" in argv
    try:
        return _main(argv, debug)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED, debug)


def _main(argv: List[str], debug: bool) -> int:
    from model.checkpoint import CheckpointError
    from training import options, run_dir
    from training.dataset import DatasetError
    from training.loop import TrainingError

    try:
        explicit = options.parse_args(argv)
    except options.OptionsError as exc:
        return _error(f"{exc} (run `python train.py --help` for the options)", EXIT_USAGE, debug)

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
        path, exists = run_dir.choose_run_dir(config)
        if not exists:
            run_dir.check_writable(config.options.outdir)
    except (options.OptionsError, DatasetError, CheckpointError, run_dir.RunDirError) as exc:
        return _error(str(exc), EXIT_USAGE, debug)

    if config.options.dry_run:
        config.run_dir = path + ("" if exists else " (not created)")
        print(options.format_config(config))
        print("\nDry run; exiting.")
        return 0

    config.run_dir = path          # created by the loop once the networks and the resume file have loaded
    try:
        if torchrun:
            return _run_torchrun(config)
        if config.num_gpus == 1:
            from training.loop import training_loop
            return _exit_code(training_loop(config))
        return _spawn(config)
    except (TrainingError, DatasetError, CheckpointError) as exc:
        return _error(str(exc), EXIT_RUNTIME, debug)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _error(f"{where}{exc.strerror or exc}", EXIT_RUNTIME, debug)


def _spawn(config) -> int:
    import torch
    import torch.multiprocessing as mp
    from training.loop import resolve_device, spawn_worker

    n = config.num_gpus
    if resolve_device(config.device).type == "cuda" and n > torch.cuda.device_count():
        return _error(f"--gpus={n} but only {torch.cuda.device_count()} CUDA device(s) are visible", EXIT_USAGE)
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
            return _error(f"a training process exited with code {exc.exit_code} (see its message above)", EXIT_RUNTIME)
        except mp.ProcessRaisedException as exc:
            return _error(f"a training process failed: {str(exc).strip().splitlines()[-1]}", EXIT_RUNTIME)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    return 128 + notified[0] if notified else 0


def _exit_code(result) -> int:
    """0, or 128 + the signal that stopped training after its snapshot (130 for Ctrl-C), as shells do."""
    if not result["aborted"]:
        return 0
    return 128 + (result.get("signal") or signal.SIGINT)


def _run_torchrun(config) -> int:
    import torch
    from training.loop import init_distributed, leave_distributed, training_loop

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    init_distributed(rank, world, "env://", config.device, local_rank=local)
    clean = False
    try:
        holder = [config.run_dir]
        torch.distributed.broadcast_object_list(holder, src=0)        # rank 0's choice of folder
        config.run_dir = holder[0]
        result = training_loop(config, rank=rank, world_size=world, local_rank=local)
        clean = True
    finally:
        leave_distributed(clean)
    return _exit_code(result)


def _entry() -> int:
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:              # `train.py --help | head`: the reader left; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(_entry())
