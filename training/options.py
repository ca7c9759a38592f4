"""The train.py command line and its resolution into one `TrainingConfig`.

Every option of the official EG3D train.py is accepted under its official name (mixed dashes and
underscores as there; the other spelling is accepted too), `--opt=value` or `--opt value`,
booleans as true/false/1/0/yes/no. Unknown options are an error, abbreviations are not accepted.
Options left out take the `--cfg` preset's default, else the default written in
`training/config.py` (where the options and their help live). When continuing a run (`--resume`
of one of our snapshots or run directories) left-out options take the values the run was started
with, so `python train.py --resume RUN_DIR` is enough.

`resolve(...)` opens (and validates) the dataset, scales the preset to its resolution and
returns the `TrainingConfig` the loop runs; `--dry-run` prints it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from model.config import SR_MODULES

from . import presets as training_presets
from .config import (CPU_GRID, EMA_KIMG_PER_32, FINETUNE_ADA_KIMG, G_LR, MAX_GRID_IMAGES, PER_INVOCATION,
                     TRAIN_RENDER_PATHS,
                     AugmentConfig, OptimizerConfig, ResumeConfig, TrainingConfig, TrainOptions, option_fields,
                     option_flag, option_help, option_metavar, option_parser)
from .loss import LossConfig


class OptionsError(ValueError):
    """A bad or inconsistent command line; the message names the option."""


def _other_spelling(flag: str) -> Optional[str]:
    body = flag[2:]
    alt = body.replace("-", "_") if "-" in body else body.replace("_", "-")
    return None if alt == body else "--" + alt


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # raise instead of exiting, so callers decide
        raise OptionsError(message)


def build_parser() -> argparse.ArgumentParser:
    """argparse from the TrainOptions fields (flags, types and help with defaults derived there)."""
    parser = _Parser(prog="train.py", allow_abbrev=False, argument_default=argparse.SUPPRESS,
                     description="Train an EG3D tri-plane GAN (official train.py options).",
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    for group, title in (("official", "official EG3D options"), ("ours", "additional options")):
        args = parser.add_argument_group(title)
        for f in option_fields(group):
            flag = option_flag(f)
            flags = [flag] + ([_other_spelling(flag)] if _other_spelling(flag) else [])
            if f.name == "dry_run":
                args.add_argument("-n", *flags, dest=f.name, action="store_true", help=f.metadata["help"])
            elif f.name == "debug":
                args.add_argument(*flags, dest=f.name, action="store_true", help=f.metadata["help"])
            else:
                args.add_argument(*flags, dest=f.name, type=option_parser(f), metavar=option_metavar(f),
                                  help=option_help(f))
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
  # watch runs (curves, sample grids, snapshots):
  python train.py monitor training-runs/00000-tiny-syn32-gpus1-batch4-gamma1
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
    note: Optional[str] = None        # e.g. the fallback from a truncated latest snapshot

    @property
    def options(self) -> Optional[Dict[str, Any]]:
        text = self.metadata.get("training_options")
        return json.loads(text) if text else None


def find_snapshot(path: str) -> Tuple[str, bool]:
    """(snapshot file, named through a run directory / `latest` pointer) for --resume=path."""
    from .run_dir import LATEST

    p = Path(os.path.expanduser(path))
    via_pointer = False
    if p.is_dir():
        p = p / LATEST
        if not p.exists():
            raise OptionsError(f"--resume={path}: the directory has no '{LATEST}' pointer (no snapshot written yet?)")
    if p.name == LATEST and p.is_file():
        target = p.read_text(errors="replace").strip()
        if not target or "/" in target or os.sep in target:
            raise OptionsError(f"--resume={path}: bad '{LATEST}' pointer {target!r}")
        p, via_pointer = p.parent / target, True
    if not p.exists():
        raise OptionsError(f"--resume={path}: no such file: {p}")
    return str(p), via_pointer


def inspect_resume(path: str) -> ResumeInfo:
    """Open the --resume file's header. A run folder whose latest snapshot is unreadable (cut
    by a full disk, say) falls back to its newest intact snapshot, and the note says so."""
    import model
    from model.checkpoint import CheckpointError, _sniff

    from .run_dir import intact_snapshots

    snapshot, via_pointer = find_snapshot(path)
    note = None
    try:
        kind = _sniff(snapshot)
        if kind == "pickle":
            return ResumeInfo(snapshot, "pkl", False)
        if kind != "safetensors":
            raise OptionsError(f"--resume={path}: {snapshot} is neither our .safetensors snapshot nor an official .pkl")
        meta = model.read_metadata(snapshot)
    except CheckpointError as exc:
        older = [p for p in intact_snapshots(os.path.dirname(snapshot)) if p != snapshot]
        if not via_pointer or not older:
            hint = f"; the newest intact snapshot beside it is {older[0]}" if older else ""
            raise OptionsError(f"--resume={path}: {exc}{hint}") from None
        note = (f"the latest snapshot {os.path.basename(snapshot)} is unreadable ({exc}); "
                f"resuming from the newest intact one, {os.path.basename(older[0])}")
        snapshot = older[0]
        meta = model.read_metadata(snapshot)
    run_dir = os.path.dirname(os.path.abspath(snapshot))
    if not os.path.exists(os.path.join(run_dir, "training_options.json")):
        run_dir = None
    return ResumeInfo(snapshot, "ours", "training_state" in meta, dict(meta), run_dir, note)


# ------------------------------------------------------------------------------------ config
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
    try:
        preset = training_presets.get(cfg)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
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
    """The official sample grid: about 7680 x 4320 pixels, 7..32 by 4..32 images."""
    gw = int(min(max(7680 // resolution, 7), 32))
    gh = int(min(max(4320 // resolution, 4), 32))
    return gw, gh


def default_grid(grid: Optional[Tuple[int, int]], resolution: int, device: str) -> Tuple[int, int]:
    """--grid (or the preset's), else the official grid on a GPU and a small one on the CPU, where
    the official 1,024 renders would take longer than the training ticks themselves."""
    if grid:
        return tuple(grid)
    from .run_dir import uses_cuda
    return official_grid(resolution) if uses_cuda(device) else CPU_GRID


def resolve(explicit: Dict[str, Any], dataset_info: Optional[Dict[str, Any]] = None) -> TrainingConfig:
    """Command line -> TrainingConfig. Opens and validates the dataset and the resume file.

    dataset_info (resolution, size, name): use these instead of opening --data (benchmarks).
    """
    resume = inspect_resume(explicit["resume"]) if explicit.get("resume") else None
    mode = resume_mode(explicit, resume)
    o = merge_options(explicit, resume, mode)
    notes: List[str] = [resume.note] if resume is not None and resume.note else []
    preset = training_presets.get(o.cfg)

    # -- validation of single options (official ranges)
    _choice("aug", o.aug, ("noaug", "ada", "fixed"))
    _choice("sr_noise_mode", o.sr_noise_mode, ("random", "none"))
    _choice("reg_type", o.reg_type, ("l1", "l1-alt", "monotonic-detach", "monotonic-fixed", "total-variation"))
    _choice("device", o.device, ("auto", "cpu", "cuda"))
    _choice("launcher", o.launcher, ("spawn", "torchrun"))
    _choice("render-path", o.render_path, TRAIN_RENDER_PATHS)
    if o.reg_type != "l1":
        raise OptionsError(f"--reg_type={o.reg_type}: only 'l1' (the official default) is implemented")
    for f in dataclasses.fields(TrainOptions):                 # every number: finite (nan/inf never train)
        value = getattr(o, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionsError(f"{option_flag(f)}: must be a finite number, got {value}")
    for name in ("gpus", "batch", "batch_gpu", "cbase", "cmax", "map_depth", "mbstd_group", "snap",
                 "density_reg_every", "r1_interval", "ada_interval"):
        _at_least(name, getattr(o, name), 1, name.replace("_", "-") if name in ("batch_gpu", "map_depth", "mbstd_group") else None)
    for name in ("gamma", "glr", "dlr", "freezed", "seed", "workers", "c_scale", "c_noise", "gpc_reg_prob",
                 "gpc_reg_fade_kimg", "disc_c_noise", "density_reg", "density_reg_p_dist", "decoder_lr_mul",
                 "neural_rendering_resolution_fade_kimg", "blur_init_sigma", "sr_num_fp16_res",
                 "g_num_fp16_res", "d_num_fp16_res", "ada_kimg", "view_consistency", "view_consistency_yaw"):
        _at_least(name, getattr(o, name), 0)
    _at_least("blur_fade_kimg", o.blur_fade_kimg, 0)
    _at_least("image_snap", o.image_snap, 0, "image-snap")
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
    loss = LossConfig(
        r1_gamma=o.gamma, style_mixing_prob=o.style_mixing_prob, blur_init_sigma=blur_init,
        blur_fade_kimg=batch * o.blur_fade_kimg / 32,
        gpc_reg_prob=o.gpc_reg_prob if o.gen_pose_cond else None, gpc_reg_fade_kimg=gpc_fade,
        neural_rendering_resolution_initial=nrr_initial,
        neural_rendering_resolution_final=o.neural_rendering_resolution_final,
        neural_rendering_resolution_fade_kimg=o.neural_rendering_resolution_fade_kimg,
        density_reg=o.density_reg, density_reg_p_dist=o.density_reg_p_dist, reg_type=o.reg_type,
        view_consistency=o.view_consistency, view_consistency_yaw=o.view_consistency_yaw)

    ema_kimg = o.ema_kimg if o.ema_kimg is not None else batch * EMA_KIMG_PER_32 / 32
    ema_rampup = None if finetune else o.ema_rampup
    augment = None
    if o.aug != "noaug":
        augment = AugmentConfig(p=(o.p if o.aug == "fixed" else 0.0), target=(o.target if o.aug == "ada" else None),
                                ada_interval=o.ada_interval,
                                ada_kimg=(FINETUNE_ADA_KIMG if finetune and "ada_kimg" not in explicit else o.ada_kimg))

    metrics = list(o.metrics)
    if metrics:
        _check_metrics(metrics, o.inception)
    _at_least("metrics-images", o.metrics_images, 1)

    desc = f"{o.cfg}-{name}-gpus{o.gpus}-batch{batch}-gamma{o.gamma:g}"
    if o.desc:
        desc += f"-{o.desc}"
    resume_config = None
    if resume is not None:
        resume_config = ResumeConfig(path=resume.path, kind=resume.kind, mode=mode, run_dir=resume.run_dir)
        if mode == "continue":
            _check_resume_resolution(resume, resolution)

    grid = default_grid(o.grid, resolution, o.device)
    if grid[0] * grid[1] > MAX_GRID_IMAGES:
        raise OptionsError(f"--grid={grid[0]}x{grid[1]}: {grid[0] * grid[1]} images per sample grid; at most "
                           f"{MAX_GRID_IMAGES} (the official maximum, 32x32)")
    return TrainingConfig(
        options=o, cfg=o.cfg, data=os.path.abspath(data), dataset_name=name, dataset_size=size,
        resolution=resolution, mirror=o.mirror, num_gpus=o.gpus, batch_size=batch, batch_gpu=batch_gpu,
        device=o.device, G=G, D=D, loss=loss, G_opt=OptimizerConfig(lr=G_LR if o.glr is None else o.glr), D_opt=OptimizerConfig(lr=o.dlr),
        G_reg_interval=o.density_reg_every if loss.regularizes_G else None, D_reg_interval=o.r1_interval,
        ema_kimg=ema_kimg, ema_rampup=ema_rampup, augment=augment, total_kimg=o.kimg, kimg_per_tick=o.tick,
        image_snapshot_ticks=o.snap if o.image_snap is None else o.image_snap, network_snapshot_ticks=o.snap,
        random_seed=o.seed,
        workers=o.workers, metrics=metrics, cudnn_benchmark=not o.nobench, tf32=o.tf32,
        grad_scaler=o.grad_scaler, grid=grid, threads=o.threads, progress=o.progress,
        render_path=o.render_path,
        inception=os.path.expanduser(o.inception) if o.inception else None, metrics_images=o.metrics_images,
        resume=resume_config,
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
    lines.append(f"Sample grid:         {config.grid[0]}x{config.grid[1]} every {config.image_snapshot_ticks} tick(s)"
                 if config.image_snapshot_ticks else "Sample grid:         off (--image-snap=0)")
    if config.resume:
        lines.append(f"Resume:              {config.resume.mode} from {config.resume.path}")
    for note in config.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


__all__ = ["OptionsError", "TrainOptions", "TrainingConfig", "build_parser", "parse_args", "resolve",
           "format_config", "inspect_resume", "find_snapshot", "official_grid", "default_grid"]
