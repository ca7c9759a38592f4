"""Training monitor: watch one or more run folders while they train, or after (DearPyGui).

    python train.py monitor training-runs/00003-ffhq-...  [more run folders to overlay]
    python train.py monitor training-runs/00004-...  --screenshot docs/monitor.png   # save a frame, exit

It reads only the files a run writes (see training/run_dir.py): stats.jsonl (curves; a partial
last line is waited for, a corrupt line is counted and shown as skipped), fakes*.png (sample
grids: final / raw / depth, any tick by slider), network-snapshot-*.safetensors (table; "open in
viewer" starts `visualizer.py SNAPSHOT`, "compute metrics" runs `python -m training.metrics` in
the background and adds its result), metric-*.jsonl, training_options.json (resolved options,
progress to --kimg with ETA) and the dataset's dataset.json (camera yaw/pitch scatter). A run
folder that does not exist yet is waited for. Nothing here imports torch or the training code,
so the window opens at once; the files are polled twice a second.
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_SECONDS = 0.5
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)\.safetensors$")      # run_dir.snapshot_name
GRID_RE = re.compile(r"^fakes(\d+)(_raw|_depth)?\.png$")              # run_dir.grid_stem
GRID_KINDS = ("final", "raw", "depth")
GRID_KIND_OF_SUFFIX = {None: "final", "_raw": "raw", "_depth": "depth"}

# (plot title, [(stats.jsonl key, legend)], y-axis unit)
PLOTS = [
    ("G / D loss", [("Loss/G/loss", "G"), ("Loss/D/loss", "D")]),
    ("Regularisation", [("Loss/r1_penalty", "R1 penalty"), ("Loss/D/reg", "D reg"),
                        ("Loss/G/density_reg", "density reg"), ("Loss/G/view_consistency", "view consistency")]),
    ("D scores", [("Loss/scores/real", "real"), ("Loss/scores/fake", "fake")]),
    ("Augment p", [("Progress/augment", "p")]),
    ("Neural rendering resolution", [("Progress/neural_rendering_resolution", "px")]),
    ("GPC swap probability", [("Progress/gpc_swap_prob", "p")]),
    ("D blur sigma", [("Progress/blur_sigma", "sigma")]),
    ("sec / kimg", [("Timing/sec_per_kimg", "sec/kimg")]),
    ("Memory (GB)", [("Resources/cpu_mem_gb", "CPU"), ("Resources/peak_gpu_mem_gb", "GPU peak")]),
]
TABS = ("curves", "samples", "snapshots", "cameras", "options")
DEFAULT_METRICS = "swd"
DEFAULT_METRIC_IMAGES = 256
PERCENT_RE = re.compile(r"(\d+)%\|")


# ------------------------------------------------------------------------------------ files
@dataclass
class Snapshot:
    path: str
    kimg: int
    mtime: float
    size: int
    metrics: Dict[str, float] = field(default_factory=dict)


class RunReader:
    """Incremental reader of one run folder (no GUI): call `poll()`; it says whether anything changed."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.name = os.path.basename(self.path.rstrip(os.sep))
        self.series: Dict[str, Tuple[List[float], List[float]]] = {}
        self.records = 0
        self.skipped: List[str] = []              # "line N: why"
        self.options: Optional[dict] = None
        self.grids: Dict[int, Dict[str, str]] = {}   # kimg -> kind -> png path
        self.snapshots: List[Snapshot] = []
        self.cameras: Optional[Tuple[List[float], List[float]]] = None   # yaw, elevation in degrees
        self.camera_error: Optional[str] = None
        self.last_timestamp: Optional[float] = None
        self._offset = 0
        self._partial = b""
        self._line_no = 0
        self._stats_key = None
        self._dir_key = None
        self._metric_keys: Dict[str, Tuple[float, int]] = {}
        self._metric_records: Dict[str, Dict[str, float]] = {}

    @property
    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def poll(self) -> bool:
        if not self.exists:
            return False
        changed = self._read_options()
        changed |= self._read_stats()
        changed |= self._scan_dir()
        changed |= self._read_metrics()
        return changed

    # ---------------------------------------------------------------- stats.jsonl
    def _read_stats(self) -> bool:
        path = os.path.join(self.path, "stats.jsonl")
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_size < self._offset or st.st_ino != self._stats_key:   # replaced: a resume trims its tail
            self._reset_stats()
            self._stats_key = st.st_ino
        if st.st_size == self._offset:
            return False
        with open(path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()            # no newline yet: a line still being written
        for raw in lines:
            self._line_no += 1
            self._add_line(raw)
        return True

    def _reset_stats(self) -> None:
        self.series, self.records, self.skipped = {}, 0, []
        self._offset, self._partial, self._line_no = 0, b"", 0

    def _add_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            rec = json.loads(raw)
            kimg = float(rec["Progress/kimg"]["mean"])
        except (ValueError, KeyError, TypeError) as exc:
            reason = "not JSON" if isinstance(exc, ValueError) else "no Progress/kimg"
            self.skipped.append(f"line {self._line_no}: {reason}")
            return
        self.records += 1
        self.last_timestamp = rec.get("timestamp", self.last_timestamp)
        for key, entry in rec.items():
            if isinstance(entry, dict) and isinstance(entry.get("mean"), (int, float)):
                xs, ys = self.series.setdefault(key, ([], []))
                xs.append(kimg)
                ys.append(float(entry["mean"]))

    def value(self, key: str) -> Optional[float]:
        s = self.series.get(key)
        return s[1][-1] if s and s[1] else None

    # ---------------------------------------------------------------- options, files
    def _read_options(self) -> bool:
        if self.options is not None:
            return False
        path = os.path.join(self.path, "training_options.json")
        try:
            with open(path) as f:
                self.options = json.load(f)
        except (OSError, ValueError):
            return False
        self._read_cameras()
        return True

    def _scan_dir(self) -> bool:
        try:
            entries = sorted(os.listdir(self.path))
        except OSError:
            return False
        key = tuple((e, os.path.getmtime(os.path.join(self.path, e))) for e in entries
                    if SNAPSHOT_RE.match(e) or GRID_RE.match(e))
        if key == self._dir_key:
            return False
        self._dir_key = key
        grids: Dict[int, Dict[str, str]] = {}
        snaps = []
        for e in entries:
            m = GRID_RE.match(e)
            if m:
                kind = GRID_KIND_OF_SUFFIX[m.group(2)]
                grids.setdefault(int(m.group(1)), {})[kind] = os.path.join(self.path, e)
            m = SNAPSHOT_RE.match(e)
            if m:
                p = os.path.join(self.path, e)
                st = os.stat(p)
                snaps.append(Snapshot(p, int(m.group(1)), st.st_mtime, st.st_size))
        self.grids = grids
        self.snapshots = sorted(snaps, key=lambda s: s.kimg)
        self._attach_metrics()
        return True

    def _read_metrics(self) -> bool:
        changed = False
        for e in os.listdir(self.path):
            if not (e.startswith("metric-") and e.endswith(".jsonl")):
                continue
            p = os.path.join(self.path, e)
            st = os.stat(p)
            if self._metric_keys.get(e) == (st.st_mtime, st.st_size):
                continue
            self._metric_keys[e] = (st.st_mtime, st.st_size)
            changed = True
            with open(p, errors="replace") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    snap = os.path.basename(rec.get("snapshot") or rec.get("network") or "")
                    results = rec.get("results")
                    if snap and isinstance(results, dict):
                        self._metric_records.setdefault(snap, {}).update(
                            {k: v for k, v in results.items() if isinstance(v, (int, float))})
        if changed:
            self._attach_metrics()
        return changed

    def _attach_metrics(self) -> None:
        for s in self.snapshots:
            s.metrics = dict(self._metric_records.get(os.path.basename(s.path), {}))

    def _read_cameras(self) -> None:
        """Yaw (0 = frontal, +z) and elevation of every dataset camera, in degrees, from dataset.json alone."""
        try:
            yaw, elevation = [], []
            for label in _dataset_labels((self.options or {}).get("data")):
                x, y, z = label[3], label[7], label[11]          # cam2world translation (row-major 4x4)
                r = math.sqrt(x * x + y * y + z * z) or 1.0
                yaw.append(math.degrees(math.atan2(x, z)))
                elevation.append(math.degrees(math.asin(max(-1.0, min(1.0, y / r)))))
            self.cameras = (yaw, elevation)
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
            self.camera_error = f"dataset cameras unavailable: {exc}"

    # ---------------------------------------------------------------- progress
    def progress(self) -> Tuple[float, float, Optional[float]]:
        """(kimg done, --kimg, ETA seconds or None) from the last ticks' pace."""
        total = float((self.options or {}).get("total_kimg") or 0)
        kimg = self.value("Progress/kimg") or 0.0
        eta = None
        t = self.series.get("Timing/total_sec")
        if t and len(t[0]) >= 2 and t[0][-1] > t[0][0]:
            n = min(len(t[0]), 5)
            rate = (t[1][-1] - t[1][-n]) / max(t[0][-1] - t[0][-n], 1e-9)      # sec per kimg, recent ticks
            eta = max(total - kimg, 0) * rate
        return kimg, total, eta


def _dataset_labels(data: Optional[str]) -> List[List[float]]:
    if not data:
        raise ValueError("the run names no dataset")
    if os.path.isdir(data):
        with open(os.path.join(data, "dataset.json")) as f:
            meta = json.load(f)
    else:
        with zipfile.ZipFile(data) as z:
            meta = json.loads(z.read("dataset.json"))
    labels = meta["labels"]
    return [lab[1] for lab in labels] if isinstance(labels, list) else list(labels.values())


def smooth(values: List[float], amount: float) -> List[float]:
    """Exponential moving average with weight `amount` in [0, 1) on the past (TensorBoard-style, debiased)."""
    if amount <= 0 or not values:
        return list(values)
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = amount * acc + (1 - amount) * v
        norm = amount * norm + (1 - amount)
        out.append(acc / norm)
    return out


def short_names(names: List[str]) -> List[str]:
    """Legend names of overlaid runs: the run number and the parts of the folder name that differ."""
    parts = [n.split("-") for n in names]
    common = set.intersection(*(set(p[1:]) for p in parts)) if len(parts) > 1 else set()
    out = []
    for p in parts:
        rest = [t for t in p[1:] if t not in common]
        out.append(" ".join([p[0]] + rest)[:40])
    return out


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "ETA --"
    s = int(seconds)
    return f"ETA {s // 3600}h {(s // 60) % 60:02d}m" if s >= 3600 else f"ETA {s // 60}m {s % 60:02d}s"


def read_png_rgba(path: str) -> Tuple[int, int, List[float]]:
    """(width, height, flat RGBA in [0, 1]) for a DearPyGui texture."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return rgba.shape[1], rgba.shape[0], rgba.ravel()


# ------------------------------------------------------------------------------------ jobs
class MetricsJob:
    """`python -m training.metrics` on one snapshot, in the background; progress from its tqdm output."""

    def __init__(self, run: RunReader, snapshot: Snapshot, metrics: str, num: int):
        self.snapshot, self.progress, self.status, self.done = snapshot, 0.0, "starting", False
        data = (run.options or {}).get("data", "")
        cmd = [sys.executable, "-m", "training.metrics", "--network", snapshot.path, "--data", data,
               "--metrics", metrics, "--num", str(num), "--json-out", os.path.join(run.path, "metric-monitor.jsonl")]
        if (run.options or {}).get("device") in ("cpu", "cuda"):      # as trained; "auto": the metrics' own choice
            cmd += ["--device", run.options["device"]]
        if (run.options or {}).get("mirror"):
            cmd.append("--mirror")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._err = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        chunk = b""
        while True:
            b = self.proc.stderr.read(1)
            if not b:
                break
            if b in (b"\r", b"\n"):
                text = chunk.decode(errors="replace")
                m = PERCENT_RE.search(text)
                if m:
                    self.progress = int(m.group(1)) / 100
                    self.status = text.split("|")[0].strip()[:40]
                elif text.strip():
                    self._err.append(text.strip())
                chunk = b""
            else:
                chunk += b
        code = self.proc.wait()
        self.status = "done" if code == 0 else f"failed: {(self._err or ['exit %d' % code])[-1][:120]}"
        self.progress = 1.0 if code == 0 else self.progress
        self.done = True


# ------------------------------------------------------------------------------------ window
TITLE = "EG3D training monitor"
# One DearPyGui context and window per process. On Linux, destroy_context leaves the viewport's
# window open (DearPyGui issues #2173, #2662: 2.2.0 and later), and a context created beside
# such an orphaned window crashed in its first frame (5 of 20 runs of tests/test_monitor.py,
# which opens a Monitor per test). So a closed Monitor hands its context and window on.
_DPG_SESSION = {"open": False}


class Monitor:
    """The DearPyGui window. `step()` polls the files (every POLL_SECONDS) and draws one frame."""

    def __init__(self, runs: List[str], size=(1400, 900), vsync: bool = True):
        import dearpygui.dearpygui as dpg

        self.dpg = dpg
        self.runs = [RunReader(p) for p in runs]
        self.smoothing = 0.0
        self.log_scale = False
        self.grid_kind = "final"
        self.grid_index = -1                     # -1: follow the newest tick
        self.texture_path: Optional[str] = None
        self.texture_size = (0, 0)
        self._stale_textures: List[int] = []
        self.jobs: List[MetricsJob] = []
        self.viewers: List[subprocess.Popen] = []
        self._last_poll = 0.0
        self._series_tags: Dict[Tuple[int, str], int] = {}
        self._table_key = None
        self._closed = False
        if not _DPG_SESSION["open"]:
            dpg.create_context()
            dpg.create_viewport(title=TITLE, width=size[0], height=size[1], vsync=vsync)
            dpg.setup_dearpygui()
            dpg.show_viewport()
            atexit.register(dpg.destroy_context)
            _DPG_SESSION["open"] = True
        else:                                    # the window a closed Monitor left (see close)
            dpg.set_viewport_width(size[0])
            dpg.set_viewport_height(size[1])
            dpg.set_viewport_vsync(vsync)
        self._build()
        dpg.set_primary_window("main", True)

    # ---------------------------------------------------------------- layout
    def _build(self) -> None:
        dpg = self.dpg
        with dpg.texture_registry(tag="textures"):
            self.texture = dpg.add_dynamic_texture(1, 1, [0.0, 0.0, 0.0, 1.0])
        with dpg.window(tag="main"):
            with dpg.group(horizontal=True):
                with dpg.child_window(width=330, tag="side"):
                    dpg.add_text("Runs")
                    dpg.add_group(tag="run_list")
                    with dpg.group(horizontal=True):
                        dpg.add_input_text(tag="add_path", hint="run folder to add", width=230)
                        dpg.add_button(label="Add", callback=lambda: self.add_run(dpg.get_value("add_path")))
                    dpg.add_separator()
                    dpg.add_slider_float(label="smoothing", tag="smoothing", min_value=0.0, max_value=0.99,
                                         width=180, callback=lambda s, v: self._set_smoothing(v))
                    dpg.add_checkbox(label="log scale (y)", tag="log_scale",
                                     callback=lambda s, v: self._set_log_scale(v))
                    dpg.add_separator()
                    dpg.add_text("", tag="status", wrap=310)
                with dpg.child_window(tag="content"):
                    with dpg.tab_bar(tag="tabs"):
                        with dpg.tab(label="Curves", tag="tab_curves"):
                            with dpg.table(header_row=False, tag="plots_table"):
                                for _ in range(3):
                                    dpg.add_table_column()
                                for row in range(0, len(PLOTS), 3):
                                    with dpg.table_row():
                                        for i in range(row, min(row + 3, len(PLOTS))):
                                            self._plot(i)
                        with dpg.tab(label="Samples", tag="tab_samples"):
                            with dpg.group(horizontal=True):
                                dpg.add_combo(list(GRID_KINDS), default_value="final", tag="grid_kind", width=100,
                                              callback=lambda s, v: self._set_grid_kind(v))
                                dpg.add_slider_int(label="tick", tag="grid_slider", min_value=0, max_value=0,
                                                   width=400, callback=lambda s, v: self._set_grid_index(v))
                                dpg.add_checkbox(label="follow newest", tag="grid_follow", default_value=True,
                                                 callback=lambda s, v: self._set_follow(v))
                                dpg.add_combo([], tag="grid_run", width=300, callback=lambda s, v: self._refresh_grid())
                            dpg.add_text("no sample grid yet", tag="grid_label")
                            dpg.add_image(self.texture, tag="grid_image", width=1, height=1)
                        with dpg.tab(label="Snapshots", tag="tab_snapshots"):
                            with dpg.group(horizontal=True):
                                dpg.add_input_text(label="metrics", tag="metric_names", default_value=DEFAULT_METRICS,
                                                   width=200)
                                dpg.add_input_int(label="images", tag="metric_num", default_value=DEFAULT_METRIC_IMAGES,
                                                  width=120, min_value=1, min_clamped=True)
                            dpg.add_group(tag="snapshot_tables")
                        with dpg.tab(label="Dataset cameras", tag="tab_cameras"):
                            with dpg.plot(label="dataset cameras", height=-1, width=-1, tag="camera_plot"):
                                dpg.add_plot_legend()
                                dpg.add_plot_axis(dpg.mvXAxis, label="yaw (degrees, 0 = frontal)", tag="cam_x",
                                                  auto_fit=True)
                                dpg.add_plot_axis(dpg.mvYAxis, label="pitch: elevation (degrees)", tag="cam_y",
                                                  auto_fit=True)
                        with dpg.tab(label="Options", tag="tab_options"):
                            dpg.add_group(tag="options_group")

    def _plot(self, i: int) -> None:
        dpg = self.dpg
        title, _ = PLOTS[i]
        with dpg.plot(label=title, height=260, width=-1, tag=f"plot{i}"):
            dpg.add_plot_legend()
            dpg.add_plot_axis(dpg.mvXAxis, label="kimg", tag=f"plot{i}_x", auto_fit=True)
            dpg.add_plot_axis(dpg.mvYAxis, tag=f"plot{i}_y", auto_fit=True)

    # ---------------------------------------------------------------- state changes
    def add_run(self, path: str) -> None:
        if path and all(r.path != os.path.abspath(os.path.expanduser(path)) for r in self.runs):
            self.runs.append(RunReader(path))
            self._last_poll = 0.0

    def _set_smoothing(self, value: float) -> None:
        self.smoothing = float(value)
        self._update_curves()

    def _set_log_scale(self, value: bool) -> None:
        self.log_scale = bool(value)
        scale = self.dpg.mvPlotScale_Log10 if self.log_scale else self.dpg.mvPlotScale_Linear
        for i in range(len(PLOTS)):
            self.dpg.configure_item(f"plot{i}_y", scale=scale)
        self._update_curves()

    def _set_grid_kind(self, kind: str) -> None:
        self.grid_kind = kind
        self._refresh_grid()

    def _set_grid_index(self, index: int) -> None:
        self.grid_index = int(index)
        self.dpg.set_value("grid_follow", False)
        self._refresh_grid()

    def _set_follow(self, follow: bool) -> None:
        if follow:
            self.grid_index = -1
        self._refresh_grid()

    # ---------------------------------------------------------------- refresh
    def step(self) -> None:
        now = time.monotonic()
        if now - self._last_poll >= POLL_SECONDS:
            self._last_poll = now
            self.refresh()
        self.dpg.render_dearpygui_frame()
        stale, self._stale_textures = self._stale_textures, []
        for tex in stale:
            self.dpg.delete_item(tex)

    def refresh(self) -> None:
        changed = False
        for run in self.runs:
            changed |= run.poll()
        if changed:
            self._update_curves()
            self._refresh_grid()
            self._update_snapshots()
            self._update_cameras()
            self._update_options()
        self._update_side()

    def _update_curves(self) -> None:
        dpg = self.dpg
        multi = len(self.runs) > 1
        names = short_names([r.name for r in self.runs])
        for i, (_, keys) in enumerate(PLOTS):
            for r, run in enumerate(self.runs):
                for key, legend in keys:
                    if key not in run.series:
                        continue
                    xs, ys = run.series[key]
                    ys = smooth(ys, self.smoothing)
                    if self.log_scale:
                        xs, ys = zip(*[(x, y) for x, y in zip(xs, ys) if y > 0]) if any(y > 0 for y in ys) else ([], [])
                    tag = self._series_tags.get((r, key))
                    label = f"{names[r]}: {legend}" if multi else legend
                    if tag is None:
                        tag = dpg.add_line_series(list(xs), list(ys), label=label, parent=f"plot{i}_y")
                        self._series_tags[(r, key)] = tag
                    else:
                        dpg.set_value(tag, [list(xs), list(ys)])
                        dpg.configure_item(tag, label=label)

    def series_values(self, run_index: int, key: str) -> Tuple[List[float], List[float]]:
        """What the plot holds for one run's stats key (x = kimg, y)."""
        tag = self._series_tags[(run_index, key)]
        xs, ys = self.dpg.get_value(tag)[:2]
        return list(xs), list(ys)

    def _grid_run(self) -> Optional[RunReader]:
        names = [r.name for r in self.runs if r.grids]
        self.dpg.configure_item("grid_run", items=names)
        chosen = self.dpg.get_value("grid_run")
        if chosen not in names:
            chosen = names[0] if names else ""
            self.dpg.set_value("grid_run", chosen)
        return next((r for r in self.runs if r.name == chosen), None)

    def _refresh_grid(self) -> None:
        dpg = self.dpg
        run = self._grid_run()
        if run is None:
            return
        ticks = sorted(run.grids)
        dpg.configure_item("grid_slider", max_value=max(len(ticks) - 1, 0))
        index = len(ticks) - 1 if self.grid_index < 0 or self.grid_index >= len(ticks) else self.grid_index
        dpg.set_value("grid_slider", index)
        kimg = ticks[index]
        path = run.grids[kimg].get(self.grid_kind)
        if path is None:
            dpg.set_value("grid_label", f"kimg {kimg}: no {self.grid_kind} grid")
            return
        mtime = os.path.getmtime(path)
        if (path, mtime) == self.texture_path:
            return
        try:
            w, h, pixels = read_png_rgba(path)
        except OSError as exc:               # being replaced right now: the next poll gets it
            dpg.set_value("grid_label", f"{os.path.basename(path)}: {exc}")
            return
        if (w, h) != self.texture_size:        # a new texture of the new size; the old one goes
            old, self.texture = self.texture, dpg.add_dynamic_texture(w, h, pixels, parent="textures")
            dpg.configure_item("grid_image", texture_tag=self.texture)
            self._stale_textures.append(old)       # deleted after the next frame no longer draws it
            self.texture_size = (w, h)
        else:
            dpg.set_value(self.texture, pixels)
        scale = min(1.0, 1000 / w) if w > 1000 else min(4.0, max(1.0, 600 / w))
        dpg.configure_item("grid_image", width=int(w * scale), height=int(h * scale))
        self.texture_path = (path, mtime)
        dpg.set_value("grid_label", f"{run.name}  kimg {kimg}  ({self.grid_kind}, {w}x{h} px, "
                                    f"tick {index + 1} of {len(ticks)})")

    def texture_pixels(self) -> List[float]:
        return list(self.dpg.get_value(self.texture))

    def _update_snapshots(self) -> None:
        dpg = self.dpg
        key = tuple((r.name, tuple((s.path, s.size, tuple(sorted(s.metrics.items()))) for s in r.snapshots))
                    for r in self.runs) + tuple((id(j), j.done) for j in self.jobs)
        if key == self._table_key:
            return
        self._table_key = key
        dpg.delete_item("snapshot_tables", children_only=True)
        for r, run in enumerate(self.runs):
            dpg.add_text(run.name, parent="snapshot_tables")
            names = sorted({k for s in run.snapshots for k in s.metrics})
            with dpg.table(parent="snapshot_tables", header_row=True, borders_innerH=True, borders_outerH=True,
                           policy=dpg.mvTable_SizingStretchProp, tag=f"snap_table{r}"):
                for col in ["kimg", "written", "size"] + names + ["", ""]:
                    dpg.add_table_column(label=col)
                for s, snap in enumerate(run.snapshots):
                    with dpg.table_row():
                        dpg.add_text(str(snap.kimg))
                        dpg.add_text(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.mtime)))
                        dpg.add_text(f"{snap.size / 2 ** 20:.1f} MB")
                        for n in names:
                            v = snap.metrics.get(n)
                            dpg.add_text("" if v is None else f"{v:.4g}")
                        dpg.add_button(label="open in viewer", tag=f"open_{r}_{s}",
                                       callback=lambda _s, _a, u: self.open_in_viewer(u), user_data=snap.path)
                        with dpg.group(horizontal=True):
                            dpg.add_button(label="compute metrics", tag=f"metrics_{r}_{s}",
                                           callback=lambda _s, _a, u: self.compute_metrics(*u), user_data=(r, s))
                            dpg.add_progress_bar(tag=f"metrics_bar_{r}_{s}", width=160, show=False)

    def open_in_viewer(self, snapshot: str) -> subprocess.Popen:
        """`visualizer.py SNAPSHOT` as its own process (the viewer never runs inside the monitor)."""
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "visualizer.py"), snapshot], cwd=REPO)
        self.viewers.append(proc)
        return proc

    def compute_metrics(self, run_index: int, snap_index: int) -> MetricsJob:
        run = self.runs[run_index]
        job = MetricsJob(run, run.snapshots[snap_index], self.dpg.get_value("metric_names") or DEFAULT_METRICS,
                         int(self.dpg.get_value("metric_num")))
        job.bar = f"metrics_bar_{run_index}_{snap_index}"
        self.jobs.append(job)
        return job

    def _update_jobs(self) -> None:
        for job in self.jobs:
            if self.dpg.does_item_exist(job.bar):
                self.dpg.configure_item(job.bar, show=True, overlay=job.status)
                self.dpg.set_value(job.bar, job.progress)

    def _update_cameras(self) -> None:
        dpg = self.dpg
        dpg.delete_item("cam_y", children_only=True)
        for run in self.runs:
            if run.cameras:
                dpg.add_scatter_series(run.cameras[0], run.cameras[1], label=run.name[:32], parent="cam_y")

    def _update_options(self) -> None:
        dpg = self.dpg
        dpg.delete_item("options_group", children_only=True)
        for run in self.runs:
            if run.options is None:
                continue
            with dpg.tree_node(label=run.name, parent="options_group", default_open=len(self.runs) == 1):
                _options_tree(dpg, run.options)

    def _update_side(self) -> None:
        dpg = self.dpg
        self._update_jobs()
        dpg.delete_item("run_list", children_only=True)
        now = time.time()
        for run in self.runs:
            dpg.add_text(run.name, parent="run_list")
            if not run.exists:
                dpg.add_text(f"  waiting for {run.path}", parent="run_list", wrap=300)
                continue
            kimg, total, eta = run.progress()
            frac = kimg / total if total > 0 else 0.0
            age = f", last tick {int(now - run.last_timestamp)} s ago" if run.last_timestamp else ""
            dpg.add_progress_bar(default_value=min(frac, 1.0), width=300, parent="run_list",
                                 overlay=f"{kimg:g} / {total:g} kimg  {format_eta(eta) if frac < 1 else 'done'}")
            dpg.add_text(f"  {run.records} ticks{age}", parent="run_list")
            if run.skipped:
                dpg.add_text(f"  skipped {len(run.skipped)} corrupt line(s) of stats.jsonl: "
                             f"{'; '.join(run.skipped[:3])}", parent="run_list", wrap=300, color=(255, 180, 80))
            if run.camera_error:
                dpg.add_text(f"  {run.camera_error}", parent="run_list", wrap=300, color=(200, 200, 120))
        running = [j for j in self.jobs if not j.done]
        dpg.set_value("status", f"{len(running)} metrics job(s) running" if running else "")

    # ---------------------------------------------------------------- lifetime
    def run_until_closed(self) -> None:
        while self.dpg.is_dearpygui_running():
            self.step()
        self.close()

    def screenshot(self, path: str) -> None:
        """Save the next frame (what the window shows) as a PNG."""
        self.dpg.output_frame_buffer(file=path)
        for _ in range(3):                        # written while the next frame is drawn
            self.dpg.render_dearpygui_frame()

    def close(self) -> None:
        """Stop the metric jobs and remove this monitor's items. The DearPyGui context and its
        window stay for the next Monitor of the process (`_DPG_SESSION`); the context is destroyed
        at exit. A second call does nothing (the items may be the next Monitor's by then)."""
        if self._closed:
            return
        self._closed = True
        for job in self.jobs:
            if job.proc.poll() is None:
                job.proc.terminate()
        self.dpg.delete_item("main")             # first what draws the textures, then them
        self.dpg.delete_item("textures")
        self._stale_textures = []


