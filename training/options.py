"""The train.py command line and its resolution into one `TrainingConfig`.

Every option of the official EG3D train.py is accepted under its official name (mixed dashes and
underscores as there; the other spelling is accepted too), `--opt=value` or `--opt value`,
booleans as true/false/1/0/yes/no. Unknown options are an error, abbreviations are not accepted.
Options left out take the `--cfg` preset's default, else the official default. When continuing
a run (`--resume` of one of our snapshots or run directories) left-out options take the values
the run was started with, so `python train.py --resume RUN_DIR` is enough.

`resolve(...)` opens (and validates) the dataset, scales the preset to its resolution and
returns the `TrainingConfig` the loop runs; `--dry-run` prints it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from model.config import SR_MODULES, to_dict

from . import presets as training_presets


class OptionsError(ValueError):
    """A bad or inconsistent command line; the message names the option."""


# ------------------------------------------------------------------------------------ options
@dataclass
class TrainOptions:
    # Official train.py options (official defaults; None = the --cfg preset decides).
    outdir: str = "training-runs"
    cfg: Optional[str] = None
    data: Optional[str] = None
    gpus: int = 1
    batch: Optional[int] = None
    gamma: Optional[float] = None
    cond: bool = True
    mirror: bool = False
    aug: str = "noaug"
    resume: Optional[str] = None
    freezed: int = 0
    p: float = 0.2
    target: float = 0.6
    batch_gpu: Optional[int] = None
    cbase: Optional[int] = None
    cmax: Optional[int] = None
    glr: Optional[float] = None
    dlr: float = 0.002
    map_depth: Optional[int] = None
    mbstd_group: int = 4
    desc: Optional[str] = None
    metrics: List[str] = field(default_factory=list)
    kimg: float = 25000
    tick: float = 4
    snap: int = 50
    seed: int = 0
    nobench: bool = False
    workers: int = 3
    dry_run: bool = False
    neural_rendering_resolution_initial: Optional[int] = None
    neural_rendering_resolution_final: Optional[int] = None
    neural_rendering_resolution_fade_kimg: float = 1000
    blur_fade_kimg: float = 200
    gen_pose_cond: bool = False
    c_scale: float = 1.0
    c_noise: float = 0.0
    gpc_reg_prob: float = 0.5
    gpc_reg_fade_kimg: float = 1000
    disc_c_noise: float = 0.0
    sr_noise_mode: str = "none"
    resume_blur: bool = False
    sr_num_fp16_res: Optional[int] = None
    g_num_fp16_res: Optional[int] = None
    d_num_fp16_res: Optional[int] = None
    sr_first_cutoff: int = 2
    sr_first_stopband: float = 2 ** 2.1
    style_mixing_prob: float = 0.0
    sr_module: Optional[str] = None
    density_reg: float = 0.25
    density_reg_every: int = 4
    density_reg_p_dist: float = 0.004
    reg_type: str = "l1"
    decoder_lr_mul: float = 1.0
    # Our additions.
    device: str = "auto"
    launcher: str = "spawn"
    resume_mode: str = "auto"
    grid: Optional[Tuple[int, int]] = None
    tf32: bool = True
    grad_scaler: bool = True
    blur_init_sigma: float = 10.0
    ema_kimg: Optional[float] = None
    ema_rampup: Optional[float] = 0.05
    r1_interval: int = 16
    ada_interval: int = 4
    ada_kimg: float = 500
    threads: Optional[int] = None
    progress: bool = True
    image_snap: Optional[int] = None
    inception: Optional[str] = None
    metrics_images: Optional[int] = None
    # Not an option: set when a run was started by fine-tuning (kept when it is continued).
    finetuned_from: Optional[str] = None


# Options that describe one invocation rather than the run (never taken from a snapshot).
PER_INVOCATION = ("resume", "dry_run", "launcher", "resume_mode", "progress", "device", "outdir")


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false/1/0/yes/no), got {text!r}")


def parse_metrics(text: str) -> List[str]:
    if text is None or text.strip().lower() in ("", "none"):
        return []
    return [m.strip() for m in text.split(",") if m.strip()]


def parse_grid(text: str) -> Tuple[int, int]:
    """The exports' grid parser (`app.export.parse_grid`) as an argparse type."""
    from app.export import ExportError
    from app.export import parse_grid as parse
    try:
        return parse(text)
    except ExportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_optional_float(text: str) -> Optional[float]:
    return None if str(text).strip().lower() in ("none", "") else float(text)


