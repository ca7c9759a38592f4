"""The run folder: which one a run writes to, and everything written there.

    training_options.json            the resolved TrainingConfig
    log.txt                          everything printed
    reals.png                        real images of the sample grid
    fakes{kimg:06d}.png, _raw.png, _depth.png   G_ema on fixed z and cameras (final / raw / depth)
    network-snapshot-{kimg:06d}.safetensors     G, G_ema, D + optimiser/scaler/augment/RNG state
    latest                           the name of the newest complete snapshot
    stats.jsonl                      one JSON line per tick: {"Loss/G/loss": {"num", "mean", "std"}, ...}
    metric-{name}.jsonl              metrics of snapshots (training --metrics or the monitor)
    events.out.tfevents.*            TensorBoard, if installed

`choose_run_dir` is the one place that decides the folder (the resumed run's own, or the next
free NNNNN-desc under --outdir); `RunDir.open` creates it only once the networks are built and
the resume file has loaded, so a failed start leaves no folder and takes no run number. Until
then, what is printed is kept and written to log.txt when the folder opens. Every file is
written atomically (`model.atomic_write`), `latest` only after its snapshot is complete.
`distributed_backend` is the one place that picks NCCL or gloo.
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

LATEST = "latest"
OPTIONS_FILE = "training_options.json"
STATS_FILE = "stats.jsonl"
LOG_FILE = "log.txt"
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)\.safetensors$")


class RunDirError(OSError):
    """The run folder cannot be made or written; the message names the path."""


def uses_cuda(device: str) -> bool:
    """--device auto|cpu|cuda -> whether training runs on CUDA."""
    if device == "cpu":
        return False
    import torch
    return torch.cuda.is_available()


def distributed_backend(device: str) -> str:
    return "nccl" if uses_cuda(device) else "gloo"


def snapshot_name(nimg: int) -> str:
    return f"network-snapshot-{nimg // 1000:06d}.safetensors"


def grid_stem(nimg: int) -> str:
    return f"fakes{nimg // 1000:06d}"


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


def choose_run_dir(config) -> Tuple[str, bool]:
    """(folder, already exists): a continued run keeps its folder, anything else takes the next id."""
    if config.continuing and config.resume.run_dir:
        return config.resume.run_dir, True
    return next_run_dir(config.options.outdir, config.desc), False


def check_writable(outdir: str) -> None:
    """Refuse an --outdir that cannot be created or written, before any work is done."""
    path = os.path.abspath(os.path.expanduser(outdir))
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise RunDirError(f"--outdir={outdir}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"--outdir={outdir}: {probe} is not writable (choose another --outdir)")


def list_snapshots(folder: str) -> List[str]:
    """The run's snapshot files, newest (highest kimg) first."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), e) for e in os.listdir(folder) for m in [SNAPSHOT_RE.match(e)] if m]
    return [os.path.join(folder, e) for _, e in sorted(found, reverse=True)]


def intact_snapshots(folder: str) -> List[str]:
    """The snapshots whose header and data are complete, newest first."""
    import model

    out = []
    for path in list_snapshots(folder):
        try:
            meta = model.read_metadata(path)
        except model.CheckpointError:
            continue
        if "training_state" in meta:
            out.append(path)
    return out


