"""Convert an official EG3D `.pkl` snapshot to our `.safetensors` format.

    python -m model.convert network-snapshot.pkl out.safetensors [--nets G_ema,G,D] [--fp16]

The pickle is read with the restricted unpickler: none of the code stored in it runs.
"""
from __future__ import annotations

import argparse
import sys

import torch

from . import checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official EG3D .pkl snapshot")
    parser.add_argument("dest", help="output .safetensors path (written atomically)")
    parser.add_argument("--nets", default="G_ema",
                        help="comma-separated networks to keep: G_ema, G, D (default: G_ema)")
    parser.add_argument("--fp16", action="store_true",
                        help="store weights in float16 (half the size; loaded back as float32)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in names if n not in checkpoint.NET_NAMES]
    if bad:
        parser.error(f"unknown network name(s) {bad}; choose from {', '.join(checkpoint.NET_NAMES)}")
    try:
        nets = {name: checkpoint.load(args.source, net=name) for name in names}
    except (checkpoint.CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    checkpoint.save(args.dest, nets, metadata={"converted_from": str(args.source)},
                    dtype=torch.float16 if args.fp16 else None)
    print(f"wrote {args.dest} ({', '.join(names)})")
    for name, net in nets.items():
        note = checkpoint.filled_defaults_note(net)
        if note:
            print(f"{name}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
