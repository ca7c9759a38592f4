"""The training monitor (DearPyGui) under Xvfb on a run folder a real short training wrote:
plotted series against stats.jsonl, the grid texture against the PNG, following a run that is
still writing (appended, partial and corrupt lines; a folder that appears later), overlays, the
camera scatter against the cameras' angles, "open in viewer" (its process and window)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import train
from conftest import REPO, xvfb_server

FAST = ["--threads=1", "--progress=false", "--workers=0"]


@pytest.fixture(scope="module")
def xvfb():
    with xvfb_server(range(141, 190), "1400x900x24") as display:
        yield display


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real 3-tick tiny run (2 snapshots, sample grids every tick) on a 16-image dataset."""
    from training.synthetic import generate_dataset
    root = tmp_path_factory.mktemp("monitor")
    data = root / "syn32.zip"
    generate_dataset(data, count=16, resolution=32, cameras="portrait", seed=0, progress=False)
    args = ["--cfg=tiny", f"--data={data}", f"--outdir={root / 'runs'}", "--kimg=0.012", "--tick=0.004", "--snap=2",
            "--grid=3x2", *FAST]
    assert train.main(args) == 0
    (path,) = (root / "runs").iterdir()
    return str(path)


@pytest.fixture()
def monitor(xvfb):
    from training.monitor import Monitor
    made = []

    def make(*runs):
        m = Monitor([str(r) for r in runs], size=(1400, 900), vsync=False)
        made.append(m)
        m.step()
        return m
    yield make
    for m in made:
        for proc in m.viewers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        m.close()


