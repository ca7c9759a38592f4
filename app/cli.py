"""Command-line exports: `python visualizer.py turntable|interpolate|images|mesh [options]`.

Every subcommand builds a viewer state (`app.state.ViewerState`: the defaults, or `--state
FILE.json|IMAGE.png` saved by the viewer) and applies the flags given on top of it, so the
command line renders exactly what the viewer shows. Examples:

    python visualizer.py turntable --network X --seeds 0-3 --grid 2x2 --frames 120 --fps 30 --out t.mp4
    python visualizer.py interpolate --network X --seeds 0-7 --grid 2x1 --w-frames 60 --out walk.mp4
    python visualizer.py images --network X --seeds 0-5 --yaws 23,0,-23 --pitches -11.5 --out samples/
    python visualizer.py mesh --network X --seeds 0 --res 256 --out m.ply

`--network` also takes a fitted scene (`train.py sso`: scene.safetensors, checkpoint.safetensors
or the run folder): turntables, stills and meshes of it go through the same code (the latent
options are ignored; the mesh level defaults to the scene's surface level). A projection file
(`visualizer.py invert`, `app/invert_cli.py`) works as `--network P.safetensors` or with
`--network X --latent P.safetensors`: its latent is rendered (psi 1 unless --trunc).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from model.cli_errors import Parser, bounded_int, finite_float, run_guarded

COMMANDS = ("turntable", "interpolate", "images", "mesh")

_EXAMPLES = {
    "turntable": """examples:
  %(prog)s --network X --seeds 0-3 --grid 2x2 --frames 120 --fps 30 --out t.mp4
  %(prog)s --state view.json --path sweep --yaw-range 35 --pitch-range 5 --depth-side --out t.mp4
  %(prog)s --seeds 0 --render depth --png-frames --out frames/""",
    "interpolate": """examples:
  %(prog)s --network X --seeds 0-31 --grid 4x2 --w-frames 120 --out walk.mp4
  %(prog)s --seeds 3,9,14 --path 360 --kind linear --no-loop --out walk.mp4""",
    "images": """examples:
  %(prog)s --network X --seeds 0-5 --out samples/                       (one PNG per seed)
  %(prog)s --seeds 0-7 --grid 4x2 --out grid.png                        (one grid image)
  %(prog)s --seeds 0-3 --yaws 23,0,-23 --pitches -11.5 --out samples/   (gen_samples views)
  %(prog)s --state captured.png --out again.png                         (reproduce a viewer view)""",
    "mesh": """examples:
  %(prog)s --network X --seeds 0 --res 256 --out m.ply
  %(prog)s --seeds 0-3 --res 512 --level 10 --formats obj,mrc --out shapes/head.ply""",
}


# Ranges of the numeric options (the boundary where every number is checked once). Angles in
# degrees; the viewer state's own limits (app.state.ViewerState.validate) are the same or wider.
ANGLE = 3600.0            # yaw / yaw range: ten turns either way
PITCH = 90.0
DISTANCE = 100.0          # radius, pivot coordinates: world units
PSI = 2.0                 # truncation psi in [-PSI, PSI]
MAX_SIZE = 8192           # output pixels per view side
MAX_NEURAL_RES = 2048
MAX_SAMPLE_MULT = 16.0
MAX_LIST = 64             # views in --yaws / --pitches


def _floats(count: Optional[int] = None, bound: float = ANGLE):
    """Comma-separated finite numbers within [-bound, bound]; `count` of them if given."""
    def parse(text: str) -> List[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        if count is None and len(values) > MAX_LIST:
            raise argparse.ArgumentTypeError(f"at most {MAX_LIST} values, got {len(values)}")
        if not all(math.isfinite(v) and abs(v) <= bound for v in values):
            raise argparse.ArgumentTypeError(f"values must be finite and within +-{bound:g}, got {text!r}")
        return values
    return parse



def _common_parser() -> argparse.ArgumentParser:
    from app import DEFAULT_MODEL_PATH
    from app.state import COND_MODES, NOISE_MODES
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model and latent")
    g.add_argument("--network", metavar="PATH", default=None,
                   help=f"generator checkpoint: our .safetensors or an official .pkl, or a fitted scene "
                        f"(scene.safetensors or its run folder) (default: {DEFAULT_MODEL_PATH})")
    g.add_argument("--latent", metavar="P.safetensors",
                   help="render this projection (`visualizer.py invert`) instead of seeds; with --network the "
                        "generator it was made with (a PTI projection brings its own)")
    g.add_argument("--device", default="auto", metavar="DEVICE",
                   help="torch device: auto, cpu, cuda, cuda:1 (default auto: cuda when available)")
    g.add_argument("--threads", type=bounded_int(1, 1024), metavar="N", help="torch CPU threads (default: torch's)")
    g.add_argument("--state", metavar="FILE",
                   help="viewer state (.json, or a PNG saved by the viewer / by `images`); the flags "
                        "below override its fields")
    g.add_argument("--seeds", metavar="LIST",
                   help="seeds, e.g. 0-3,7 (default: the state's seed, or 0)")
    g.add_argument("--trunc", type=finite_float(-PSI, PSI), metavar="PSI",
                   help=f"truncation psi in [-{PSI:g}, {PSI:g}] (default 0.7, or the state's)")
    g.add_argument("--trunc-cutoff", type=bounded_int(0, 1024), metavar="N",
                   help="truncate only the first N ws (default: all)")
    g.add_argument("--cond", choices=COND_MODES,
                   help="conditioning pose of the mapping network: frontal (official default), camera "
                        "(follows the render camera; recomputes planes per frame), custom (--cond-yaw/pitch)")
    g.add_argument("--cond-yaw", type=finite_float(-ANGLE, ANGLE), metavar="DEG",
                   help="custom conditioning yaw (degrees from frontal)")
    g.add_argument("--cond-pitch", type=finite_float(-PITCH, PITCH), metavar="DEG",
                   help="custom conditioning pitch (degrees)")
    g.add_argument("--noise-mode", choices=NOISE_MODES, help="synthesis noise (default const)")
    g.add_argument("--out", required=True, metavar="PATH", help="output file or folder")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing output that this tool did not write (never an input)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def parse_render(text: str) -> str:
    """--render: a render type, 'planes[:pca]', or 'layer:NAME[:CHANNEL|:pca|:gridN]' (the
    layer name is checked against the model later)."""
    from app.state import RENDER_TYPES
    from app.state.schema import MAX_FEATURE_CHANNEL, MAX_GRID
    if text in RENDER_TYPES or text in ("planes", "planes:pca"):
        return text
    parts = text.split(":")
    if parts[0] == "layer" and len(parts) in (2, 3) and parts[1]:
        if len(parts) == 3 and view_of(parts[2]) is None:
            raise argparse.ArgumentTypeError(
                f"{text!r}: after the layer name, a channel 0..{MAX_FEATURE_CHANNEL}, 'pca' or 'gridN' "
                f"(N = 1..{MAX_GRID})")
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: one of {', '.join(RENDER_TYPES)}, planes, planes:pca, "
                                     f"or layer:NAME[:CHANNEL|:pca|:gridN]")


def view_of(text: str) -> Optional[dict]:
    """A layer view's third --render field -> the layer state changes it means, or None if bad."""
    from app.state.schema import MAX_FEATURE_CHANNEL, MAX_GRID
    if text.isdigit() and int(text) <= MAX_FEATURE_CHANNEL:
        return dict(layer_mode="channel", layer_channel=int(text))
    if text == "pca":
        return dict(layer_mode="pca")
    count = text[len("grid"):]
    if text.startswith("grid") and count.isdigit() and 1 <= int(count) <= MAX_GRID:
        return dict(layer_mode="grid", layer_grid=int(count))
    return None