def _other_spelling(flag: str) -> Optional[str]:
    body = flag[2:]
    alt = body.replace("-", "_") if "-" in body else body.replace("_", "-")
    return None if alt == body else "--" + alt


# (flag as in the official train.py, dest, type, metavar, help)
_OFFICIAL = [
    ("--outdir", "outdir", str, "DIR", "where to make the run directory [default: training-runs]"),
    ("--cfg", "cfg", str, "NAME", "preset: " + ", ".join(training_presets.PRESETS)),
    ("--data", "data", str, "[ZIP|DIR]", "training data (EG3D zip or folder with dataset.json)"),
    ("--gpus", "gpus", int, "INT", "number of processes (GPUs; CPU processes without CUDA) [default: 1]"),
    ("--batch", "batch", int, "INT", "total batch size [default: preset]"),
    ("--gamma", "gamma", float, "FLOAT", "R1 regularisation weight [default: preset]"),
    ("--cond", "cond", parse_bool, "BOOL", "train a conditional model (must be true: EG3D needs cameras)"),
    ("--mirror", "mirror", parse_bool, "BOOL", "enable dataset x-flips (mirrors the cameras too) [default: false]"),
    ("--aug", "aug", str, "noaug|ada|fixed", "augmentation mode [default: noaug]"),
    ("--resume", "resume", str, "PATH", "resume: our snapshot or run directory (continues exactly) or an "
                                         "official .pkl (fine-tunes)"),
    ("--freezed", "freezed", int, "INT", "freeze the first layers of D [default: 0]"),
    ("--p", "p", float, "FLOAT", "augmentation probability for --aug=fixed [default: 0.2]"),
    ("--target", "target", float, "FLOAT", "ADA target value for --aug=ada [default: 0.6]"),
    ("--batch-gpu", "batch_gpu", int, "INT", "limit the batch size per GPU (gradient accumulation)"),
    ("--cbase", "cbase", int, "INT", "capacity multiplier [default: preset]"),
    ("--cmax", "cmax", int, "INT", "max. feature maps [default: preset]"),
    ("--glr", "glr", float, "FLOAT", "G learning rate [default: 0.0025]"),
    ("--dlr", "dlr", float, "FLOAT", "D learning rate [default: 0.002]"),
    ("--map-depth", "map_depth", int, "INT", "mapping network depth [default: preset, 2]"),
    ("--mbstd-group", "mbstd_group", int, "INT", "minibatch std group size [default: 4]"),
    ("--desc", "desc", str, "STR", "string to include in the run directory name"),
    ("--metrics", "metrics", parse_metrics, "[NAME|A,B,C|none]", "quality metrics [default: none]"),
    ("--kimg", "kimg", float, "KIMG", "total training duration [default: 25000, preset]"),
    ("--tick", "tick", float, "KIMG", "how often to print progress [default: 4, preset]"),
    ("--snap", "snap", int, "TICKS", "how often to save snapshots [default: 50, preset]"),
    ("--seed", "seed", int, "INT", "random seed [default: 0]"),
    ("--nobench", "nobench", parse_bool, "BOOL", "disable cuDNN benchmarking [default: false]"),
    ("--workers", "workers", int, "INT", "DataLoader worker processes (0 = in the main process) [default: 3]"),
    ("--neural_rendering_resolution_initial", "neural_rendering_resolution_initial", int, "INT",
     "resolution to render at [default: 64; tiny/synthetic: half the image size]"),
    ("--neural_rendering_resolution_final", "neural_rendering_resolution_final", int, "INT",
     "final resolution to render at, if blending"),
    ("--neural_rendering_resolution_fade_kimg", "neural_rendering_resolution_fade_kimg", float, "KIMG",
     "kimg to blend the resolution over [default: 1000]"),
    ("--blur_fade_kimg", "blur_fade_kimg", float, "KIMG", "blur over how many kimg, at batch 32 (scaled by "
                                                           "batch/32 as official) [default: 200]"),
    ("--gen_pose_cond", "gen_pose_cond", parse_bool, "BOOL", "enable generator pose conditioning [default: false]"),
    ("--c-scale", "c_scale", float, "FLOAT", "scale factor for generator pose conditioning [default: 1]"),
    ("--c-noise", "c_noise", float, "FLOAT", "accepted for compatibility; unused, as in the official code"),
    ("--gpc_reg_prob", "gpc_reg_prob", float, "FLOAT", "swapping probability of GPC [default: 0.5]"),
    ("--gpc_reg_fade_kimg", "gpc_reg_fade_kimg", float, "KIMG", "length of the swapping prob fade [default: 1000]"),
    ("--disc_c_noise", "disc_c_noise", float, "FLOAT", "D pose-conditioning noise, in std devs [default: 0]"),
    ("--sr_noise_mode", "sr_noise_mode", str, "random|none", "noise in the super-resolution layers [default: none]"),
    ("--resume_blur", "resume_blur", parse_bool, "BOOL", "blur (and fade GPC) even when fine-tuning [default: false]"),
    ("--sr_num_fp16_res", "sr_num_fp16_res", int, "INT", "fp16 layers in super-resolution [default: 4]"),
    ("--g_num_fp16_res", "g_num_fp16_res", int, "INT", "fp16 resolutions in the G backbone [default: 0]"),
    ("--d_num_fp16_res", "d_num_fp16_res", int, "INT", "fp16 resolutions in D [default: 4]"),
    ("--sr_first_cutoff", "sr_first_cutoff", int, "INT", "accepted for compatibility (alias-free SR only)"),
    ("--sr_first_stopband", "sr_first_stopband", float, "FLOAT", "accepted for compatibility (alias-free SR only)"),
    ("--style_mixing_prob", "style_mixing_prob", float, "FLOAT", "style-mixing probability [default: 0]"),
    ("--sr-module", "sr_module", str, "NAME", "super-resolution module override"),
    ("--density_reg", "density_reg", float, "FLOAT", "density regularisation strength [default: 0.25]"),
    ("--density_reg_every", "density_reg_every", int, "INT", "lazy density regularisation interval [default: 4]"),
    ("--density_reg_p_dist", "density_reg_p_dist", float, "FLOAT", "perturbation distance [default: 0.004]"),
    ("--reg_type", "reg_type", str, "l1", "density regularisation type (only l1) [default: l1]"),
    ("--decoder_lr_mul", "decoder_lr_mul", float, "FLOAT", "decoder learning rate multiplier [default: 1]"),
]