def stats_of(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


def step_until(m, cond, timeout):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        m.step()
        if cond():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def test_monitor_imports_no_torch_and_opens_quickly():
    """Start-up reads files only: importing the monitor loads neither torch nor the training code."""
    code = ("import sys, training.monitor; bad = [m for m in ('torch', 'model', 'training.loop', 'training.options') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_plotted_series_equal_stats_jsonl(run, monitor):
    m = monitor(run)
    stats = stats_of(run)
    assert len(stats) == 3
    for key in ("Loss/G/loss", "Loss/D/loss", "Progress/augment", "Progress/neural_rendering_resolution",
                "Progress/blur_sigma", "Progress/gpc_swap_prob", "Timing/sec_per_kimg", "Resources/cpu_mem_gb"):
        xs, ys = m.series_values(0, key)
        assert xs == pytest.approx([s["Progress/kimg"]["mean"] for s in stats]), key
        assert ys == pytest.approx([s[key]["mean"] for s in stats]), key
    r1_x, r1_y = m.series_values(0, "Loss/r1_penalty")             # lazy R1: only the ticks where it ran
    assert r1_y == pytest.approx([s["Loss/r1_penalty"]["mean"] for s in stats if "Loss/r1_penalty" in s])

    # Smoothing: the debiased exponential moving average of the raw values.
    raw = [s["Loss/G/loss"]["mean"] for s in stats]
    m._set_smoothing(0.6)
    acc = norm = 0.0
    expect = []
    for v in raw:
        acc, norm = 0.6 * acc + 0.4 * v, 0.6 * norm + 0.4
        expect.append(acc / norm)
    assert m.series_values(0, "Loss/G/loss")[1] == pytest.approx(expect)
    assert expect[-1] != pytest.approx(raw[-1])
    # Log scale: the y axes switch; non-positive values (scores) are left out rather than drawn wrong.
    m._set_log_scale(True)
    assert m.dpg.get_item_configuration("plot0_y")["scale"] == m.dpg.mvPlotScale_Log10
    real = [s["Loss/scores/real"]["mean"] for s in stats]
    assert len(m.series_values(0, "Loss/scores/real")[1]) == sum(v > 0 for v in real)
    m._set_log_scale(False)
    m._set_smoothing(0.0)
    assert m.series_values(0, "Loss/G/loss")[1] == pytest.approx(raw)

    # Progress to --kimg and the resolved options are shown.
    kimg, total, _ = m.runs[0].progress()
    assert (kimg, total) == (pytest.approx(0.012), pytest.approx(0.012))
    assert m.runs[0].options["cfg"] == "tiny" and m.runs[0].options["grid"] == [3, 2]


def test_grid_texture_equals_the_png_and_the_slider_goes_back(run, monitor):
    from PIL import Image
    m = monitor(run)
    ticks = sorted(m.runs[0].grids)
    assert ticks == [0]                                    # fakes000000*.png: kimg 0.004 .. 0.012 -> 000000
    for kind, suffix in (("final", ""), ("raw", "_raw"), ("depth", "_depth")):
        m._set_grid_kind(kind)
        m.step()
        png = np.asarray(Image.open(os.path.join(run, f"fakes000000{suffix}.png")).convert("RGBA"), np.float32) / 255
        tex = np.asarray(m.texture_pixels(), np.float32).reshape(png.shape)
        assert m.texture_size == (png.shape[1], png.shape[0])
        assert np.abs(tex - png).max() < 1e-6, kind
    m._set_grid_kind("final")


def test_new_grids_are_picked_up_and_the_slider_shows_earlier_ticks(run, monitor, tmp_path):
    from PIL import Image
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    m = monitor(copy)
    first = np.asarray(m.texture_pixels())
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)          # a later tick with another size
    for suffix in ("", "_raw", "_depth"):
        Image.fromarray(img).save(copy / f"fakes000005{suffix}.png")
    assert m.texture_size == (96, 64)
    assert step_until(m, lambda: m.texture_size == (80, 48), 5) is not None
    tex = np.asarray(m.texture_pixels(), np.float32).reshape(48, 80, 4)
    assert np.abs(tex[:, :, :3] * 255 - img).max() < 0.5
    m._set_grid_index(0)                                           # back to the first tick
    assert np.array_equal(np.asarray(m.texture_pixels()), first)
    assert m.dpg.get_value("grid_slider") == 0 and not m.dpg.get_value("grid_follow")


def test_follows_a_run_still_writing(run, monitor, tmp_path):
    copy = tmp_path / "live"
    shutil.copytree(run, copy)
    m = monitor(copy)
    n = len(m.series_values(0, "Loss/G/loss")[0])
    last = stats_of(copy)[-1]
    line = dict(last, **{"Progress/kimg": dict(num=1, mean=0.5, std=0.0), "Loss/G/loss": dict(num=1, mean=3.25, std=0)})
    text = json.dumps(line)
    with open(copy / "stats.jsonl", "a") as f:                     # a line cut mid-write: not shown, not an error
        f.write(text[:40])
    for _ in range(3):
        m.step()
        time.sleep(0.2)
    assert len(m.series_values(0, "Loss/G/loss")[0]) == n and not m.runs[0].skipped
    with open(copy / "stats.jsonl", "a") as f:
        f.write(text[40:] + "\n")
    elapsed = step_until(m, lambda: len(m.series_values(0, "Loss/G/loss")[0]) == n + 1, 5)
    assert elapsed is not None and elapsed < 2.0, elapsed
    xs, ys = m.series_values(0, "Loss/G/loss")
    assert (xs[-1], ys[-1]) == (0.5, 3.25)
    kimg, total, eta = m.runs[0].progress()
    assert kimg == 0.5 and eta is not None

    # A corrupt line is counted and shown as skipped; the lines after it still arrive.
    with open(copy / "stats.jsonl", "a") as f:
        f.write("{not json\n")
        f.write(json.dumps(dict(line, **{"Progress/kimg": dict(num=1, mean=0.75, std=0.0)})) + "\n")
    assert step_until(m, lambda: len(m.series_values(0, "Loss/G/loss")[0]) == n + 2, 5) is not None
    assert m.runs[0].skipped == [f"line {n + 2}: not JSON"]
    texts = [m.dpg.get_value(t) for t in m.dpg.get_item_children("run_list", 1)]
    assert any("skipped 1 corrupt line" in str(t) for t in texts), texts

    # A resume replaces the file (atomically, without the lines past its snapshot): read again from the start.
    kept = (copy / "stats.jsonl").read_text().splitlines()[:2]
    (copy / "replacement").write_text("\n".join(kept) + "\n")
    os.replace(copy / "replacement", copy / "stats.jsonl")
    assert step_until(m, lambda: len(m.series_values(0, "Loss/G/loss")[0]) == 2, 5) is not None
    assert not m.runs[0].skipped and m.runs[0].records == 2


def test_waits_for_a_folder_that_appears_later_and_overlays_runs(run, monitor, tmp_path):
    later = tmp_path / "later"
    m = monitor(run, later)
    assert not m.runs[1].exists
    texts = [m.dpg.get_value(t) for t in m.dpg.get_item_children("run_list", 1)]
    assert any("waiting for" in str(t) for t in texts)
    shutil.copytree(run, later)
    assert step_until(m, lambda: (1, "Loss/D/loss") in m._series_tags, 5) is not None
    assert m.series_values(0, "Loss/D/loss") == m.series_values(1, "Loss/D/loss")
    labels = [m.dpg.get_item_label(m._series_tags[(r, "Loss/D/loss")]) for r in (0, 1)]
    assert labels[0] != labels[1] and labels[1] == "later: D"
    from training.monitor import short_names
    assert short_names(["00000-tiny-p32-gpus1-batch4-gamma1", "00001-tiny-p32-gpus1-batch4-gamma4-x"]) == \
        ["00000 gamma1", "00001 gamma4 x"]


def test_camera_scatter_matches_the_dataset_cameras(run, monitor):
    import torch
    import model
    m = monitor(run)
    yaw, elevation = m.runs[0].cameras
    import zipfile
    with zipfile.ZipFile(m.runs[0].options["data"]) as z:
        labels = np.array([lab[1] for lab in json.loads(z.read("dataset.json"))["labels"]], np.float64)
    assert len(yaw) == len(labels) == 16
    # The monitor's angles give back the cameras: a look-at camera at those angles has the same centre.
    for i in range(len(labels)):
        pitch = math.pi / 2 * (1 - math.sin(math.radians(elevation[i])))     # look_at_pose's pitch parameter
        radius = float(np.linalg.norm(labels[i, [3, 7, 11]]))
        c2w = model.camera.look_at_pose(torch.tensor([math.pi / 2 + math.radians(yaw[i])]), torch.tensor([pitch]),
                                        radius=radius)
        assert np.allclose(c2w[0, :3, 3].numpy(), labels[i, [3, 7, 11]], atol=1e-4)
    series = m.dpg.get_item_children("cam_y", 1)
    assert len(series) == 1 and list(m.dpg.get_value(series[0])[0]) == pytest.approx(yaw)


def _window_titles(display):
    """The names of every window on the X display (libX11 through ctypes: no extra tool needed)."""
    import ctypes
    import ctypes.util
    x11 = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                               ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                               ctypes.POINTER(ctypes.c_uint)]
    x11.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
    x11.XFree.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open X display {display}"
    names, stack = [], [x11.XDefaultRootWindow(dpy)]
    try:
        while stack:
            window = stack.pop()
            name = ctypes.c_char_p()
            if x11.XFetchName(dpy, window, ctypes.byref(name)) and name.value:
                names.append(name.value.decode(errors="replace"))
                x11.XFree(ctypes.cast(name, ctypes.c_void_p))
            root, parent, children, count = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.POINTER(ctypes.c_ulong)(), \
                ctypes.c_uint()
            if x11.XQueryTree(dpy, window, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children),
                              ctypes.byref(count)):
                stack.extend(children[i] for i in range(count.value))
                if children:
                    x11.XFree(children)
    finally:
        x11.XCloseDisplay(dpy)
    return "\n".join(names)


