#!/usr/bin/env python3
"""EG3D viewer and exports.

    python visualizer.py [MODEL] [viewer options]         open the interactive viewer
    python visualizer.py turntable|interpolate|images|mesh [options]   command-line exports
    python visualizer.py invert IMAGE --network X [options]            project an image (GAN inversion)

Run `python visualizer.py --help` or `python visualizer.py SUBCOMMAND --help` for the options.
"""
import sys

EXPORT_COMMANDS = ("turntable", "interpolate", "images", "mesh", "invert")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXPORT_COMMANDS:
        from app import cli
        return cli.main(argv)
    from app import viewer
    return viewer.main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1] in EXPORT_COMMANDS:
        # A command-line export or inversion owns this process, and its frames repeat their
        # sizes. (The viewer's render and inversion processes do the same for themselves; a
        # process that imports app/ as a library keeps its allocator.)
        from model.device import reuse_host_memory
        reuse_host_memory()
    sys.exit(main())
