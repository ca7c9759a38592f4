"""`python visualizer.py invert IMAGE --network X [options]`: project a photo into the generator.

Writes a projection file (`model.projection`: ws, camera, target, loss history, and the tuned
generator when --pti-steps > 0) that every export opens with `--network P.safetensors` or
`--latent P.safetensors`, and optionally an orbit video of the result. Ctrl-C stops the
optimisation and saves the best result so far.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

EXAMPLES = """examples:
  %(prog)s face.png --network ffhq512-128.pkl --camera auto --space w+ --pti-steps 350 --out face.safetensors
  %(prog)s render.png --camera 20,-5 --refine-camera --steps 300 --video orbit.mp4
  %(prog)s img.png --camera data/dataset.json:img00000042.png --out p.safetensors
then: visualizer.py turntable --network p.safetensors --out orbit.mp4

--camera: auto (face photos: MediaPipe landmarks, FFHQ-style crop, head pose, then refined
with the latent as --refine-camera does; needs requirements-faces.txt), FILE.json (25 floats,
{"label": [...]}, or a dataset.json with one image), dataset.json:NAME (that image's label), or
YAW,PITCH in degrees from frontal (viewer convention: + yaw = camera towards the subject's left,
+ pitch = camera lower). Default: frontal.
Images that are not square are centre-cropped (except with auto, which crops the face)."""


def build_parser() -> argparse.ArgumentParser:
    from app import DEFAULT_MODEL_PATH
    p = argparse.ArgumentParser(prog="visualizer.py invert", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Project an image into the generator: w / w+ latent, optional "
                                            "camera refinement and pivotal tuning (PTI).", epilog=EXAMPLES)
    p.add_argument("image", metavar="IMAGE", help="the photo or render to invert (PNG/JPEG)")
    p.add_argument("--network", metavar="PATH", help=f"generator: our .safetensors or an official .pkl "
                                                     f"(default: {DEFAULT_MODEL_PATH})")
    p.add_argument("--camera", default="0,0", metavar="SPEC", help="camera of the image (see below; default 0,0)")
    p.add_argument("--space", choices=("w", "w+"), default="w", help="latent space (default w)")
    p.add_argument("--steps", type=int, default=500, metavar="N", help="latent optimisation steps (default 500)")
    p.add_argument("--pti-steps", type=int, default=0, metavar="N",
                   help="pivotal-tuning steps of the generator after the latent (default 0 = off)")
    p.add_argument("--refine-camera", action="store_true", help="optimise yaw, pitch, radius and fov with the latent")
    p.add_argument("--vgg", metavar="PATH", help="local VGG16 for LPIPS: NVIDIA's vgg16.pt or torchvision's "
                                                 "vgg16 state dict (read as data, never executed)")
    p.add_argument("--no-discriminator", action="store_true",
                   help="do not use the file's discriminator features even when it has a D")
    p.add_argument("--out", metavar="P.safetensors",
                   help="projection file (default: IMAGE_projection.safetensors next to the image; an existing "
                        "file there is not overwritten). An existing --out is replaced only if it is a "
                        "projection, or with --overwrite; never the image or the network")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that is not a projection file")
    p.add_argument("--video", metavar="ORBIT.mp4", help="also write an orbit video of the projection")
    p.add_argument("--frames", type=int, default=90, metavar="N", help="frames of --video (default 90)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the w noise (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class InvertError(ValueError):
    """A user-facing problem with the arguments; the message names the file or flag."""


def load_image(path: str, size: int, crop_square: bool = True):
    """[1, 3, size, size] in [-1, 1] from an image file (centre-cropped to a square)."""
    import numpy as np
    import PIL.Image
    try:
        img = PIL.Image.open(path).convert("RGB")
    except (OSError, ValueError) as exc:
        raise InvertError(f"{path}: not a readable image ({exc})") from None
    w, h = img.size
    if crop_square and w != h:
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return image_tensor(np.asarray(img), size)


def image_tensor(rgb, size: int):
    """[1, 3, size, size] in [-1, 1] from an RGB uint8 array (Lanczos resize)."""
    import numpy as np
    import PIL.Image
    import torch
    img = PIL.Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    if img.size != (size, size):
        img = img.resize((size, size), PIL.Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)[None]
    return x / 127.5 - 1


def _label_from_json(obj, where: str, name: Optional[str] = None):
    if isinstance(obj, dict) and "labels" in obj:
        labels = obj["labels"] or []
        if name is None:
            if len(labels) != 1:
                raise InvertError(f"{where}: holds {len(labels)} labels; pick one with {where}:NAME")
            return labels[0][1]
        for entry in labels:
            if entry[0] == name or Path(entry[0]).name == name:
                return entry[1]
        raise InvertError(f"{where}: no image named {name!r}")
    if isinstance(obj, dict) and "label" in obj:
        return obj["label"]
    return obj


def parse_camera(spec: str, G):
    """(label [1, 25] or None for auto, description)."""
    import torch
    from app.state import pose_label
    if spec == "auto":
        return None, "auto (face landmarks + PnP head pose)"
    path, _, name = spec.partition(":") if spec.lower().split(":")[0].endswith(".json") else (spec, "", "")
    if path.lower().endswith(".json"):
        try:
            obj = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InvertError(f"--camera {path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise InvertError(f"--camera {path}: not valid JSON ({exc})") from None
        values = _label_from_json(obj, path, name or None)
        try:
            label = torch.tensor([float(v) for v in values], dtype=torch.float32).reshape(1, -1)
        except (TypeError, ValueError):
            raise InvertError(f"--camera {spec}: the label must be 25 numbers") from None
        if label.shape[1] != 25:
            raise InvertError(f"--camera {spec}: the label must be 25 numbers, got {label.shape[1]}")
        return label, f"label from {spec}"
    try:
        yaw, pitch = (float(v) for v in spec.split(","))
    except ValueError:
        raise InvertError(f"--camera {spec!r}: expected auto, FILE.json, dataset.json:NAME or YAW,PITCH") from None
    return pose_label(G, yaw, pitch).cpu(), f"yaw {yaw:g}, pitch {pitch:g} degrees"


def target_and_camera(image_path: Path, spec: str, G):
    """(target [1, 3, S, S] in [-1, 1], label [1, 25], description) of an image and a --camera
    spec; `auto` aligns the face (model.faces) and takes the label from its head pose."""
    import torch
    label, cam_text = parse_camera(spec, G)
    if label is not None:
        return load_image(str(image_path), G.img_resolution), label, cam_text
    from model import faces
    import numpy as np
    import PIL.Image
    try:
        photo = np.asarray(PIL.Image.open(image_path).convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InvertError(f"{image_path}: not a readable image ({exc})") from None
    r = G.cfg.rendering
    try:
        face = faces.align(photo, radius=r.avg_camera_radius, pivot=r.avg_camera_pivot,
                           fov_degrees=r.avg_camera_fov)
    except faces.FaceError as exc:
        raise InvertError(f"{image_path}: {exc}") from None
    cam_text = f"auto: face yaw {face.yaw:+.1f}, pitch {face.pitch:+.1f} degrees, eyes at {face.eye_angle:+.1f}"
    return image_tensor(face.crop, G.img_resolution), torch.tensor(face.label, dtype=torch.float32)[None], cam_text


def _discriminator(network: Path, device: str):
    import model
    try:
        return model.load(network, net="D", device=device)
    except (model.CheckpointError, ValueError):
        return None


def run(args) -> Path:
    import torch
    from app.cli import load_generator
    from model.device import resolve_device
    from model import inversion, projection
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 0 or args.pti_steps < 0 or args.frames < 1:
        raise InvertError("--steps and --pti-steps must be >= 0, --frames >= 1")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise InvertError(f"{image_path}: no such file")
    out = Path(args.out) if args.out else image_path.with_name(image_path.stem + "_projection.safetensors")
    if args.out is None and out.exists():
        raise InvertError(f"{out} exists; pass --out to choose the file (or to overwrite it)")
    from app import DEFAULT_MODEL_PATH
    from model.output import check_replace
    check_replace(out, args.overwrite, projection.is_projection, what="projection",
                  protect=[image_path, args.network or DEFAULT_MODEL_PATH])
    device = resolve_device(args.device)
    G, network = load_generator(args.network, device)
    G = getattr(G, "G", G) if getattr(G, "projected_ws", None) is not None else G   # a projection: its G
    if getattr(G, "is_scene", False):
        raise InvertError(f"{network}: a fitted scene has no latent to invert")
    target, label, cam_text = target_and_camera(image_path, args.camera, G)
    lpips = None
    if args.vgg:
        from model.lpips import LPIPSLoadError, load_lpips
        try:
            lpips = load_lpips(args.vgg, device=device)
        except LPIPSLoadError as exc:
            raise InvertError(str(exc)) from None
    D = None if args.no_discriminator else _discriminator(network, device)
    cfg = inversion.InversionConfig(seed=args.seed)
    total = args.steps + args.pti_steps
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc="invert", unit="step", dynamic_ncols=True)

    def callback(info):
        if bar is not None:
            bar.set_postfix_str(f"{info['phase']} loss {info['total']:.4f} psnr {info['psnr']:.2f}")
            bar.update(1)
        return False

    print(f"camera: {cam_text}", file=sys.stderr)
    try:
        result = inversion.invert(G, target, label.to(device), space=args.space, steps=args.steps,
                                  pti_steps=args.pti_steps, refine_camera=args.refine_camera or args.camera == "auto",
                                  callback=callback, config=cfg, lpips=lpips, D=D)
    finally:
        if bar is not None:
            bar.close()
    print(f"losses: {result.losses}", file=sys.stderr)
    if result.history["psnr"]:
        print(f"input-view PSNR {result.history['psnr'][-1]:.2f} dB after {len(result.history['psnr'])} steps",
              file=sys.stderr)
    if result.interrupted:
        print("interrupted: saving the best result so far", file=sys.stderr)
    projection.save_projection(out, result, network=network,
                               metadata={"image": str(image_path.resolve()), "camera_spec": args.camera})
    if args.video and not result.interrupted:
        _orbit_video(projection.load_projection(out, device=device), args.video, args.frames, not args.quiet)
    return out


def _orbit_video(loaded, path: str, frames: int, bar: bool) -> None:
    import torch
    from app import export as E
    from app.state import ViewerState
    from model import camera as cam
    yaw, pitch, _ = cam.yaw_pitch_radius(cam.split_label(loaded.camera.cpu())[0])
    state = ViewerState(trunc_psi=1.0, yaw=math.degrees(float(yaw) - cam.FRONTAL),
                        pitch=math.degrees(float(pitch) - cam.FRONTAL))
    with torch.no_grad():
        E.export_turntable(loaded.as_generator(), path, state, frames=frames, path="orbit", bar=bar)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`visualizer.py invert ...` (argv without the subcommand)."""
    from app.cli import _restore_sigterm, _terminate_as_interrupt
    from model import CheckpointError
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    previous = _terminate_as_interrupt()
    try:
        written = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted before the optimisation started: nothing was written", file=sys.stderr)
        return 130
    except (InvertError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _restore_sigterm(previous)
    print(written)
    return 0