_OURS = [
    ("--device", "device", str, "auto|cpu|cuda", "where to train [default: cuda if available]"),
    ("--launcher", "launcher", str, "spawn|torchrun", "--gpus > 1: spawn the processes here, or print the "
                                                      "torchrun command line [default: spawn]"),
    ("--resume-mode", "resume_mode", str, "auto|continue|finetune",
     "continue = same run, exact state; finetune = new run from the weights [default: auto]"),
    ("--grid", "grid", parse_grid, "WxH", "sample grid size [default: preset, official size]"),
    ("--tf32", "tf32", parse_bool, "BOOL", "allow TF32 matmul/conv on CUDA [default: true]"),
    ("--grad-scaler", "grad_scaler", parse_bool, "BOOL", "dynamic loss scaling where fp16 layers run [default: true]"),
    ("--blur-init-sigma", "blur_init_sigma", float, "FLOAT", "initial D blur sigma [default: 10, as official]"),
    ("--ema-kimg", "ema_kimg", float, "KIMG", "G_ema half-life [default: batch * 10 / 32]"),
    ("--ema-rampup", "ema_rampup", parse_optional_float, "FLOAT|none", "G_ema ramp-up [default: 0.05]"),
    ("--r1-interval", "r1_interval", int, "INT", "lazy R1 interval [default: 16]"),
    ("--ada-interval", "ada_interval", int, "INT", "ADA adjustment interval, steps [default: 4]"),
    ("--ada-kimg", "ada_kimg", float, "KIMG", "ADA speed: kimg for p to change by 1 [default: 500; 100 fine-tuning]"),
    ("--threads", "threads", int, "INT", "CPU threads per process [default: cores / processes]"),
    ("--progress", "progress", parse_bool, "BOOL", "show a progress bar [default: true]"),
    ("--image-snap", "image_snap", int, "TICKS", "how often to save sample grids [default: --snap]"),
    ("--inception", "inception", str, "PATH", "Inception-v3 weights for FID/KID --metrics (see training/inception.py)"),
    ("--metrics-images", "metrics_images", int, "INT", "override the image count of every --metrics entry"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # raise instead of exiting, so callers decide
        raise OptionsError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="train.py", allow_abbrev=False, argument_default=argparse.SUPPRESS,
                     description="Train an EG3D tri-plane GAN (official train.py options).",
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    official = parser.add_argument_group("official EG3D options")
    for flag, dest, typ, metavar, help_text in _OFFICIAL:
        flags = [flag] + ([_other_spelling(flag)] if _other_spelling(flag) else [])
        official.add_argument(*flags, dest=dest, type=typ, metavar=metavar, help=help_text)
    official.add_argument("-n", "--dry-run", "--dry_run", dest="dry_run", action="store_true",
                          help="print the resolved training configuration and exit")
    ours = parser.add_argument_group("additional options")
    for flag, dest, typ, metavar, help_text in _OURS:
        flags = [flag] + ([_other_spelling(flag)] if _other_spelling(flag) else [])
        ours.add_argument(*flags, dest=dest, type=typ, metavar=metavar, help=help_text)
    return parser


EXAMPLES = """examples:
  # the official commands work as written, e.g. FFHQ from scratch on 8 GPUs:
  python train.py --outdir=~/training-runs --cfg=ffhq --data=~/datasets/FFHQ_512.zip \\
    --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True
  # a tiny CPU run on a synthetic dataset:
  python -m training.synthetic --dest data/syn32.zip --count 64 --resolution 32
  python train.py --cfg=tiny --data=data/syn32.zip --kimg=1 --device=cpu
  # continue a run exactly (or after a kill), or fine-tune official weights:
  python train.py --resume=training-runs/00000-tiny-syn32-gpus1-batch4-gamma1
  python train.py --cfg=ffhq --data=mydata.zip --resume=ffhq512-128.pkl --gamma=5
  # print the resolved configuration, or the torchrun line for 2 GPUs:
  python train.py --cfg=ffhq --data=ffhq.zip --dry-run
  python train.py --cfg=ffhq --data=ffhq.zip --gpus=2 --launcher=torchrun
"""


def parse_args(argv: Optional[List[str]]) -> Dict[str, Any]:
    """The explicitly given options only, {dest: value}."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    return vars(ns)


# ------------------------------------------------------------------------------------ resume
@dataclass
class ResumeInfo:
    path: str                         # the snapshot file
    kind: str                         # 'ours' | 'pkl'
    has_state: bool                   # our snapshot with training state (counters, optimisers)
    metadata: Dict[str, str] = field(default_factory=dict)
    run_dir: Optional[str] = None     # the run directory the snapshot belongs to, if any

    @property
    def options(self) -> Optional[Dict[str, Any]]:
        text = self.metadata.get("training_options")
        return json.loads(text) if text else None


LATEST = "latest"


def find_snapshot(path: str) -> str:
    """A snapshot file from a snapshot path, a run directory or its `latest` pointer."""
    p = Path(os.path.expanduser(path))
    if p.is_dir():
        p = p / LATEST
        if not p.exists():
            raise OptionsError(f"--resume={path}: the directory has no '{LATEST}' pointer (no snapshot written yet?)")
    if p.name == LATEST and p.is_file():
        target = p.read_text().strip()
        if not target:
            raise OptionsError(f"--resume={path}: empty '{LATEST}' pointer")
        p = p.parent / target
    if not p.exists():
        raise OptionsError(f"--resume={path}: no such file: {p}")
    return str(p)


def inspect_resume(path: str) -> ResumeInfo:
    import model
    from model.checkpoint import _sniff

    snapshot = find_snapshot(path)
    kind = _sniff(snapshot)
    if kind == "pickle":
        return ResumeInfo(snapshot, "pkl", False)
    if kind != "safetensors":
        raise OptionsError(f"--resume={path}: {snapshot} is neither our .safetensors snapshot nor an official .pkl")
    meta = model.read_metadata(snapshot)
    run_dir = os.path.dirname(os.path.abspath(snapshot))
    if not os.path.exists(os.path.join(run_dir, "training_options.json")):
        run_dir = None
    return ResumeInfo(snapshot, "ours", "training_state" in meta, dict(meta), run_dir)


# ------------------------------------------------------------------------------------ config
@dataclass
class TrainingConfig:
    """Everything the loop needs; JSON-serialisable (training_options.json, snapshot metadata)."""
    options: Dict[str, Any]
    cfg: str
    data: str
    dataset_name: str
    dataset_size: int
    resolution: int
    mirror: bool
    num_gpus: int
    batch_size: int
    batch_gpu: int
    device: str
    G: Dict[str, Any]
    D: Dict[str, Any]
    loss: Dict[str, Any]
    G_opt: Dict[str, Any]
    D_opt: Dict[str, Any]
    G_reg_interval: Optional[int]
    D_reg_interval: Optional[int]
    ema_kimg: float
    ema_rampup: Optional[float]
    augment: Optional[Dict[str, Any]]
    total_kimg: float
    kimg_per_tick: float
    image_snapshot_ticks: int
    network_snapshot_ticks: int
    random_seed: int
    workers: int
    metrics: List[str]
    cudnn_benchmark: bool
    tf32: bool
    grad_scaler: bool
    grid: Tuple[int, int]
    threads: Optional[int]
    progress: bool
    inception: Optional[str] = None
    metrics_images: Optional[int] = None
    resume: Optional[Dict[str, Any]] = None
    run_dir: Optional[str] = None
    desc: str = ""
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainingConfig":
        data = dict(data)
        data["grid"] = tuple(data["grid"])
        return cls(**data)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise OptionsError(f"--{name}: invalid choice {value!r} (choose from {', '.join(map(str, choices))})")


def _at_least(name: str, value, minimum, flag: Optional[str] = None) -> None:
    if value is not None and not math.isfinite(value):
        raise OptionsError(f"--{flag or name}: must be a finite number, got {value}")
    if value is not None and value < minimum:
        raise OptionsError(f"--{flag or name}: must be >= {minimum}, got {value}")


def merge_options(explicit: Dict[str, Any], resume: Optional[ResumeInfo], mode: str) -> TrainOptions:
    """Preset defaults < (when continuing) the run's own options < the explicit command line."""
    opts = TrainOptions()
    base: Dict[str, Any] = {}
    if mode == "continue" and resume is not None and resume.options:
        base = {k: v for k, v in resume.options.items() if k not in PER_INVOCATION}
    cfg = explicit.get("cfg", base.get("cfg"))
    if cfg is None:
        raise OptionsError("--cfg is required (one of " + ", ".join(training_presets.PRESETS) + ")")
    preset = training_presets.get(cfg)
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    for key, value in preset.defaults.items():
        setattr(opts, key, value)
    for source in (base, explicit):
        for key, value in source.items():
            if key not in names:
                raise OptionsError(f"unknown option {key!r} in the resumed run's options")
            setattr(opts, key, value)
    if isinstance(opts.grid, list):
        opts.grid = tuple(opts.grid)
    return opts


def resume_mode(explicit: Dict[str, Any], resume: Optional[ResumeInfo]) -> Optional[str]:
    if resume is None:
        return None
    mode = explicit.get("resume_mode", "auto")
    _choice("resume-mode", mode, ("auto", "continue", "finetune"))
    if mode == "auto":
        mode = "continue" if resume.kind == "ours" and resume.has_state else "finetune"
    if mode == "continue" and not (resume.kind == "ours" and resume.has_state):
        raise OptionsError(f"--resume-mode=continue: {resume.path} has no training state "
                           "(an official .pkl or a weights-only file); use --resume-mode=finetune")
    return mode


def official_grid(resolution: int) -> Tuple[int, int]:
    gw = int(min(max(7680 // resolution, 7), 32))
    gh = int(min(max(4320 // resolution, 4), 32))
    return gw, gh


def resolve(explicit: Dict[str, Any], dataset_info: Optional[Dict[str, Any]] = None) -> TrainingConfig:
    """Command line -> TrainingConfig. Opens and validates the dataset and the resume file.

    dataset_info (resolution, size, name): use these instead of opening --data (benchmarks).
    """
    resume = inspect_resume(explicit["resume"]) if explicit.get("resume") else None
    mode = resume_mode(explicit, resume)
    o = merge_options(explicit, resume, mode)
    notes: List[str] = []
    preset = training_presets.get(o.cfg)

    # -- validation of single options (official ranges)
    _choice("aug", o.aug, ("noaug", "ada", "fixed"))
    _choice("sr_noise_mode", o.sr_noise_mode, ("random", "none"))
    _choice("reg_type", o.reg_type, ("l1", "l1-alt", "monotonic-detach", "monotonic-fixed", "total-variation"))
    _choice("device", o.device, ("auto", "cpu", "cuda"))
    _choice("launcher", o.launcher, ("spawn", "torchrun"))
    if o.reg_type != "l1":
        raise OptionsError(f"--reg_type={o.reg_type}: only 'l1' (the official default) is implemented")
    for name in ("gpus", "batch", "batch_gpu", "cbase", "cmax", "map_depth", "mbstd_group", "snap",
                 "density_reg_every", "r1_interval", "ada_interval"):
        _at_least(name, getattr(o, name), 1, name.replace("_", "-") if name in ("batch_gpu", "map_depth", "mbstd_group") else None)
    for name in ("gamma", "glr", "dlr", "freezed", "seed", "workers", "c_scale", "c_noise", "gpc_reg_prob",
                 "gpc_reg_fade_kimg", "disc_c_noise", "density_reg", "density_reg_p_dist", "decoder_lr_mul",
                 "neural_rendering_resolution_fade_kimg", "blur_init_sigma", "sr_num_fp16_res",
                 "g_num_fp16_res", "d_num_fp16_res", "ada_kimg"):
        _at_least(name, getattr(o, name), 0)
    _at_least("blur_fade_kimg", o.blur_fade_kimg, 0)
    for name in ("p", "target", "style_mixing_prob", "gpc_reg_prob"):
        if not 0 <= getattr(o, name) <= 1:
            raise OptionsError(f"--{name}: must be in [0, 1], got {getattr(o, name)}")
    if o.kimg <= 0 or o.tick <= 0:
        raise OptionsError("--kimg and --tick must be > 0")
    if not o.cond:
        raise OptionsError("--cond=False: EG3D renders from the camera labels, so training is always conditional")
    if o.data is None:
        raise OptionsError("--data is required (an EG3D dataset: zip or folder with dataset.json)")
    if o.c_noise:
        notes.append("--c-noise has no effect (unused by the official code as well)")
    if o.sr_first_cutoff != 2 or abs(o.sr_first_stopband - 2 ** 2.1) > 1e-9:
        notes.append("--sr_first_cutoff/--sr_first_stopband only affect alias-free SR modules; ignored")

    # -- dataset
    data = os.path.expanduser(o.data)
    if dataset_info is None:
        from .dataset import ImageFolderDataset
        ds = ImageFolderDataset(data, xflip=o.mirror, random_seed=o.seed)
        resolution, size, name, channels = ds.resolution, len(ds), ds.name, ds.num_channels
        label_dim = ds.label_dim
    else:
        resolution, size = int(dataset_info["resolution"]), int(dataset_info.get("size", 0))
        name, channels, label_dim = dataset_info.get("name", Path(data).stem), 3, 25
    if label_dim != 25:
        raise OptionsError(f"--data={o.data}: labels have {label_dim} values; EG3D needs 25 (cam2world 16 + intrinsics 9)")
    if channels != 3:
        raise OptionsError(f"--data={o.data}: images have {channels} channel(s); EG3D trains on RGB images")
    if resolution < 8 or resolution & (resolution - 1):
        raise OptionsError(f"--data={o.data}: image resolution {resolution} is not a power of two >= 8")

    # -- batch
    batch = o.batch
    if batch is None:
        raise OptionsError("--batch is required")
    batch_gpu = o.batch_gpu or batch // o.gpus
    if batch % o.gpus != 0:
        raise OptionsError(f"--batch={batch} must be a multiple of --gpus={o.gpus}")
    if batch_gpu < 1 or batch % (o.gpus * batch_gpu) != 0:
        raise OptionsError(f"--batch={batch} must be a multiple of --gpus times --batch-gpu ({o.gpus} x {batch_gpu})")
    if batch_gpu < o.mbstd_group:
        raise OptionsError(f"--batch-gpu={batch_gpu} cannot be smaller than --mbstd-group={o.mbstd_group}")
    if o.gamma is None:
        raise OptionsError("--gamma is required")

    # -- networks
    G, D = training_presets.base_configs(preset)
    G.img_resolution = D.img_resolution = resolution
    G.c_dim = D.c_dim = 25
    if o.cbase is not None:
        G.backbone.channel_base = D.channel_base = o.cbase
    if o.cmax is not None:
        G.backbone.channel_max = D.channel_max = o.cmax
    if o.map_depth is not None:
        G.mapping.num_layers = o.map_depth
    g16 = G.backbone.num_fp16_res if o.g_num_fp16_res is None else o.g_num_fp16_res
    d16 = D.num_fp16_res if o.d_num_fp16_res is None else o.d_num_fp16_res
    sr16 = G.superres.num_fp16_res if o.sr_num_fp16_res is None else o.sr_num_fp16_res
    o.g_num_fp16_res, o.d_num_fp16_res, o.sr_num_fp16_res = g16, d16, sr16
    G.backbone.num_fp16_res, G.backbone.conv_clamp = g16, (256 if g16 > 0 else None)
    D.num_fp16_res, D.conv_clamp = d16, (256 if d16 > 0 else None)
    G.superres.num_fp16_res = sr16
    G.superres.noise_mode = o.sr_noise_mode
    if o.sr_module:
        module = o.sr_module.split(".")[-1]
        if module not in SR_MODULES:
            raise OptionsError(f"--sr-module={o.sr_module}: unknown; choose one of {', '.join(SR_MODULES)}")
    else:
        module, warning = training_presets.sr_module_for(preset, resolution)
        if warning:
            notes.append(warning)
    G.superres.module = module
    G.c_gen_conditioning_zero = not o.gen_pose_cond
    G.c_scale = o.c_scale
    G.decoder.lr_multiplier = o.decoder_lr_mul
    G.regularization.gpc_reg_prob = o.gpc_reg_prob if o.gen_pose_cond else None
    G.regularization.density_reg = o.density_reg
    G.regularization.density_reg_p_dist = o.density_reg_p_dist
    G.regularization.reg_type = o.reg_type
    D.disc_c_noise = o.disc_c_noise
    D.mbstd_group_size = o.mbstd_group
    D.freeze_layers = o.freezed

    nrr_initial = o.neural_rendering_resolution_initial
    if nrr_initial is None:
        nrr_initial = resolution // 2 if preset.nrr_rule == "half" else 64
    o.neural_rendering_resolution_initial = nrr_initial
    _at_least("neural_rendering_resolution_initial", nrr_initial, 1)
    _at_least("neural_rendering_resolution_final", o.neural_rendering_resolution_final, 1)
    G.neural_rendering_resolution = nrr_initial

    # -- loss and schedules (official train.py)
    if mode == "finetune":
        o.finetuned_from = resume.path
    finetune = o.finetuned_from is not None
    blur_init = o.blur_init_sigma
    gpc_fade = o.gpc_reg_fade_kimg
    if finetune and not o.resume_blur:
        blur_init, gpc_fade = 0.0, 0.0                # official: no blur / swap ramp when resuming
        notes.append("fine-tuning: D blur and the GPC swap fade are off (pass --resume_blur=True to keep them)")
    from .loss import LossConfig
    loss = LossConfig(
        r1_gamma=o.gamma, style_mixing_prob=o.style_mixing_prob, blur_init_sigma=blur_init,
        blur_fade_kimg=batch * o.blur_fade_kimg / 32,
        gpc_reg_prob=o.gpc_reg_prob if o.gen_pose_cond else None, gpc_reg_fade_kimg=gpc_fade,
        neural_rendering_resolution_initial=nrr_initial,
        neural_rendering_resolution_final=o.neural_rendering_resolution_final,
        neural_rendering_resolution_fade_kimg=o.neural_rendering_resolution_fade_kimg,
        density_reg=o.density_reg, density_reg_p_dist=o.density_reg_p_dist, reg_type=o.reg_type)

    glr = 0.0025 if o.glr is None else o.glr
    ema_kimg = o.ema_kimg if o.ema_kimg is not None else batch * 10 / 32
    ema_rampup = None if finetune else o.ema_rampup
    augment = None
    if o.aug != "noaug":
        augment = dict(spec="bgc", p=(o.p if o.aug == "fixed" else 0.0),
                       target=(o.target if o.aug == "ada" else None), ada_interval=o.ada_interval,
                       ada_kimg=(100.0 if finetune and "ada_kimg" not in explicit else o.ada_kimg))

    metrics = list(o.metrics)
    if metrics:
        _check_metrics(metrics, o.inception)
    _at_least("metrics-images", o.metrics_images, 1)

    desc = f"{o.cfg}-{name}-gpus{o.gpus}-batch{batch}-gamma{o.gamma:g}"
    if o.desc:
        desc += f"-{o.desc}"
    resume_dict = None
    if resume is not None:
        resume_dict = dict(path=resume.path, kind=resume.kind, mode=mode, run_dir=resume.run_dir)
        if mode == "continue":
            _check_resume_resolution(resume, resolution)

    grid = tuple(o.grid) if o.grid else official_grid(resolution)
    return TrainingConfig(
        options=to_dict(o), cfg=o.cfg, data=os.path.abspath(data), dataset_name=name, dataset_size=size,
        resolution=resolution, mirror=o.mirror, num_gpus=o.gpus, batch_size=batch, batch_gpu=batch_gpu,
        device=o.device, G=to_dict(G), D=to_dict(D), loss=to_dict(loss),
        G_opt=dict(lr=glr, betas=[0.0, 0.99], eps=1e-8), D_opt=dict(lr=o.dlr, betas=[0.0, 0.99], eps=1e-8),
        G_reg_interval=o.density_reg_every if o.density_reg > 0 else None, D_reg_interval=o.r1_interval,
        ema_kimg=ema_kimg, ema_rampup=ema_rampup, augment=augment, total_kimg=o.kimg, kimg_per_tick=o.tick,
        image_snapshot_ticks=o.image_snap or o.snap, network_snapshot_ticks=o.snap, random_seed=o.seed,
        workers=o.workers, metrics=metrics, cudnn_benchmark=not o.nobench, tf32=o.tf32,
        grad_scaler=o.grad_scaler, grid=grid, threads=o.threads, progress=o.progress,
        inception=os.path.expanduser(o.inception) if o.inception else None, metrics_images=o.metrics_images,
        resume=resume_dict,
        desc=desc, notes=notes)


def _check_resume_resolution(resume: ResumeInfo, resolution: int) -> None:
    for net in ("G", "G_ema", "D"):
        text = resume.metadata.get(f"config.{net}")
        if text:
            snap_res = json.loads(text).get("img_resolution")
            if snap_res != resolution:
                raise OptionsError(f"--resume={resume.path}: the snapshot's {net} is for {snap_res} px images but "
                                   f"the dataset has {resolution} px; use a {snap_res} px dataset")


def _check_metrics(metrics: List[str], inception: Optional[str]) -> None:
    try:
        from . import metrics as metrics_module  # owned by the metrics engineer
    except ImportError as exc:
        raise OptionsError(f"--metrics={','.join(metrics)}: training/metrics.py is not available ({exc}); "
                           "use --metrics=none") from None
    for name in metrics:
        try:
            spec = metrics_module.parse_metric(name)
        except ValueError as exc:
            raise OptionsError(f"--metrics: {exc}") from None
        if spec.kind in ("fid", "kid"):
            if not inception:
                raise OptionsError(f"--metrics={name} needs the Inception weights: pass --inception=PATH "
                                   "(see training/inception.py for the accepted files)")
            if not os.path.exists(os.path.expanduser(inception)):
                raise OptionsError(f"--inception={inception}: no such file")


def format_config(config: TrainingConfig) -> str:
    """Human-readable summary + the full JSON (what --dry-run prints)."""
    lines = ["Training options:", config.to_json(indent=2), ""]
    lines += [f"Output directory:    {config.run_dir or '(chosen when training starts)'}",
              f"Number of GPUs:      {config.num_gpus}",
              f"Batch size:          {config.batch_size} images ({config.batch_gpu} per GPU per micro-batch)",
              f"Training duration:   {config.total_kimg:g} kimg",
              f"Dataset path:        {config.data}",
              f"Dataset size:        {config.dataset_size} images",
              f"Dataset resolution:  {config.resolution}",
              f"Dataset x-flips:     {config.mirror}"]
    if config.resume:
        lines.append(f"Resume:              {config.resume['mode']} from {config.resume['path']}")
    for note in config.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


def next_run_dir(outdir: str, desc: str) -> str:
    """outdir/NNNNN-desc with the next free run id (as the official train.py)."""
    outdir = os.path.expanduser(outdir)
    ids = []
    if os.path.isdir(outdir):
        for entry in os.listdir(outdir):
            m = re.match(r"^\d+", entry)
            if m and os.path.isdir(os.path.join(outdir, entry)):
                ids.append(int(m.group()))
    return os.path.join(outdir, f"{max(ids, default=-1) + 1:05d}-{desc}")


__all__ = ["OptionsError", "TrainOptions", "TrainingConfig", "build_parser", "parse_args", "resolve",
           "format_config", "next_run_dir", "inspect_resume", "find_snapshot", "official_grid"]
