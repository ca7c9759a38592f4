"""The viewer's inversion process: `model.invert` in its own process, progress images streamed back.

An inversion is minutes of back-propagation through the generator. In a thread of the UI
process its Python code would hold the interpreter lock between torch ops and the UI would
stutter, so it runs in a spawned process at a lower OS priority (`WORKER_NICE`, as the render
process) with its own torch threads. The process opens the network from its file (as
`visualizer.py invert` does: the image, the camera spec, the discriminator for the feature
loss), runs `model.invert`, and writes the result with `model.save_projection` to the path it
is given, which the viewer then opens as the current latent.

Messages on the result queue (all small: images are uint8 strips of `STRIP_PX` squares):
("started", camera description, total steps), ("step", done, total, info, images or None),
("done", InvertOutcome), ("error", one-line message). `cancel` (an Event) ends the optimisation:
`model.invert` then returns the best result so far, which is saved like a finished one.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional

import numpy as np

from .renderer_worker import WORKER_NICE

STRIP_PX = 128                # side of each image of the target | current | difference strip
IMAGE_EVERY_S = 0.25          # at most this often an image strip travels to the UI
DIFF_GAIN = 2.0               # the difference image shows |current - target| x this
CAMERA_MODES = ("auto", "frontal", "dataset", "current")
POLL_S = 0.1


@dataclass
class InvertJob:
    """What to invert and how (the Invert panel's form, resolved)."""
    network: str                          # the generator's file (a projection file: its generator)
    image: str
    out: str                              # where the projection is written (a new file)
    camera: str = "frontal"               # CAMERA_MODES
    dataset_label: str = ""               # camera "dataset": dataset.json:NAME
    view: Optional[dict] = None           # camera "current": yaw, pitch, radius, pivot, fov
    space: str = "w"
    steps: int = 300
    pti_steps: int = 0
    refine_camera: bool = False
    use_discriminator: bool = True
    config: Optional[Any] = None          # a model.inversion.InversionConfig (None = its defaults)
    threads: Optional[int] = None         # torch threads of the process (None = all cores but one)
    device: str = "cpu"

    def camera_spec(self) -> str:
        """The `visualizer.py invert --camera` spelling (current view: resolved in the process)."""
        return {"auto": "auto", "frontal": "0,0", "dataset": self.dataset_label}.get(self.camera, "current")


@dataclass
class InvertOutcome:
    path: str
    steps: int                            # optimisation steps run (latent + PTI)
    psnr: float                           # input-view PSNR of the last step (dB)
    best_psnr: float
    interrupted: bool
    losses: str
    camera: str
    seconds: float
    psnr_history: List[float] = field(default_factory=list)


def strip_images(current, target) -> List[np.ndarray]:
    """[target, current, difference] uint8 [STRIP_PX, STRIP_PX, 3] of images [1, 3, H, W] in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    def small(x):
        return F.interpolate(x.detach().float().cpu(), size=(STRIP_PX, STRIP_PX), mode="area")[0].permute(1, 2, 0)

    t, c = small(target), small(current)
    diff = (c - t).abs().mean(-1, keepdim=True).expand(-1, -1, 3) * DIFF_GAIN - 1
    return [(x * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy() for x in (t, c, diff)]


def run_job(job: InvertJob, results, cancel) -> None:
    """The process body (also callable in-process): invert, save, report on `results`."""
    import torch
    from app.invert_cli import InvertError, _discriminator, load_image, target_and_camera
    from app.state import load_model, pose_label
    from model import inversion, projection
    t0 = time.perf_counter()
    torch.set_grad_enabled(True)
    G = load_model(job.network, device=job.device)
    if not G.has_latent:
        raise InvertError(f"{job.network}: a fitted scene has no latent to invert")
    if job.camera == "current":
        v = job.view or {}
        label = pose_label(G, v.get("yaw", 0.0), v.get("pitch", 0.0), v.get("radius"), v.get("pivot"), v.get("fov"))
        target, label, cam_text = load_image(job.image, G.img_resolution), label.cpu(), "the current view"
    else:
        target, label, cam_text = target_and_camera(Path(job.image), job.camera_spec(), G)
    D = _discriminator(Path(job.network), job.device) if job.use_discriminator else None
    total = job.steps + job.pti_steps
    results.put(("started", cam_text, total))
    target_dev = target.to(job.device)
    done, last_image = 0, 0.0

    def callback(info):
        nonlocal done, last_image
        done += 1
        now = time.perf_counter()
        images = None
        if now - last_image >= IMAGE_EVERY_S or done == total:
            images, last_image = strip_images(info["image"], target_dev), now
        results.put(("step", done, total, {"phase": info["phase"], "psnr": float(info["psnr"]),
                                           "loss": float(info["total"])}, images))
        return cancel.is_set()

    if cancel.is_set():
        results.put(("error", "cancelled"))
        return
    result = inversion.invert(G, target_dev, label.to(job.device), space=job.space, steps=job.steps,
                              pti_steps=job.pti_steps, refine_camera=job.refine_camera or job.camera == "auto",
                              callback=callback, config=job.config, D=D)
    os.makedirs(os.path.dirname(os.path.abspath(job.out)), exist_ok=True)
    projection.save_projection(job.out, result, network=job.network,
                               metadata={"image": str(Path(job.image).resolve()), "camera_spec": job.camera_spec()})
    psnrs = [float(p) for p in result.history["psnr"]]
    results.put(("done", InvertOutcome(path=str(job.out), steps=len(psnrs), psnr=psnrs[-1] if psnrs else float("nan"),
                                       best_psnr=max(psnrs) if psnrs else float("nan"),
                                       interrupted=bool(result.interrupted), losses=result.losses, camera=cam_text,
                                       seconds=time.perf_counter() - t0, psnr_history=psnrs)))


def _serve(job: InvertJob, results, cancel, nice: int, threads: Optional[int]) -> None:
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    import torch
    from model.device import reuse_host_memory
    if threads:
        torch.set_num_threads(int(threads))
    reuse_host_memory()
    try:
        run_job(job, results, cancel)
    except KeyboardInterrupt:
        results.put(("error", "cancelled"))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line in the viewer
        from model import CheckpointError
        from app.invert_cli import InvertError
        known = isinstance(exc, (InvertError, CheckpointError, ValueError, OSError))
        results.put(("error", str(exc) if known else f"{type(exc).__name__}: {exc}"))
        if not known:
            import traceback
            traceback.print_exc()


def default_threads() -> int:
    """All cores but one: the UI keeps a core (the render process waits while nothing moves)."""
    return max(1, (os.cpu_count() or 2) - 1)


class InvertProcess:
    """One inversion in a spawned process; iterate `messages()` (a UI-side thread) for progress."""

    def __init__(self, job: InvertJob, nice: int = WORKER_NICE, threads: Optional[int] = None):
        import torch.multiprocessing as mp
        context = mp.get_context("spawn")
        self._results = context.Queue()
        self._cancel = context.Event()
        self._proc = context.Process(target=_serve, args=(job, self._results, self._cancel, nice,
                                                          threads or job.threads or default_threads()),
                                     name="eg3d-invert", daemon=True)
        self._proc.start()
        self.pid = self._proc.pid

    def cancel(self) -> None:
        self._cancel.set()

    def messages(self, cancel=None) -> Iterator[tuple]:
        """Messages until ("done", ...) or ("error", ...); `cancel` (an Event) is forwarded. A
        process that dies without a word yields an error naming its exit code."""
        while True:
            if cancel is not None and cancel.is_set():
                self._cancel.set()
            try:
                msg = self._results.get(timeout=POLL_S)
            except queue.Empty:
                if not self._proc.is_alive():
                    yield ("error", f"the inversion process stopped (exit code {self._proc.exitcode})")
                    return
                continue
            yield msg
            if msg[0] in ("done", "error"):
                return

    def stop(self, timeout: float = 10.0) -> None:
        self._cancel.set()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
