"""Typed training configuration: the command-line options and the resolved `TrainingConfig`.

`TrainOptions` is the train.py command line. Each field is one option: its default is written
once, here, and the `--help` text is derived from it (`[default: ...]` is appended from the
field's default, or from `shown` where a preset or a rule decides). `options.py` builds the
parser from these fields and resolves them into a `TrainingConfig`, whose parts are dataclasses
too (G: GeneratorConfig, D: DiscriminatorConfig, loss: LossConfig, resume: ResumeConfig, ...).
Both serialise to plain JSON (training_options.json, snapshot metadata) and back.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from model.config import DiscriminatorConfig, GeneratorConfig, from_dict, to_dict

from . import presets as training_presets
from .loss import LossConfig

# Sample grid on the CPU when neither --grid nor the preset names one (official size on GPUs).
CPU_GRID = (4, 2)
MAX_GRID_IMAGES = 32 * 32       # the official grid's largest size
# Official train.py: G learning rate, Adam betas/eps of both networks.
G_LR = 0.0025
ADAM_BETAS = (0.0, 0.99)
ADAM_EPS = 1e-8
# Official: G_ema half-life = batch * 10 / 32 kimg; ADA speed when fine-tuning.
EMA_KIMG_PER_32 = 10.0
FINETUNE_ADA_KIMG = 100.0
# --render-path: the first is the default (the reference renderer, the correctness oracle).
TRAIN_RENDER_PATHS = ("reference", "fast")


# ------------------------------------------------------------------------------------ parsers
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
        return parse(text, max_cells=MAX_GRID_IMAGES)
    except ExportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_optional_float(text: str) -> Optional[float]:
    return None if str(text).strip().lower() in ("none", "") else float(text)


def _opt(default: Any, help: str, *, flag: Optional[str] = None, metavar: Optional[str] = None,
         parse: Optional[Callable[[str], Any]] = None, shown: Optional[str] = None, group: str = "official"):
    """One option: a dataclass field whose metadata the parser and --help are built from."""
    meta = dict(help=help, flag=flag, metavar=metavar, parse=parse, shown=shown, group=group)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _ours(default: Any, help: str, **kw):
    return _opt(default, help, group="ours", **kw)


@dataclass
class TrainOptions:
    """The train.py command line (official names and defaults; None = the --cfg preset or a rule decides)."""
    # Official EG3D train.py options.
    outdir: str = _opt("training-runs", "where to make the run directory", metavar="DIR")
    cfg: Optional[str] = _opt(None, "preset: " + ", ".join(training_presets.PRESETS), metavar="NAME", parse=str,
                              shown="required")
    data: Optional[str] = _opt(None, "training data (EG3D zip or folder with dataset.json)", metavar="[ZIP|DIR]",
                               parse=str, shown="required")
    gpus: int = _opt(1, "number of processes (GPUs; CPU processes without CUDA)")
    batch: Optional[int] = _opt(None, "total batch size", parse=int, shown="preset")
    gamma: Optional[float] = _opt(None, "R1 regularisation weight", parse=float, shown="preset")
    cond: bool = _opt(True, "train a conditional model (must be true: EG3D needs cameras)")
    mirror: bool = _opt(False, "enable dataset x-flips (mirrors the cameras too)")
    aug: str = _opt("noaug", "augmentation mode", metavar="noaug|ada|fixed")
    resume: Optional[str] = _opt(None, "resume: our snapshot or run directory (continues exactly) or an official "
                                       ".pkl (fine-tunes)", metavar="PATH", parse=str, shown="")
    freezed: int = _opt(0, "freeze the first layers of D")
    p: float = _opt(0.2, "augmentation probability for --aug=fixed")
    target: float = _opt(0.6, "ADA target value for --aug=ada")
    batch_gpu: Optional[int] = _opt(None, "limit the batch size per GPU (gradient accumulation)", flag="--batch-gpu",
                                    parse=int, shown="batch / gpus")
    cbase: Optional[int] = _opt(None, "capacity multiplier", parse=int, shown="preset")
    cmax: Optional[int] = _opt(None, "max. feature maps", parse=int, shown="preset")
    glr: Optional[float] = _opt(None, "G learning rate", parse=float, shown=f"{G_LR:g}")
    dlr: float = _opt(0.002, "D learning rate")
    map_depth: Optional[int] = _opt(None, "mapping network depth", flag="--map-depth", parse=int, shown="preset")
    mbstd_group: int = _opt(4, "minibatch std group size", flag="--mbstd-group")
    desc: Optional[str] = _opt(None, "string to include in the run directory name", metavar="STR", parse=str, shown="")
    metrics: List[str] = _opt([], "quality metrics", metavar="[NAME|A,B,C|none]", parse=parse_metrics, shown="none")
    kimg: float = _opt(25000.0, "total training duration", metavar="KIMG", shown="25000 or preset")
    tick: float = _opt(4.0, "how often to print progress", metavar="KIMG", shown="4 or preset")
    snap: int = _opt(50, "how often to save snapshots", metavar="TICKS", shown="50 or preset")
    seed: int = _opt(0, "random seed")
    nobench: bool = _opt(False, "disable cuDNN benchmarking")
    workers: int = _opt(3, "DataLoader worker processes (0 = in the main process)")
    neural_rendering_resolution_initial: Optional[int] = _opt(
        None, "resolution to render at", parse=int, shown="64; tiny/synthetic: half the image size")
    neural_rendering_resolution_final: Optional[int] = _opt(None, "final resolution to render at, if blending",
                                                            parse=int, shown="no blending")
    neural_rendering_resolution_fade_kimg: float = _opt(1000.0, "kimg to blend the resolution over", metavar="KIMG")
    blur_fade_kimg: float = _opt(200.0, "blur over how many kimg, at batch 32 (scaled by batch/32 as official)",
                                 metavar="KIMG")
    gen_pose_cond: bool = _opt(False, "enable generator pose conditioning")
    c_scale: float = _opt(1.0, "scale factor for generator pose conditioning", flag="--c-scale")
    c_noise: float = _opt(0.0, "accepted for compatibility; unused, as in the official code", flag="--c-noise")
    gpc_reg_prob: float = _opt(0.5, "swapping probability of GPC")
    gpc_reg_fade_kimg: float = _opt(1000.0, "length of the swapping prob fade", metavar="KIMG")
    disc_c_noise: float = _opt(0.0, "D pose-conditioning noise, in std devs")
    sr_noise_mode: str = _opt("none", "noise in the super-resolution layers", metavar="random|none")
    resume_blur: bool = _opt(False, "blur (and fade GPC) even when fine-tuning")
    sr_num_fp16_res: Optional[int] = _opt(None, "fp16 layers in super-resolution", parse=int, shown="preset, 4")
    g_num_fp16_res: Optional[int] = _opt(None, "fp16 resolutions in the G backbone", parse=int, shown="preset, 0")
    d_num_fp16_res: Optional[int] = _opt(None, "fp16 resolutions in D", parse=int, shown="preset, 4")
    sr_first_cutoff: int = _opt(2, "accepted for compatibility (alias-free SR only)")
    sr_first_stopband: float = _opt(2 ** 2.1, "accepted for compatibility (alias-free SR only)", shown="2^2.1")
    style_mixing_prob: float = _opt(0.0, "style-mixing probability")
    sr_module: Optional[str] = _opt(None, "super-resolution module override", flag="--sr-module", metavar="NAME",
                                    parse=str, shown="by resolution, as official")
    density_reg: float = _opt(0.25, "density regularisation strength")
    density_reg_every: int = _opt(4, "lazy density regularisation interval")
    density_reg_p_dist: float = _opt(0.004, "perturbation distance")
    reg_type: str = _opt("l1", "density regularisation type (only l1)", metavar="l1")
    decoder_lr_mul: float = _opt(1.0, "decoder learning rate multiplier")
    dry_run: bool = _opt(False, "print the resolved training configuration and exit", flag="--dry-run")
    # Our additions.
    device: str = _ours("auto", "where to train (auto: cuda if available)", metavar="auto|cpu|cuda")
    launcher: str = _ours("spawn", "--gpus > 1: spawn the processes here, or print the torchrun command line",
                          metavar="spawn|torchrun")
    resume_mode: str = _ours("auto", "continue = same run, exact state; finetune = new run from the weights",
                             flag="--resume-mode", metavar="auto|continue|finetune")
    grid: Optional[Tuple[int, int]] = _ours(None, "sample grid size", metavar="WxH", parse=parse_grid,
                                            shown=f"preset; else official on GPUs, {CPU_GRID[0]}x{CPU_GRID[1]} on "
                                                  "the CPU")
    image_snap: Optional[int] = _ours(None, "how often to save sample grids (0 = never)", flag="--image-snap",
                                      metavar="TICKS", parse=int, shown="--snap")
    tf32: bool = _ours(True, "allow TF32 matmul/conv on CUDA")
    grad_scaler: bool = _ours(True, "dynamic loss scaling where fp16 layers run", flag="--grad-scaler")
    blur_init_sigma: float = _ours(10.0, "initial D blur sigma (official: 10)", flag="--blur-init-sigma")
    ema_kimg: Optional[float] = _ours(None, "G_ema half-life", flag="--ema-kimg", metavar="KIMG", parse=float,
                                      shown=f"batch * {EMA_KIMG_PER_32:g} / 32")
    ema_rampup: Optional[float] = _ours(0.05, "G_ema ramp-up", flag="--ema-rampup", metavar="FLOAT|none",
                                        parse=parse_optional_float)
    view_consistency: float = _ours(0.0, "weight of the two-view colour consistency loss, on G's lazy "
                                    "regularisation steps (0 = off, as official)", flag="--view-consistency")
    view_consistency_yaw: float = _ours(0.1, "yaw between its two views (radians)", flag="--view-consistency-yaw")
    r1_interval: int = _ours(16, "lazy R1 interval", flag="--r1-interval")
    ada_interval: int = _ours(4, "ADA adjustment interval, steps", flag="--ada-interval")
    ada_kimg: float = _ours(500.0, "ADA speed: kimg for p to change by 1", flag="--ada-kimg", metavar="KIMG",
                            shown=f"500; {FINETUNE_ADA_KIMG:g} fine-tuning")
    threads: Optional[int] = _ours(None, "CPU threads per process", parse=int, shown="cores / processes")
    render_path: str = _ours(TRAIN_RENDER_PATHS[0], "ray marcher of G's training renders: reference, or fast "
                             "(model/fast_render.py, differentiable, within its stated bounds of the reference)",
                             flag="--render-path", metavar="|".join(TRAIN_RENDER_PATHS))
    progress: bool = _ours(True, "show progress bars")
    inception: Optional[str] = _ours(None, "Inception-v3 weights for FID/KID --metrics (see training/inception.py)",
                                     metavar="PATH", parse=str, shown="")
    metrics_images: Optional[int] = _ours(None, "override the image count of every --metrics entry",
                                          flag="--metrics-images", parse=int, shown="")
    debug: bool = _ours(False, "show the Python traceback of an error", flag="--debug")
    # Not an option: set when a run was started by fine-tuning (kept when it is continued).
    finetuned_from: Optional[str] = field(default=None, metadata=dict(group=None))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        opts = cls(**{k: v for k, v in data.items() if k in names})
        if opts.grid is not None:
            opts.grid = tuple(opts.grid)
        return opts


# Options that describe one invocation rather than the run (never taken from a snapshot).
PER_INVOCATION = ("resume", "dry_run", "launcher", "resume_mode", "progress", "device", "outdir", "debug")


def option_fields(group: str) -> List[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainOptions) if f.metadata.get("group") == group]


def option_flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name


def option_parser(f: dataclasses.Field) -> Callable[[str], Any]:
    parse = f.metadata.get("parse")
    if parse is not None:
        return parse
    default = f.default
    return parse_bool if isinstance(default, bool) else type(default)


def option_metavar(f: dataclasses.Field) -> str:
    if f.metadata.get("metavar"):
        return f.metadata["metavar"]
    parse = option_parser(f)
    return {parse_bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(parse, "VALUE")


def option_help(f: dataclasses.Field) -> str:
    """The help text with the default appended: the field's own default, or `shown`."""
    shown = f.metadata.get("shown")
    if shown is None:
        value = f.default
        shown = str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) \
            else str(value)
    return f.metadata["help"] + (f" [default: {shown}]" if shown else "")


