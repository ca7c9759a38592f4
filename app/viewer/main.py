"""The viewer's command line: `python visualizer.py [MODEL] [options]`."""
from __future__ import annotations

import argparse
import math
import sys

from model.device import DeviceError, resolve_device

from .. import DEFAULT_MODEL_PATH
from .. import state as S
from .window import Viewer

MIN_SIZE, MAX_SIZE = 64, 16384


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="visualizer.py",
        description="Interactive EG3D viewer (glfw + OpenGL + Dear ImGui).\n"
                    "Orbit with the mouse, explore seeds, truncation, style mixing, the conditioning\n"
                    "pose and render types; press F1 in the window for all keyboard shortcuts.\n\n"
                    "Command-line exports: visualizer.py turntable|interpolate|images|mesh --help",
        epilog="examples:\n"
               "  python visualizer.py                          # the shipped checkpoint\n"
               "  python visualizer.py ffhq512-128.pkl --dataset ffhq.zip\n"
               "  python visualizer.py model.safetensors --state view.json\n"
               "  python visualizer.py turntable --state view.json --out turntable.mp4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None,
                   help=f"generator to open: our .safetensors or an official EG3D .pkl, a projection "
                        f"(visualizer.py invert: the generator with that latent), or a fitted "
                        f"scene (train.py sso: scene.safetensors or its run folder) "
                        f"(default: {DEFAULT_MODEL_PATH.relative_to(DEFAULT_MODEL_PATH.parent.parent)} "
                        f"if it exists, else the viewer opens with no model)")
    p.add_argument("--state", metavar="FILE",
                   help="view state to start from: a .json saved by the viewer or a PNG it captured")
    p.add_argument("--seed", type=int, default=None, help="start at this seed (overrides --state)")
    p.add_argument("--dataset", metavar="PATH",
                   help="dataset zip/folder (dataset.json labels) whose camera distribution is shown "
                        "in the pose plot")
    p.add_argument("--device", default="auto",
                   help="torch device for the generator: auto, cpu, cuda, cuda:1 (default auto: cuda if available)")
    p.add_argument("--size", default="1400x860", metavar="WxH", help="window size (default 1400x860)")
    p.add_argument("--font-scale", type=float, default=None,
                   help="UI scale (default: the monitor's content scale, i.e. DPI-aware)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for rendering (default: all cores but one, so the UI "
                        "stays fluid)")
    p.add_argument("--no-vsync", action="store_true", help="do not wait for vertical sync")
    p.add_argument("--screenshot", metavar="PNG",
                   help="render until idle, save a screenshot of the window and exit (for docs/CI)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
        if not (MIN_SIZE <= w <= MAX_SIZE and MIN_SIZE <= h <= MAX_SIZE):
            raise ValueError
    except ValueError:
        print(f"error: --size must be WxH with sides in [{MIN_SIZE}, {MAX_SIZE}], got {args.size!r}", file=sys.stderr)
        return 2
    if args.font_scale is not None and not (math.isfinite(args.font_scale) and 0.25 <= args.font_scale <= 8):
        print(f"error: --font-scale must be in [0.25, 8], got {args.font_scale}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    state = None
    try:
        if args.state:
            state = S.ViewerState.load(args.state)
        if args.seed is not None:
            state = (state or S.ViewerState()).copy(seed=args.seed)
            state.validate()
        device = str(resolve_device(args.device))
    except (S.StateError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_path = args.model
    if model_path is None and state is not None and state.latent.projection is not None:
        model_path = state.latent.projection           # a view of a projection opens that projection
    if model_path is None and DEFAULT_MODEL_PATH.is_file():
        model_path = str(DEFAULT_MODEL_PATH)
    try:
        viewer = Viewer(model_path=model_path, state=state, dataset=args.dataset, device=device,
                        size=(w, h), vsync=not args.no_vsync, font_scale=args.font_scale,
                        threads=args.threads)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if model_path is None:
        viewer.ctx.missing_default = str(DEFAULT_MODEL_PATH)
        viewer.ctx.settings.model_path = str(DEFAULT_MODEL_PATH)
    if args.screenshot:
        viewer.run_until_idle(timeout=300)
        for _ in range(3):
            viewer.step()
        viewer.save_window(args.screenshot)
        viewer.step()
        viewer.close()
        print(f"wrote {args.screenshot}")
        return 0
    viewer.run()
    return 0
