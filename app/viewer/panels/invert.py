"""Invert panel: an image (path or drag-and-drop) and its camera become the current latent.

The optimisation (`model.invert`) runs in its own process (`app.invert_worker`, lower priority);
the panel's background task only relays its progress: the bar, cancel (which keeps the best
result so far), the PSNR curve and a live target | current | difference strip. The result is
written to a new file under the viewer's output folder and opened like any projection (the
generator, tuned when PTI ran, plus the projected latent). "save" copies it to a path of the
user's choosing; an existing file there is replaced only when "overwrite" is ticked, and never
the network or the image.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from imgui_bundle import imgui

from app.invert_worker import CAMERA_MODES, InvertJob, InvertOutcome, InvertProcess

from .base import WARN_COLOUR, Panel, needs_latent, task_progress, text_error

CAMERA_LABELS = ("auto (face photo: landmarks + head pose)", "frontal", "from dataset.json:NAME",
                 "the current view")
SPACES = ("w", "w+")
MAX_STEPS = 100_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FACE_PACKAGES = ("mediapipe", "cv2")
STRIP_MARGIN = 4.0            # pixels per strip image kept free of the panel's right edge
PSNR_PLOT_HEIGHT = 40.0       # UI units


class FormError(ValueError):
    """A bad field of the Invert form; the message names it."""


@dataclass
class InvertForm:
    image: str = ""
    camera: str = "frontal"               # app.invert_worker.CAMERA_MODES
    dataset_label: str = ""               # "path/dataset.json:NAME" (camera = dataset)
    space: str = "w"
    steps: int = 300
    pti_steps: int = 0
    refine_camera: bool = False
    use_discriminator: bool = True
    save_path: str = "out/viewer/projection.safetensors"
    overwrite: bool = False

    def validate(self) -> None:
        if not self.image.strip():
            raise FormError("invert image: choose an image file (path field or drop it onto the window)")
        if not os.path.isfile(os.path.expanduser(self.image)):
            raise FormError(f"invert image {self.image}: no such file")
        if self.camera not in CAMERA_MODES:
            raise FormError(f"invert camera={self.camera!r}; one of {', '.join(CAMERA_MODES)}")
        if self.camera == "dataset":
            path = self.dataset_label.partition(".json")[0] + ".json"
            if ".json" not in self.dataset_label or not os.path.isfile(os.path.expanduser(path)):
                raise FormError(f"invert camera dataset {self.dataset_label!r}: expected an existing "
                                "dataset.json:NAME")
        if self.camera == "auto":
            missing = [m for m in FACE_PACKAGES if importlib.util.find_spec(m) is None]
            if missing:
                raise FormError(f"invert camera auto needs MediaPipe 0.10.x and OpenCV ({', '.join(missing)} "
                                "missing): pip install -r requirements-faces.txt")
        if self.space not in SPACES:
            raise FormError(f"invert space={self.space!r}; one of {', '.join(SPACES)}")
        if not 1 <= self.steps <= MAX_STEPS or not 0 <= self.pti_steps <= MAX_STEPS:
            raise FormError(f"invert steps={self.steps} / PTI steps={self.pti_steps} outside "
                            f"[1, {MAX_STEPS}] / [0, {MAX_STEPS}]")


class LiveView:
    """What the task thread last heard from the process (read by the UI thread)."""

    def __init__(self):
        self.images: Optional[List[np.ndarray]] = None     # target, current, difference
        self.version = 0
        self.psnr: List[float] = []
        self.phase = ""
        self.camera = ""

    def step(self, info: dict, images) -> None:
        self.psnr.append(info["psnr"])
        self.phase = info["phase"]
        if images is not None:
            self.images, self.version = images, self.version + 1


def next_free(folder: str, stem: str) -> str:
    """folder/STEM_projection_NNN.safetensors that does not exist yet."""
    i = 0
    while os.path.exists(path := os.path.join(folder, f"{stem}_projection_{i:03d}.safetensors")):
        i += 1
    return path


class InvertPanel(Panel):
    title = "Invert"

    def __init__(self):
        self.form = InvertForm()
        self.live = LiveView()
        self.outcome: Optional[InvertOutcome] = None
        self._textures: List[Optional[int]] = []
        self._uploaded = 0

    def available(self, model) -> bool:
        return needs_latent(model)

    # -- drawing -------------------------------------------------------------------------------
    def draw(self, ctx) -> None:
        f = self.form
        if ctx.dropped_image:                       # an image dropped onto the window
            f.image, ctx.dropped_image = ctx.dropped_image, None
        _, f.image = imgui.input_text("image##invert", f.image)
        i = CAMERA_MODES.index(f.camera) if f.camera in CAMERA_MODES else 1
        changed, i = imgui.combo("camera##invert", i, list(CAMERA_LABELS))
        if changed:
            f.camera = CAMERA_MODES[i]
        if f.camera == "dataset":
            _, f.dataset_label = imgui.input_text("dataset.json:NAME", f.dataset_label)
        elif f.camera == "auto" and any(importlib.util.find_spec(m) is None for m in FACE_PACKAGES):
            imgui.text_colored(imgui.ImVec4(*WARN_COLOUR), "needs MediaPipe: pip install -r requirements-faces.txt")
        changed, j = imgui.combo("space", SPACES.index(f.space) if f.space in SPACES else 0, list(SPACES))
        if changed:
            f.space = SPACES[j]
        _, f.steps = imgui.input_int("steps", f.steps, 10, 100)
        f.steps = int(np.clip(f.steps, 1, MAX_STEPS))
        _, f.pti_steps = imgui.input_int("PTI steps", f.pti_steps, 10, 100)
        f.pti_steps = int(np.clip(f.pti_steps, 0, MAX_STEPS))
        changed, on = imgui.checkbox("refine camera", f.refine_camera or f.camera == "auto")
        if changed:
            f.refine_camera = on
        imgui.same_line()
        _, f.use_discriminator = imgui.checkbox("D features", f.use_discriminator)
        task = ctx.tasks.get("invert")
        if task is not None and task.running:
            task_progress(task)
            if self.live.camera:
                imgui.text_disabled(f"camera: {self.live.camera}  ({self.live.phase})")
        elif imgui.button("invert") and ctx.model is not None:
            self.start(ctx)
        if task is not None and not task.running and task.error:
            text_error(f"last: {task.error}")
        self._draw_live(ctx)
        self._draw_save(ctx)

    def _draw_live(self, ctx) -> None:
        live = self.live
        if live.psnr:
            values = np.asarray(live.psnr, dtype=np.float32)
            imgui.plot_lines("##psnr", values, graph_size=imgui.ImVec2(-1, PSNR_PLOT_HEIGHT * ctx.scale),
                             overlay_text=f"PSNR {values[-1]:.2f} dB (best {values.max():.2f})")
        if self.outcome is not None:
            o = self.outcome
            how = "cancelled: the best so far" if o.interrupted else "done"
            imgui.text_wrapped(f"{how}: {o.steps} steps in {o.seconds:.1f} s, PSNR {o.psnr:.2f} dB; {o.camera}")
        if live.images is None:
            return
        if live.version != self._uploaded:
            self._textures = [ctx.actions.texture(f"invert.{k}", img) for k, img in
                              zip(("target", "current", "difference"), live.images)]
            self._uploaded = live.version
        if not self._textures or any(t is None for t in self._textures):
            return
        spacing = imgui.get_style().item_spacing.x
        side = max(16.0, (imgui.get_content_region_avail().x - 2 * spacing) / 3 - STRIP_MARGIN)
        for k, tex in enumerate(self._textures):
            if k:
                imgui.same_line()
            imgui.image(imgui.ImTextureRef(tex), imgui.ImVec2(side, side))
        imgui.text_disabled("target | current | difference x2")

    def _draw_save(self, ctx) -> None:
        if ctx.state.latent.projection is None:
            return
        f = self.form
        imgui.separator()
        _, f.save_path = imgui.input_text("save as##invert", f.save_path)
        _, f.overwrite = imgui.checkbox("overwrite an existing file", f.overwrite)
        if imgui.button("save projection"):
            self.save(ctx)

    # -- actions -------------------------------------------------------------------------------
    def job(self, ctx, out: str) -> InvertJob:
        """The form as a job for the current model (validated first; raises FormError)."""
        self.form.validate()
        if ctx.model is None or ctx.info is None or not ctx.model.has_latent:
            raise FormError("invert: open a generator first")
        from app import state as S
        from model.device import module_device
        f = self.form
        view = S.resolved_camera(ctx.state, ctx.model) if f.camera == "current" else None
        return InvertJob(network=ctx.info.path, image=os.path.expanduser(f.image), out=out, camera=f.camera,
                         dataset_label=os.path.expanduser(f.dataset_label), view=view, space=f.space,
                         steps=f.steps, pti_steps=f.pti_steps, refine_camera=f.refine_camera,
                         use_discriminator=f.use_discriminator, device=str(module_device(ctx.model)))

    def start(self, ctx, threads: Optional[int] = None, config=None):
        """Start the inversion as the 'invert' task; the result opens as the current latent.
        threads: torch threads of the process; config: a `model.inversion.InversionConfig`."""
        running = ctx.tasks.get("invert")
        if running is not None and running.running:
            return running
        stem = os.path.splitext(os.path.basename(self.form.image))[0] or "image"
        try:
            job = self.job(ctx, next_free(os.path.join(ctx.settings.out_dir, "projections"), stem))
        except FormError as exc:
            ctx.actions.fail(str(exc))
            return None
        job.config = config
        self.live, self.outcome, self._uploaded = LiveView(), None, 0
        live = self.live

        def run(progress, cancel):
            proc = InvertProcess(job, threads=threads)
            try:
                for msg in proc.messages(cancel):
                    if msg[0] == "started":
                        live.camera = msg[1]
                        progress(0, msg[2])
                    elif msg[0] == "step":
                        progress(msg[1], msg[2])
                        live.step(msg[3], msg[4])
                    elif msg[0] == "done":
                        return msg[1]
                    else:
                        raise RuntimeError(msg[1])
            finally:
                proc.stop()

        def finished(task):
            if task.error is not None:
                ctx.actions.message(f"inversion: {task.error}")
                if task.error != "cancelled":
                    ctx.actions.fail(f"inversion failed: {task.error}")
                return
            self.outcome = task.result
            o = task.result
            ctx.actions.message(f"inversion {'cancelled, kept the best so far' if o.interrupted else 'done'}: "
                                f"PSNR {o.psnr:.2f} dB, {o.path}")
            ctx.actions.open_model(o.path)

        return ctx.actions.start_task("invert", "inversion", run, on_finish=finished, unit="steps")

    def save(self, ctx, path: Optional[str] = None):
        """Copy the current projection file to `path` (default: the form's), atomically, under the
        overwrite rule; then the view references the saved file (same bytes, same SHA-256)."""
        from model.output import OutputRefused, atomic_write, check_replace
        source = ctx.state.latent.projection
        if source is None:
            ctx.actions.fail("save projection: the current latent is not a projection")
            return None
        dest = os.path.expanduser(path or self.form.save_path).strip()
        if not dest.endswith(".safetensors"):
            ctx.actions.fail(f"save projection {dest}: the file name must end with .safetensors")
            return None
        network = ctx.info.path if ctx.info is not None else None
        image = os.path.expanduser(self.form.image) if self.form.image else None
        if os.path.lexists(dest) and not self.form.overwrite:
            ctx.actions.fail(f"save projection {dest}: the file exists; tick 'overwrite an existing file' "
                             "to replace it, or choose another path")
            return None
        try:
            check_replace(dest, True, recognise=lambda p: False, protect=(source, network, image), what="projection")
        except OutputRefused as exc:
            ctx.actions.fail(str(exc))
            return None
        sha = ctx.state.latent.projection_sha256

        def run(progress, cancel):
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))
            return os.path.abspath(dest)

        def finished(task):
            if task.error is not None:
                ctx.actions.fail(f"save projection {dest}: {task.error}")
                return
            ctx.actions.message(f"saved projection {task.result}")
            if ctx.state.latent.projection_sha256 == sha:
                ctx.actions.set_state(ctx.state.copy(projection=task.result))

        return ctx.actions.start_task("invert-save", "save projection", run, on_finish=finished)