# ------------------------------------------------------------------------------------ resolved config
@dataclass
class OptimizerConfig:
    lr: float
    betas: Tuple[float, float] = ADAM_BETAS
    eps: float = ADAM_EPS


@dataclass
class AugmentConfig:
    """ADA-style augmentation: fixed p (target None) or adaptive towards `target`."""
    spec: str = "bgc"
    p: float = 0.0
    target: Optional[float] = None
    ada_interval: int = 4
    ada_kimg: float = 500.0


@dataclass
class ResumeConfig:
    path: str                          # the snapshot file
    kind: str                          # 'ours' | 'pkl'
    mode: str                          # 'continue' | 'finetune'
    run_dir: Optional[str] = None      # the run folder a continued snapshot belongs to


@dataclass
class TrainingConfig:
    """Everything the loop needs; JSON-serialisable (training_options.json, snapshot metadata)."""
    options: TrainOptions
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
    G: GeneratorConfig
    D: DiscriminatorConfig
    loss: LossConfig
    G_opt: OptimizerConfig
    D_opt: OptimizerConfig
    G_reg_interval: Optional[int]
    D_reg_interval: Optional[int]
    ema_kimg: float
    ema_rampup: Optional[float]
    augment: Optional[AugmentConfig]
    total_kimg: float
    kimg_per_tick: float
    image_snapshot_ticks: int           # 0 = no sample grids
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
    render_path: str = TRAIN_RENDER_PATHS[0]     # runs written before the option trained on the reference
    inception: Optional[str] = None
    metrics_images: Optional[int] = None
    resume: Optional[ResumeConfig] = None
    run_dir: Optional[str] = None
    desc: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def continuing(self) -> bool:
        return self.resume is not None and self.resume.mode == "continue"

    def to_dict(self) -> Dict[str, Any]:
        return to_dict(self)

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainingConfig":
        data = dict(data)
        data["options"] = TrainOptions.from_dict(data["options"])
        data["G"] = from_dict(GeneratorConfig, data["G"])
        data["D"] = from_dict(DiscriminatorConfig, data["D"])
        data["loss"] = LossConfig(**data["loss"])
        for name in ("G_opt", "D_opt"):
            data[name] = OptimizerConfig(**dict(data[name], betas=tuple(data[name]["betas"])))
        data["augment"] = AugmentConfig(**data["augment"]) if data.get("augment") else None
        data["resume"] = ResumeConfig(**data["resume"]) if data.get("resume") else None
        data["grid"] = tuple(data["grid"])
        return cls(**data)


__all__ = ["TrainOptions", "TrainingConfig", "OptimizerConfig", "AugmentConfig", "ResumeConfig", "LossConfig",
           "PER_INVOCATION", "CPU_GRID", "TRAIN_RENDER_PATHS", "option_fields", "option_flag", "option_help", "parse_bool", "parse_grid"]