def test_snapshot_table_and_open_in_viewer(run, monitor, xvfb):
    m = monitor(run)
    snaps = m.runs[0].snapshots
    assert [s.kimg for s in snaps] == [0] and snaps[0].size == os.path.getsize(snaps[0].path)
    assert m.dpg.does_item_exist("open_0_0") and m.dpg.does_item_exist("metrics_0_0")
    callback = m.dpg.get_item_callback("open_0_0")                 # what a click on "open in viewer" runs
    callback("open_0_0", None, m.dpg.get_item_user_data("open_0_0"))
    (proc,) = m.viewers
    assert proc.args[-1] == snaps[0].path and proc.args[-2].endswith("visualizer.py")
    start = time.monotonic()
    while "EG3D viewer" not in _window_titles(xvfb):
        assert proc.poll() is None, f"the viewer exited with {proc.returncode}"
        assert time.monotonic() - start < 120, "no viewer window appeared"
        m.step()
        time.sleep(0.2)
    titles = _window_titles(xvfb)
    assert "EG3D training monitor" in titles                      # two windows, two processes
    proc.terminate()
    proc.wait(30)


def test_monitors_opened_in_turn_share_one_window(run, monitor, xvfb):
    """A closed Monitor hands its DearPyGui context and window to the next one: DearPyGui's
    destroy_context leaves the window on Linux, and a context created beside such orphans
    crashed in its first frame about one run in four."""
    first = monitor(run)
    first.close()
    second = monitor(run)
    for _ in range(3):
        second.step()
    assert second.dpg.get_item_children("run_list", 1)               # the new items are drawn
    assert _window_titles(xvfb).split("\n").count("EG3D training monitor") == 1


def test_compute_metrics_adds_the_result_to_the_table(run, monitor, tmp_path):
    copy = tmp_path / "metrics"
    shutil.copytree(run, copy)
    m = monitor(copy)
    m.dpg.set_value("metric_names", "mvc")
    m.dpg.set_value("metric_num", 4)
    callback = m.dpg.get_item_callback("metrics_0_0")
    callback("metrics_0_0", None, m.dpg.get_item_user_data("metrics_0_0"))
    (job,) = m.jobs
    assert step_until(m, lambda: job.done, 240) is not None, job.status
    assert job.status == "done", job.status
    assert step_until(m, lambda: "mvc" in m.runs[0].snapshots[0].metrics, 5) is not None
    with open(copy / "metric-monitor.jsonl") as f:
        record = json.loads(f.readline())
    assert m.runs[0].snapshots[0].metrics["mvc"] == pytest.approx(record["results"]["mvc"])
    table = m.dpg.get_item_children("snapshot_tables", 1)
    columns = [m.dpg.get_item_label(c) for t in table if m.dpg.get_item_type(t).endswith("Table")
               for c in m.dpg.get_item_children(t, 0)]
    assert "mvc" in columns