def _options_tree(dpg, value, key: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                with dpg.tree_node(label=str(k)):
                    _options_tree(dpg, v, k)
            else:
                dpg.add_text(f"{k}: {json.dumps(v)}")
    else:
        dpg.add_text(f"{key}: {json.dumps(value)}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR",
                        help="run folders to watch and overlay (one that does not exist yet is waited for)")
    parser.add_argument("--size", default="1400x900", help="window size WxH [default: 1400x900]")
    parser.add_argument("--tab", choices=TABS, default="curves", help="the tab to open on [default: curves]")
    parser.add_argument("--screenshot", metavar="PNG", help="draw until the runs are read, save the frame, exit")
    args = parser.parse_args(argv)
    m = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if not m:
        print(f"error: --size={args.size}: expected WIDTHxHEIGHT", file=sys.stderr)
        return 2
    for path in args.runs:
        if os.path.exists(path) and not os.path.isdir(path):
            print(f"error: {path}: not a run folder (give the folder that holds stats.jsonl)", file=sys.stderr)
            return 2
    import importlib.util
    if importlib.util.find_spec("dearpygui") is None:
        print("error: the monitor needs DearPyGui: pip install dearpygui (see requirements.txt)", file=sys.stderr)
        return 1
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("error: no display (DISPLAY is not set); the monitor is a window (under ssh: -X, or run Xvfb)",
              file=sys.stderr)
        return 1
    monitor = Monitor(args.runs, size=(int(m.group(1)), int(m.group(2))), vsync=args.screenshot is None)
    monitor.dpg.set_value("tabs", f"tab_{args.tab}")
    if args.screenshot:
        for _ in range(6):                # a few frames: the files are read and the layout settles
            monitor.refresh()
            monitor.dpg.render_dearpygui_frame()
        monitor.screenshot(args.screenshot)
        monitor.close()
        print(f"wrote {args.screenshot}")
        return 0
    monitor.run_until_closed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