class _Tee(io.TextIOBase):
    """stdout that also goes to log.txt; what is printed before the folder exists is kept."""

    def __init__(self, stream):
        self.stream, self.file, self.pending = stream, None, []

    def attach(self, path: str) -> None:
        self.file = open(path, "a", buffering=1)
        self.file.write("".join(self.pending))
        self.pending = []

    def write(self, text):
        self.stream.write(text)
        if self.file is not None:
            self.file.write(text)
        else:
            self.pending.append(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        if self.file is not None:
            self.file.flush()

    def isatty(self):
        return self.stream.isatty()

    def close(self):
        if self.file is not None:
            self.file.close()


def _write_text(path: str, text: str) -> None:
    import model

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    model.atomic_write(path, write)


class RunDir:
    """The run folder of rank 0 (other ranks get one with `is_main=False` that writes nothing)."""

    def __init__(self, path: Optional[str], exists: bool = False, is_main: bool = True):
        self.path, self.exists, self.is_main = path, exists, is_main
        self.active = bool(path)            # False: an in-process run without a folder (tests, benchmarks)
        self._tee: Optional[_Tee] = None
        self._stats = None
        self._tb = None

    @classmethod
    def for_config(cls, config, is_main: bool = True) -> "RunDir":
        """config.run_dir (chosen by `choose_run_dir`): the continued run's own folder, or a new one."""
        path = config.run_dir
        exists = bool(path and config.continuing and config.resume.run_dir
                      and os.path.abspath(path) == os.path.abspath(config.resume.run_dir))
        return cls(path, exists=exists, is_main=is_main)

    # -------------------------------------------------------------- lifetime
    def capture_output(self) -> None:
        """Start copying stdout into log.txt (kept in memory until `open`)."""
        if self.is_main and self.active:
            self._tee = _Tee(sys.stdout)
            sys.stdout = self._tee

    def open(self, config, resume_nimg: Optional[int], log=print) -> None:
        """Create (or reopen) the folder; drop temp files of an interrupted write and stats past
        the resumed point; write training_options.json; open stats.jsonl and TensorBoard."""
        if not (self.is_main and self.active):
            return
        if not self.exists:
            try:
                os.makedirs(self.path, exist_ok=False)
            except FileExistsError:           # another run took this id since it was chosen
                self.path = next_run_dir(os.path.dirname(self.path), config.desc)
                os.makedirs(self.path, exist_ok=False)
            except OSError as exc:
                raise RunDirError(f"cannot create the run folder {self.path}: {exc.strerror}") from None
            self.exists = True
            config.run_dir = self.path
            log(f"Run folder:          {self.path}")
        if self._tee is not None:
            self._tee.attach(os.path.join(self.path, LOG_FILE))
        self._clean(resume_nimg)
        _write_text(self.file(OPTIONS_FILE), config.to_json(indent=2) + "\n")
        self._stats = open(self.file(STATS_FILE), "a")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(self.path)
        except Exception as exc:  # ImportError or a broken TensorBoard install
            log(f"Skipping TensorBoard export: {exc}")

    def close(self) -> None:
        for handle in (self._stats, self._tb):
            if handle is not None:
                try:
                    handle.close()
                except Exception:
                    pass
        self._stats = self._tb = None
        if self._tee is not None:
            sys.stdout = self._tee.stream
            self._tee.close()
            self._tee = None

    def _clean(self, resume_nimg: Optional[int]) -> None:
        for entry in os.listdir(self.path):
            if entry.startswith(".") and entry.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(self.path, entry))
                except OSError:
                    pass
        path = self.file(STATS_FILE)
        if resume_nimg is None or not os.path.exists(path):
            return
        keep = []
        with open(path, "r", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue                                       # a line cut by a kill
                kimg = rec.get("Progress/kimg", {}).get("mean", 0)
                if kimg * 1000 <= resume_nimg + 1e-6:
                    keep.append(json.dumps(rec) + "\n")
        _write_text(path, "".join(keep))

    # -------------------------------------------------------------- files
    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def writes(self) -> bool:
        return self.is_main and self.active

    def write_reals(self, reals, grid) -> None:
        if self.writes and not os.path.exists(self.file("reals.png")):
            save_image_grid(reals, self.file("reals.png"), [0, 255], grid)

    def write_samples(self, nimg: int, images, raws, depths, grid) -> None:
        """The three sample grids of one tick: [N, 3, H, W] in [-1, 1], [N, 1, h, w] depth."""
        stem = self.file(grid_stem(nimg))
        save_image_grid(images, stem + ".png", [-1, 1], grid)
        save_image_grid(raws, stem + "_raw.png", [-1, 1], grid)
        save_image_grid(depths, stem + "_depth.png", [float(depths.min()), float(depths.max())], grid)

    def append_stats(self, record: Dict[str, Any], metrics: Dict[str, float], step: int) -> None:
        if self._stats is not None:
            self._stats.write(json.dumps(record) + "\n")
            self._stats.flush()
        if self._tb is not None:
            for name, value in record.items():
                if isinstance(value, dict):
                    self._tb.add_scalar(name, value["mean"], global_step=step)
            for name, value in metrics.items():
                self._tb.add_scalar(f"Metrics/{name}", value, global_step=step)
            self._tb.flush()

    def append_metric(self, name: str, record: Dict[str, Any]) -> None:
        with open(self.file(f"metric-{name}.jsonl"), "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def snapshot_path(self, nimg: int) -> str:
        return self.file(snapshot_name(nimg))

    def mark_latest(self, snapshot: str) -> None:
        _write_text(self.file(LATEST), os.path.basename(snapshot) + "\n")

    def latest(self) -> Optional[str]:
        if not self.active or not os.path.exists(self.file(LATEST)):
            return None
        return self.file(open(self.file(LATEST)).read().strip())


def save_image_grid(images, path: str, drange, grid) -> None:
    """[N, C, H, W] in drange -> one PNG, N = gw * gh (row-major), written atomically."""
    import numpy as np
    import PIL.Image

    import model

    lo, hi = drange
    img = (np.asarray(images, dtype=np.float32) - lo) * (255 / max(hi - lo, 1e-8))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid
    n, c, h, w = img.shape
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    pil = PIL.Image.fromarray(img[:, :, 0], "L") if c == 1 else PIL.Image.fromarray(img, "RGB")
    model.atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


__all__ = ["RunDir", "RunDirError", "LATEST", "choose_run_dir", "next_run_dir", "check_writable", "list_snapshots",
           "intact_snapshots", "distributed_backend", "uses_cuda", "save_image_grid", "snapshot_name"]
