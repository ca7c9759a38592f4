#!/usr/bin/env python3
"""Viewer frame rates: the UI thread's FPS and the render worker's FPS side by side, while the
worker renders continuously (auto-orbit), plus the bare render path with and without the
tri-plane cache.

    python bench/viewer_fps.py                         # the shipped checkpoint, under Xvfb if no DISPLAY
    python bench/viewer_fps.py --seconds 10 --preset tiny
    python bench/viewer_fps.py --skip-ui               # only the render path (no window)

UI part: the real `app.viewer.Viewer` in its event loop (`wait_events_timeout(1/60)` + `step()`,
as `Viewer.run` does while animating), auto-orbit on and fast previews off, so every UI frame
changes the camera and the worker always has a full render to do. Four settings, interleaved in
one run: the UI alone (the same frames, no renders, woken at the UI frame rate as a worker that
delivers instantly would wake it: the ceiling the machine allows), a render
process with torch's default threads at the UI's priority, this viewer (a render process
with all cores but one, at niceness +10), and this viewer with its fast previews on, as while
dragging (the preview FPS). Prints UI FPS, the slowest UI frame, render FPS, and
the ratio of this viewer's UI FPS to the UI alone (1.0 = rendering costs the UI nothing).

Inspection part (`--inspect`): the render process's own `render()` for a moving camera with the
Layers / Tri-planes / Ray inspector panels closed, against its bare render path (`render_one`:
ws and planes caches, render_state, to_display_rgb; what `render()` did before those panels
existed), interleaved; ratio 1.0 = the
closed panels cost nothing. Also the rate with the Ray inspector tracing one pixel.

Render part: what the worker does for one request at the native resolution, the final image
for a new yaw: "cached" reuses ws and planes (the camera moves), "uncached" recomputes mapping
and planes (a new seed each frame); CPU and, when present, CUDA; with the render process's
threads (all cores but one, or --threads) and its allocator setting (`reuse_host_memory`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import model  # noqa: E402
from app import DEFAULT_MODEL_PATH  # noqa: E402
from app import state as S  # noqa: E402
from app.renderer_worker import WORKER_NICE  # noqa: E402
from model.device import reuse_host_memory  # noqa: E402

UI_FRAME_S = 1 / 60            # the viewer's event wait while animating


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_render(G, device: str, cached: bool, seconds: float, min_frames: int, warmup: int):
    """(fps from the median frame time, fps from the mean, frames, mean per-stage ms)."""
    cache = S.PlanesCache() if cached else None
    base = S.ViewerState(seed=0)
    stages, times, frames = {}, [], 0
    for i in range(warmup):                              # allocator / kernel warm-up
        S.to_display_rgb(S.render_state(G, base.copy(yaw=float(i)), cache), base)
    sync(device)
    t0 = time.perf_counter()
    while True:
        s = base.copy(yaw=(frames * 3.0) % 60 - 30) if cached else base.copy(seed=frames + 1)
        t = {}
        f0 = time.perf_counter()
        S.to_display_rgb(S.render_state(G, s, cache, timings=t), s)
        sync(device)
        times.append(time.perf_counter() - f0)
        for k, v in t.items():
            stages[k] = stages.get(k, 0.0) + v
        frames += 1
        elapsed = time.perf_counter() - t0
        if frames >= min_frames and elapsed >= seconds:
            break
    median = sorted(times)[len(times) // 2]
    return 1.0 / median, frames / elapsed, frames, {k: v / frames for k, v in stages.items()}


class Xvfb:
    """A private X server when there is no display (as the tests do)."""

    def __init__(self):
        self.proc = None

    def __enter__(self):
        if os.environ.get("DISPLAY"):
            return self
        exe = shutil.which("Xvfb")
        if exe is None:
            raise SystemExit("error: no DISPLAY and no Xvfb (apt-get install xvfb), or use --skip-ui")
        for num in range(140, 200):
            if os.path.exists(f"/tmp/.X11-unix/X{num}") or os.path.exists(f"/tmp/.X{num}-lock"):
                continue
            self.proc = subprocess.Popen([exe, f":{num}", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(200):
                if os.path.exists(f"/tmp/.X11-unix/X{num}") or self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            if self.proc.poll() is None:
                time.sleep(0.5)                  # the socket exists a moment before it accepts
                os.environ["DISPLAY"] = f":{num}"
                return self
        raise SystemExit("error: could not start Xvfb")

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            os.environ.pop("DISPLAY", None)


def measure_ui(model_path: str, nice: int, seconds: float, threads, render: bool = True,
               preview: bool = False) -> dict:
    """UI and render FPS of the real viewer while the worker renders continuously (render=False:
    the same UI work, the camera still orbiting, but no requests: the UI's own ceiling;
    preview=True: the viewer's fast previews on, as while dragging: the orbit counts as one)."""
    from app.viewer import Viewer
    v = Viewer(model_path=model_path, size=(1100, 700), vsync=False, threads=threads, worker_nice=nice,
               config_dir=tempfile.mkdtemp(prefix="eg3d-bench-"))
    v.run_until_idle(300)
    v.settings.fast_preview = preview
    v.settings.orbit = True
    waker = None
    if not render:
        v._submit_if_needed = lambda: None
        # The loop sleeps up to UI_FRAME_S after each frame, and a finished render cuts that
        # sleep short; without renders nothing would, and the ceiling would be the sleep's.
        waker = threading.Event()

        def wake():
            while not waker.wait(UI_FRAME_S):
                v.glfw.post_empty_event()
        threading.Thread(target=wake, daemon=True).start()
    frames, renders, worst = 0, 0, 0.0
    serial = v.frame.serial if v.frame is not None else None
    t0 = last = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        v.glfw.wait_events_timeout(UI_FRAME_S)
        v.step()
        frames += 1
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
        if v.frame is not None and v.frame.serial != serial:
            serial, renders = v.frame.serial, renders + 1
    elapsed = time.perf_counter() - t0
    if waker is not None:
        waker.set()
    ms = v.frame.timings.get("total", 0.0) if v.frame is not None else 0.0
    v.close()
    return dict(ui_fps=frames / elapsed, worst_ms=worst * 1e3, render_fps=renders / elapsed, render_ms=ms)


def measure_inspect(G, seconds: float, rounds: int = 3) -> dict:
    """Frames per second (median frame) of: the bare cached render path, the render process's
    `render()` with the inspection panels closed, and with the Ray inspector tracing a pixel."""
    from app.renderer_worker import RenderOptions, RenderRequest, _Renderer
    r = _Renderer()
    r.set_model(G)
    base = S.ViewerState(seed=0)
    traced = base.copy(ray_pixel=[0.5, 0.5])
    runs = {"bare": lambda s: r.render_one(s, RenderOptions(), {}),
            "closed": lambda s: r.render(RenderRequest(s, RenderOptions())),
            "ray": lambda s: r.render(RenderRequest(traced.copy(yaw=s.camera.yaw), RenderOptions(rays=True)))}
    times = {k: [] for k in runs}
    for k, fn in runs.items():                           # warm-up (caches, allocator)
        fn(base)
    for _ in range(rounds):                              # interleaved: the load drifts
        for k, fn in runs.items():
            t0 = time.perf_counter()
            i = 0
            while time.perf_counter() - t0 < seconds / rounds or i < 2:
                f0 = time.perf_counter()
                fn(base.copy(yaw=(i * 3.0) % 60 - 30))
                times[k].append(time.perf_counter() - f0)
                i += 1
    return {k: 1.0 / sorted(v)[len(v) // 2] for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default=str(DEFAULT_MODEL_PATH),
                   help="model to load (.safetensors or official .pkl); default: the shipped checkpoint")
    p.add_argument("--preset", choices=model.presets.PRESETS, default=None,
                   help="benchmark a random-weight generator of this preset instead of --network")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (= cpu, and cuda if present)")
    p.add_argument("--seconds", type=float, default=8.0, help="time per measurement (default 8)")
    p.add_argument("--min-frames", type=int, default=3, help="render path: at least this many frames")
    p.add_argument("--warmup", type=int, default=2, help="render path: warm-up frames (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: as the viewer, all cores but one)")
    p.add_argument("--skip-ui", action="store_true", help="only the render path, no window")
    p.add_argument("--skip-render", action="store_true", help="only the UI measurement")
    p.add_argument("--inspect", action="store_true",
                   help="only the inspection part: the render process with the inspection panels closed vs "
                        "the bare render path")
    args = p.parse_args(argv)

    if args.preset:
        torch.manual_seed(0)
        G0 = model.build_generator(model.presets.generator_config(args.preset)).eval().requires_grad_(False)
        name = f"preset {args.preset} (random weights)"
        path = os.path.join(tempfile.mkdtemp(prefix="eg3d-bench-"), f"{args.preset}.safetensors")
        model.save(path, G0)
    else:
        if not os.path.isfile(args.network):
            print(f"error: {args.network} does not exist; pass --network PATH or --preset tiny|ffhq512",
                  file=sys.stderr)
            return 2
        G0, name, path = model.load(args.network), args.network, args.network
    cores = os.cpu_count() or 2
    print(f"model: {name}: {G0.img_resolution} px output, {G0.neural_rendering_resolution} px neural "
          f"render, {G0.cfg.rendering.depth_resolution}+{G0.cfg.rendering.depth_resolution_importance} "
          f"samples/ray; torch {torch.__version__}; {cores} CPU cores, load {os.getloadavg()[0]:.1f}")

    if args.inspect:
        torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), cores - 1)))
        reuse_host_memory()                             # as the render process
        with torch.no_grad():
            fps = measure_inspect(G0, args.seconds)
        print(f"inspect bare render path        : {fps['bare']:8.2f} FPS (median frame)")
        print(f"inspect worker, panels closed   : {fps['closed']:8.2f} FPS")
        print(f"inspect worker, ray inspector on: {fps['ray']:8.2f} FPS")
        print(f"inspect ratio panels closed / bare: {fps['closed'] / fps['bare']:.3f}x "
              f"(load {os.getloadavg()[0]:.1f})")
        return 0

    if not args.skip_ui:
        keep = args.threads or max(1, cores - 1)
        configs = [("UI alone (no renders; the ceiling)", keep, WORKER_NICE, False, False),
                   ("worker: all cores, nice 0", cores, 0, True, False),
                   (f"this viewer: worker cores-1, nice +{WORKER_NICE}", keep, WORKER_NICE, True, False),
                   ("this viewer dragging (fast previews)", keep, WORKER_NICE, True, True)]
        with Xvfb():
            runs = {c[0]: [] for c in configs}
            for _ in range(2):                                  # interleaved: the load drifts
                for label, threads, nice, render, preview in configs:
                    runs[label].append(measure_ui(path, nice, args.seconds / 2, threads, render, preview))
        mean = {k: {m: sum(r[m] for r in v) / len(v) for m in ("ui_fps", "render_fps")} for k, v in runs.items()}
        for label, *_ in configs:
            worst = max(r["worst_ms"] for r in runs[label])
            print(f"UI  {label:42s}: UI {mean[label]['ui_fps']:6.1f} FPS (slowest frame {worst:5.0f} ms)   "
                  f"render {mean[label]['render_fps']:6.2f} FPS")
        alone, ours = mean[configs[0][0]], mean[configs[2][0]]
        print(f"UI  ratio this viewer rendering / UI alone: {ours['ui_fps'] / max(alone['ui_fps'], 1e-9):.2f}x "
              f"(load {os.getloadavg()[0]:.1f})")

    if not args.skip_render:                            # after the UI part: it is the UI process's
        torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), cores - 1)))
        reuse_host_memory()                             # as the render process
        devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.device == "auto" \
            else [args.device]
        for device in devices:
            G = G0.to(device)
            with torch.no_grad():
                res = {}
                for cached in (True, False):
                    fps, fps_mean, n, stages = measure_render(G, device, cached, args.seconds / 2,
                                                              args.min_frames, args.warmup)
                    res[cached] = fps
                    st = "  ".join(f"{k} {v:.1f}" for k, v in stages.items())
                    print(f"{device:5s} {'cached  ' if cached else 'uncached'}: {fps:8.2f} FPS (median frame; "
                          f"mean {fps_mean:.2f})  {n} frames; mean ms/frame: {st}")
                print(f"{device:5s} ratio cached/uncached: {res[True] / res[False]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
