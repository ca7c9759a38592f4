"""Describe a checkpoint: what is inside and how it renders, without building or running it.

    python -m model.inspect FILE [FILE ...]

Works on official `.pkl` snapshots (read with the restricted unpickler: nothing stored in the
file runs) and on our `.safetensors` files (header and tensor shapes only).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Dict, List, Tuple

from . import checkpoint
from .config import SR_MODULES, DiscriminatorConfig, GeneratorConfig


def _count(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def _parameter_count(cfg) -> int:
    """Trainable parameters of the network a config builds, on the meta device (no memory)."""
    import torch
    with torch.device("meta"):
        net = (checkpoint.build_discriminator(cfg) if isinstance(cfg, DiscriminatorConfig)
               else checkpoint.build_generator(cfg))
    return sum(p.numel() for p in net.parameters())


def _networks(path) -> Tuple[Dict[str, object], Dict[str, int], List[str]]:
    """(net name -> config, net name -> parameter+buffer element count, other top-level notes)."""
    kind = checkpoint._sniff(path)
    configs, counts, notes = {}, {}, []
    if kind == "pickle":
        from . import pkl_import
        snapshot = pkl_import.read_snapshot(path)
        for name in checkpoint.NET_NAMES:
            if name not in snapshot:
                continue
            official = snapshot[name]
            configs[name] = (pkl_import.discriminator_config_from_official(official) if name == "D"
                             else pkl_import.generator_config_from_official(official))
            counts[name] = _count(tuple(t.shape) for t in official.state_dict.values())
        aug = snapshot.get("augment_pipe")
        if aug is not None:
            p = aug.state_dict.get("p")
            notes.append("augment_pipe: official AugmentPipe (data only, not loaded)"
                         + (f", p = {float(p.reshape(-1)[0]):.4f}" if p is not None and p.numel() else ""))
        tsk = snapshot.get("training_set_kwargs")
        if isinstance(tsk, dict) and tsk.get("path"):
            notes.append(f"training set: {tsk.get('path')} ({tsk.get('resolution')} px, "
                         f"{tsk.get('max_size')} images, xflip {tsk.get('xflip')})")
    elif kind == "safetensors":
        from safetensors import safe_open
        meta = checkpoint.read_metadata(path)
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        for name in json.loads(meta["nets"]):
            cls = GeneratorConfig if meta.get(f"kind.{name}") == "generator" else DiscriminatorConfig
            configs[name] = cls.from_json(meta[f"config.{name}"])
            counts[name] = _count(s for k, s in shapes.items() if k.startswith(name + "."))
        notes += [f"{k}: {v}" for k, v in sorted(meta.items())
                  if not k.startswith(("config.", "kind.")) and k not in ("nets", "format")]
    else:
        raise checkpoint.CheckpointError(f"{path}: unrecognised file format (expected our .safetensors "
                                         "or an official EG3D .pkl snapshot)")
    return configs, counts, notes


def _describe_generator(cfg: GeneratorConfig) -> List[str]:
    r, sr = cfg.rendering, cfg.superres
    widths = sr.channels or list(SR_MODULES[sr.module]["channels"])
    if cfg.c_gen_conditioning_zero:
        pose = "off (conditioning label zeroed)"
    elif cfg.c_scale == 0:
        pose = "off (c_scale = 0: the label is multiplied by zero)"
    else:
        pose = f"on (c_scale = {cfg.c_scale:g})"
    limits = "auto (ray-box intersection)" if r.ray_start == "auto" else f"[{r.ray_start}, {r.ray_end}]"
    return [
        f"output {cfg.img_resolution} px, neural rendering {cfg.neural_rendering_resolution} px",
        f"super-resolution {sr.module} (widths {widths[0]}, {widths[1]}; antialias {sr.antialias}; "
        f"noise {sr.noise_mode})",
        f"samples per ray {r.depth_resolution} + {r.depth_resolution_importance} importance"
        f"{' (disparity space)' if r.disparity_space_sampling else ''}",
        f"ray limits {limits}, box {r.box_warp:g}, white background {r.white_back}",
        f"camera: radius {r.avg_camera_radius:g}, pivot {list(r.avg_camera_pivot)}, fov {r.avg_camera_fov:g} deg",
        f"pose conditioning {pose}",
        f"mapping: z {cfg.z_dim}, c {cfg.c_dim}, w {cfg.w_dim}, {cfg.mapping.num_layers} layers",
        f"backbone: {cfg.backbone.resolution} px planes, {cfg.backbone.num_planes} x "
        f"{cfg.backbone.plane_channels} channels, channel_base {cfg.backbone.channel_base}, "
        f"channel_max {cfg.backbone.channel_max}",
        f"fp16 (CUDA only): backbone top {cfg.backbone.num_fp16_res} resolutions, SR "
        f"{'on' if sr.num_fp16_res > 0 else 'off'} (sr_num_fp16_res {sr.num_fp16_res})",
        f"official quirks {'kept' if r.official_compat else 'off'}, plane axes {r.plane_axes}",
    ]


def _describe_discriminator(cfg: DiscriminatorConfig) -> List[str]:
    return [f"dual discriminator at {cfg.img_resolution} px, channel_base {cfg.channel_base}, "
            f"channel_max {cfg.channel_max}, mbstd group {cfg.mbstd_group_size}",
            f"fp16 (CUDA only): top {cfg.num_fp16_res} resolutions, conv_clamp {cfg.conv_clamp}"]


def describe(path) -> str:
    """The report `python -m model.inspect` prints for one file."""
    configs, counts, notes = _networks(path)
    lines = [f"{path}", f"  networks: {', '.join(configs)}"]
    for name, cfg in configs.items():
        lines.append(f"  {name}: {_parameter_count(cfg):,} parameters ({counts[name]:,} stored values "
                     f"with buffers)")
        body = _describe_discriminator(cfg) if isinstance(cfg, DiscriminatorConfig) else _describe_generator(cfg)
        lines += [f"    {line}" for line in body]
        if isinstance(cfg, GeneratorConfig) and cfg.filled_defaults:
            lines.append("    defaults filled in (absent from the snapshot): " + ", ".join(cfg.filled_defaults))
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="official .pkl snapshots or our .safetensors files")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            checkpoint._check_file(path)
            print(describe(path), flush=True)
        except (checkpoint.CheckpointError, ValueError) as exc:
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"error: {msg}", file=sys.stderr)
            status = 1
        except BrokenPipeError:          # `... | head`: the reader has gone, stop quietly
            sys.stdout = None
            return status
    return status


if __name__ == "__main__":
    sys.exit(main())