def _view_parser(default_sample_mult: Optional[float]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("rendering")
    g.add_argument("--render", type=parse_render, metavar="WHAT",
                   help="what to show: final (super-resolved image), raw (neural render), depth, alpha, "
                        "feature (one channel, --feature-channel), planes (the tri-planes side by side, "
                        "one channel: --feature-channel), planes:pca (their channels as a PCA to RGB), "
                        "layer:NAME[:CHANNEL] (a generator layer's channel, Turbo over its robust range from "
                        "the first frame), layer:NAME:pca (PCA to RGB), layer:NAME:gridN (its first N channels "
                        "tiled); layer names: the viewer's Layers panel or model.introspect.layer_names "
                        "(default final)")
    g.add_argument("--feature-channel", type=bounded_int(0, 4095), metavar="C")
    g.add_argument("--nrr", "--neural-res", dest="nrr", type=bounded_int(4, MAX_NEURAL_RES), metavar="R",
                   help=f"neural rendering resolution override, 4..{MAX_NEURAL_RES}")
    sm = ("default 1" if default_sample_mult is None
          else f"default {default_sample_mult:g} as in the official gen_videos.py, or the state's")
    mult = finite_float(0, MAX_SAMPLE_MULT, lo_open=True)
    g.add_argument("--sample-mult", type=mult, metavar="X",
                   help=f"multiplier of the depth samples per ray, both passes, in (0, {MAX_SAMPLE_MULT:g}] ({sm})")
    g.add_argument("--depth-mult", type=mult, metavar="X", help="stratified samples multiplier only")
    g.add_argument("--importance-mult", type=mult, metavar="X", help="importance samples multiplier only")
    g.add_argument("--stochastic", action="store_true",
                   help="jitter the depth samples as in training (default: deterministic, no shimmer)")
    g.add_argument("--depth-range", type=_floats(2, DISTANCE), metavar="NEAR,FAR",
                   help="depth colour range (default: measured on the first frame, then fixed)")
    g.add_argument("--size", type=bounded_int(2, MAX_SIZE), metavar="PX",
                   help=f"output size of each view, 2..{MAX_SIZE} (default: the render type's native size)")
    g.add_argument("--depth-side", action="store_true", help="show the depth map next to each view")
    c = p.add_argument_group("camera (degrees from the frontal pose; + pitch = camera lower)")
    c.add_argument("--yaw", type=finite_float(-ANGLE, ANGLE), metavar="DEG", help="base yaw (the path is added to it)")
    c.add_argument("--pitch", type=finite_float(-PITCH, PITCH), metavar="DEG", help="base pitch")
    c.add_argument("--radius", type=finite_float(0, DISTANCE, lo_open=True),
                   help="camera distance (default: the model's average)")
    c.add_argument("--fov", type=finite_float(0.1, 170), metavar="DEG",
                   help="EG3D field of view in [0.1, 170] (default: the model's avg_camera_fov, 18.837 for FFHQ)")
    c.add_argument("--pivot", type=_floats(3, DISTANCE), metavar="X,Y,Z", help="look-at point (default: the model's)")
    p.set_defaults(default_sample_mult=default_sample_mult)
    return p


def _video_parser(fps: float) -> argparse.ArgumentParser:
    from app.export import CAMERA_PATHS, CRF_RANGE, FPS_RANGE, X264_PRESETS
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("video")
    g.add_argument("--grid", metavar="COLSxROWS", help="grid of seeds, e.g. 2x2 (default 1x1)")
    g.add_argument("--fps", type=finite_float(FPS_RANGE[0], FPS_RANGE[1], lo_open=True), default=fps,
                   help=f"frames per second (default {fps:g})")
    g.add_argument("--crf", type=finite_float(*CRF_RANGE), default=18,
                   help="x264 quality 0..51, lower = better (default 18)")
    g.add_argument("--bitrate", metavar="RATE", help="fixed bitrate instead of --crf, e.g. 10M (official)")
    g.add_argument("--preset", default="medium", choices=X264_PRESETS, metavar="PRESET",
                   help=f"x264 preset: {', '.join(X264_PRESETS)} (default medium)")
    g.add_argument("--png-frames", action="store_true",
                   help="write lossless PNG frames into the folder --out instead of a video")
    g.add_argument("--path", choices=CAMERA_PATHS,
                   help="camera path: 360 (full turn), sweep (yaw back and forth), orbit (official "
                        "gen_videos ellipse), static")
    g.add_argument("--yaw-range", type=finite_float(-ANGLE, ANGLE), metavar="DEG", help="sweep/orbit yaw amplitude")
    g.add_argument("--pitch-range", type=finite_float(-PITCH, PITCH), metavar="DEG",
                   help="pitch wobble amplitude (360/sweep; orbit: ellipse height)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from app.export import MAX_FRAMES
    parser = Parser(
        prog="visualizer.py", description="EG3D exports: videos, image grids and meshes.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_parser()
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("turntable", parents=[common, _view_parser(2.0), _video_parser(30)], formatter_class=fmt,
                       help="camera turntable video of one seed or a grid of seeds",
                       description="Turntable video: planes computed once per seed, the camera moves.",
                       epilog=_EXAMPLES["turntable"])
    t.add_argument("--frames", type=bounded_int(1, MAX_FRAMES), default=120,
                   help=f"number of frames, at most {MAX_FRAMES} (default 120)")
    t.set_defaults(path_default="360")

    i = sub.add_parser("interpolate", parents=[common, _view_parser(2.0), _video_parser(60)], formatter_class=fmt,
                       help="latent walk through seeds in w while the camera moves",
                       description="Latent-walk video: a smooth (cubic, looping) path through the seeds' "
                                   "ws, per grid cell, as the official gen_videos.py.",
                       epilog=_EXAMPLES["interpolate"])
    i.add_argument("--w-frames", type=bounded_int(1, MAX_FRAMES), default=120,
                   help="frames between keyframes (default 120)")
    i.add_argument("--num-keyframes", type=bounded_int(1, MAX_FRAMES),
                   help="keyframes per cell (default: number of seeds / grid cells)")
    i.add_argument("--shuffle-seed", type=bounded_int(0, 2 ** 32 - 1), help="shuffle the keyframe seeds with this seed")
    i.add_argument("--kind", choices=("cubic", "linear"), default="cubic", help="interpolation (default cubic)")
    i.add_argument("--no-loop", action="store_true", help="end on the last seed instead of looping back")
    i.set_defaults(path_default="orbit")

    m = sub.add_parser("images", parents=[common, _view_parser(None)], formatter_class=fmt,
                       help="PNG stills per seed or as one grid, with metadata",
                       description="PNG stills with metadata (checkpoint hash, seed, camera, psi, state).",
                       epilog=_EXAMPLES["images"])
    m.add_argument("--grid", metavar="COLSxROWS", help="seeds layout of a single .png output (default one row)")
    m.add_argument("--yaws", type=_floats(), metavar="LIST", help="view yaws in degrees, e.g. 23,0,-23")
    m.add_argument("--pitches", type=_floats(bound=PITCH), metavar="LIST", help="view pitches (one value = all views)")
    m.add_argument("--split-views", action="store_true", help="one file per view instead of a strip")

    from app.mesh import MAX_RES, OFFICIAL_TRIM
    s = sub.add_parser("mesh", parents=[common], formatter_class=fmt,
                       help="marching-cubes mesh (.ply/.obj) and density grid (.mrc)",
                       description="Mesh of the density field: N^3 grid over the tri-plane box (chunked), "
                                   "marching cubes at --level, vertex colours from the decoder.",
                       epilog=_EXAMPLES["mesh"])
    s.add_argument("--res", type=bounded_int(2, MAX_RES), default=256,
                   help="grid samples per axis (default 256; official 512); refused up front if the grid "
                        "does not fit in the memory available")
    s.add_argument("--level", type=finite_float(), default=None,
                   help="iso-level of the raw density (default 10, official; a fitted scene's surface_level)")
    s.add_argument("--trim", type=finite_float(0, 0.49), default=None,
                   help=f"border of the box to clear, fraction per face (default {OFFICIAL_TRIM:.4f} = 30/256, "
                        "official; 0 for a fitted scene; 0 keeps everything)")
    s.add_argument("--no-close", action="store_true", help="do not clear the outermost layer (open borders)")
    s.add_argument("--no-color", action="store_true", help="skip vertex colours")
    s.add_argument("--largest", action="store_true", help="keep only the largest connected piece")
    s.add_argument("--formats", metavar="LIST",
                   help="also write these formats next to --out, e.g. obj,mrc (ply, obj, mrc)")
    s.add_argument("--chunk", type=bounded_int(1, 1 << 24), default=1 << 18,
                   help="points per density batch (default 262144)")
    return parser


def build_state(args, view: bool = True):
    """The viewer state of the export: --state (or defaults) with the given flags applied."""
    from app.state import ViewerState
    st = _load_state_file(args.state) if args.state else ViewerState()
    changes = {}
    for flag, field in (("trunc", "trunc_psi"), ("trunc_cutoff", "trunc_cutoff"), ("cond", "cond_mode"),
                        ("cond_yaw", "cond_yaw"), ("cond_pitch", "cond_pitch"), ("noise_mode", "noise_mode")):
        if getattr(args, flag, None) is not None:
            changes[field] = getattr(args, flag)
    if (args.cond_yaw is not None or args.cond_pitch is not None) and args.cond is None:
        changes["cond_mode"] = "custom"
    if view:
        render = getattr(args, "render", None)
        if render in ("planes", "planes:pca"):
            changes.update(planes_show=True, planes_mode="pca" if render == "planes:pca" else "channel")
            if args.feature_channel is not None:
                changes["planes_channel"] = args.feature_channel
            args.render = None
        elif render is not None and render.startswith("layer:"):
            parts = render.split(":")
            changes.update(layer=parts[1], layer_mode="channel")
            if len(parts) == 3:
                changes.update(view_of(parts[2]))
            args.render = None
        for flag, field in (("render", "render_type"), ("feature_channel", "feature_channel"),
                            ("nrr", "neural_res"), ("yaw", "yaw"), ("pitch", "pitch"), ("radius", "radius"),
                            ("fov", "fov"), ("pivot", "pivot"), ("depth_range", "depth_range")):
            if getattr(args, flag, None) is not None:
                changes[field] = getattr(args, flag)
        mult = args.sample_mult
        if mult is None and args.state is None and args.depth_mult is None and args.importance_mult is None:
            mult = args.default_sample_mult
        if mult is not None:
            changes["depth_mult"] = changes["importance_mult"] = float(mult)
        if args.depth_mult is not None:
            changes["depth_mult"] = args.depth_mult
        if args.importance_mult is not None:
            changes["importance_mult"] = args.importance_mult
        if args.stochastic:
            changes["deterministic"] = False
    st = st.copy(**changes)
    try:
        st.validate()
    except ValueError as exc:
        if "layers.name" in str(exc):
            raise ValueError(f"--render {render}: {exc}") from None
        raise
    return st


def _load_state_file(path: str):
    """--state FILE through app.state, with one line naming the file for anything unreadable."""
    from app.state import ViewerState
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--state {path}: is a folder; give a .json state or a PNG saved by the viewer")
    if not p.is_file():
        raise FileNotFoundError(f"--state {path}: no such file")
    from PIL import Image
    try:
        return ViewerState.load(p)
    except (OSError, ValueError, RecursionError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(f"--state {path}: not a viewer state ({reason}); give a .json state or a PNG "
                         "saved by the viewer or by `images`") from None


def load_generator(network: Optional[str], device: str, latent: Optional[str] = None):
    """A generator (model.load) or a fitted scene (model.scene), with a clear message for a
    missing default checkpoint. A projection file (as network or latent) gives its generator
    with the projected latent (`model.projection.ProjectedGenerator`)."""
    from app import DEFAULT_MODEL_PATH
    from app.state import load_model
    from model import projection
    if latent is not None or (network and projection.is_projection(network)):
        source = latent if latent is not None else network
        loaded = projection.load_projection(source, network=network if latent is not None else None,
                                            device=device)
        return loaded.as_generator(), Path(source)
    path = Path(network) if network else Path(DEFAULT_MODEL_PATH)
    if not (path.is_file() or path.is_dir()):
        hint = ("the shipped checkpoint is missing; pass --network PATH (.safetensors or official .pkl)"
                if network is None else "no such file")
        raise FileNotFoundError(f"{path}: {hint}")
    G = load_model(path, device=device)
    return G, path


def run(args) -> List[Path]:
    """Run one export command without autograd (scoped, so in-process callers keep their mode)."""
    import torch
    with torch.no_grad():
        return _run(args)


def _run(args) -> List[Path]:
    from app import export as E
    from app import mesh as M
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    view = args.command != "mesh"
    from model.device import resolve_device
    device = resolve_device(args.device)
    G, network = load_generator(args.network, device, latent=args.latent)
    if getattr(G, "projected_ws", None) is not None:      # a projection is the latent (psi 1, no seeds)
        if args.seeds is not None:
            raise E.ExportError("--seeds cannot be combined with a projection: its latent is the one rendered")
        if args.trunc is None:
            args.trunc = 1.0
    state = build_state(args, view=view)
    channels = getattr(getattr(getattr(G, "cfg", None), "decoder", None), "output_features", None)
    if view and args.feature_channel is not None and channels is not None and args.feature_channel >= channels:
        raise ValueError(f"--feature-channel {args.feature_channel}: the model has {channels} feature channels "
                         f"(0..{channels - 1})")
    if view and state.layers.name is not None:
        from model.introspect import layer_names
        if not getattr(G, "has_latent", False):
            raise ValueError(f"--render layer:{state.layers.name}: a fitted scene has no generator layers")
        names = layer_names(G)
        if state.layers.name not in names:
            raise ValueError(f"--render layer:{state.layers.name}: no such layer; the model has "
                             f"{', '.join(names)}")
    if view and state.planes.show and not getattr(G, "has_latent", False):
        raise ValueError("--render planes: a fitted scene has no tri-planes of a generator")
    out = Path(args.out)
    if args.command in ("turntable", "interpolate") and args.png_frames and out.suffix.lower() in E.VIDEO_SUFFIXES:
        raise E.ExportError(f"--png-frames writes a folder of PNGs; give a folder name, not {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = not args.quiet
    seeds = args.seeds
    guard = dict(network=network, bar=bar, overwrite=args.overwrite, protect=args.state)
    if args.command == "mesh":
        return M.export_mesh(G, args.out, state, seeds, res=args.res, level=args.level, trim=args.trim,
                             close=not args.no_close, color=not args.no_color, largest=args.largest,
                             formats=args.formats.split(",") if args.formats else None, chunk=args.chunk,
                             **guard)
    common = dict(size=args.size, depth_side=args.depth_side, **guard)
    if args.command == "images":
        yaws = args.yaws or [0.0]
        pitches = args.pitches or [0.0]
        if len(pitches) == 1:
            pitches = pitches * len(yaws)
        if len(yaws) == 1:
            yaws = yaws * len(pitches)
        if len(yaws) != len(pitches):
            raise E.ExportError(f"{len(yaws)} yaws but {len(pitches)} pitches")
        return E.export_images(G, args.out, state, seeds, grid=args.grid, views=list(zip(yaws, pitches)),
                               split_views=args.split_views, **common)
    video = E.VideoOptions(fps=args.fps, crf=args.crf, bitrate=args.bitrate, preset=args.preset,
                           png_sequence=True if args.png_frames else None)
    path = args.path or args.path_default
    if args.command == "turntable":
        return E.export_turntable(G, args.out, state, seeds, grid=args.grid, frames=args.frames, path=path,
                                  yaw_range=args.yaw_range, pitch_range=args.pitch_range, video=video, **common)
    return [E.export_interpolation(G, args.out, state, seeds, grid=args.grid, w_frames=args.w_frames,
                                   kind=args.kind, loop=not args.no_loop, path=path, yaw_range=args.yaw_range,
                                   pitch_range=args.pitch_range, num_keyframes=args.num_keyframes,
                                   shuffle_seed=args.shuffle_seed, video=video, **common)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point used by visualizer.py: argv = [COMMAND, options...]."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "invert":
        from app import invert_cli
        return invert_cli.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from app.export import ExportCancelled

    def body() -> int:
        try:
            written = run(args)
        except ExportCancelled:
            print("cancelled: nothing was written under the output name", file=sys.stderr)
            return 130
        for path in written:
            print(path)
        return 0

    previous = _terminate_as_interrupt()
    try:
        return run_guarded(body, debug=args.debug, interrupted="interrupted: nothing was written under the output name")
    finally:
        _restore_sigterm(previous)


def _terminate_as_interrupt():
    """Make SIGTERM (e.g. `kill`, a job scheduler) unwind like Ctrl-C, so the partial output is
    removed. Only possible from the main thread; returns the previous handler."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        return None


def _restore_sigterm(previous) -> None:
    import signal
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
