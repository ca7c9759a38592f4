"""Convert an official EG3D `.pkl` snapshot to our `.safetensors` format.

    python -m model.convert network-snapshot.pkl out.safetensors [--nets G_ema,G,D] [--fp16] [--overwrite]

The pickle is read with the restricted unpickler: none of the code stored in it runs. An existing
out.safetensors is replaced only if this tool wrote it (or with --overwrite); never the source.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import checkpoint
from .cli_errors import Parser, add_debug_flag, run_guarded
from .output import check_replace


def is_converted_checkpoint(path: Path) -> bool:
    """A checkpoint this tool wrote (our format with `converted_from` in its header)."""
    try:
        return "converted_from" in checkpoint.read_metadata(path)
    except (checkpoint.CheckpointError, OSError):
        return False


def main(argv=None) -> int:
    parser = Parser(prog="python -m model.convert", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official EG3D .pkl snapshot")
    parser.add_argument("dest", help="output .safetensors path (written atomically)")
    parser.add_argument("--nets", default="G_ema",
                        help="comma-separated networks to keep: G_ema, G, D (default: G_ema)")
    parser.add_argument("--fp16", action="store_true",
                        help="store weights in float16 (half the size; loaded back as float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dest that this tool did not write (never the source)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in names if n not in checkpoint.NET_NAMES]
    if bad:
        parser.error(f"unknown network name(s) {bad}; choose from {', '.join(checkpoint.NET_NAMES)}")

    def body() -> int:
        check_replace(args.dest, args.overwrite, is_converted_checkpoint, protect=[args.source], what="checkpoint")
        nets = {name: checkpoint.load(args.source, net=name) for name in names}
        checkpoint.save(args.dest, nets, metadata={"converted_from": str(args.source)},
                        dtype=torch.float16 if args.fp16 else None)
        print(f"wrote {args.dest} ({', '.join(names)})")
        for name, net in nets.items():
            note = checkpoint.filled_defaults_note(net)
            if note:
                print(f"{name}: {note}")
        return 0
    return run_guarded(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
