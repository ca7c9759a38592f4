#!/usr/bin/env python3
"""Render speed, reference path vs fast path, per stage, with the machine's physical limit.

    python bench/render_speed.py                               # all four models, 2 threads
    python bench/render_speed.py --models portrait tiny128 --repeats 3
    python bench/render_speed.py --models ffhq512 --threads 2 --preview

Models: `portrait` (the shipped checkpoints/portrait.safetensors), `tiny128` and `small512` (the
official fixtures in ../shared/fixtures/eg3d_official), `ffhq512` (the official ffhq512-128
architecture, random weights). One frame = batch 1, a frontal camera as the viewer opens, the
model's own neural resolution and samples, random (non-deterministic) sampling as in the viewer. Stages: mapping, planes (backbone), coarse and
fine (field evaluations of the two passes), composite (everything else in the ray marcher:
rays, sampling, merging, compositing), SR (the same module on both paths: timed once, shared).
Times are the minimum over --repeats frames (the machine is shared; the minimum is the least
disturbed; with --threads 1 they are the rendering thread's CPU time, which other jobs do not
inflate), and both paths run alternately in the same process, so the ratio fast/reference is
measured under the same load.

The limit line: FLOPs and bytes of each stage for one frame (dense layers counted by
torch.utils.flop_counter, the tri-plane field and compositing counted analytically: FLOPs of
the gather + MLP + weighted sums, bytes = the gathered plane rows + the stored features), and
the time they need at this machine's measured fp32 matmul rate and memory copy rate, plus the
transcendental activations no matmul unit computes (the decoder's softplus and sigmoid, the
compositing's softplus and exp: elements counted analytically, each at this machine's measured
rate for that function): limit = max(FLOPs / rate, bytes / bandwidth) + sum(elements /
function rate) + ops x the measured cost of one tiny op (the fast path's aten ops in the stage,
counted; the dispatch floor of small frames). fast/limit is how far
the fast path is from it. The end2end ceiling line is the best end-to-end ratio any ray marcher
could reach: the stages both paths run (mapping, planes, SR) as measured, plus the neural stages
at their limit.
--preview also times `model.preview.render_preview` (the viewer's interactive preview).

On a GPU (`--device cuda`, e.g. through bench/device_session.sh) the same table is measured with
the clock read after a device synchronisation (so a stage's time includes its kernels), the
limit line uses the GPU's own matmul and copy rates, and there is no "today" column (the
allocator setting is a CPU matter). `--amp bf16|fp16` runs the backbone and the SR under
autocast (fp32 accumulation), the ray marcher and the decoder staying fp32. `--graph` adds the
fixed-shape viewer frame (cached planes -> image, fast path without fine-sample skipping, whose
data-dependent shapes a graph cannot hold) replayed from a CUDA graph; `--compile` also
`torch.compile(mode="reduce-overhead")`s it, with the compile time. `--parity` renders each model
deterministically on the device (both paths, and under --amp) and prints the largest
difference to the CPU reference render against the 1e-3 (raw) / 1e-2 (image) tolerances.

The render processes (the viewer's render and inversion workers, `visualizer.py` exports and
inversion) call `model.device.reuse_host_memory()`, so
that a frame's big tensors reuse the last frame's memory instead of page-faulting through fresh
pages. With --allocator reuse (the default) the bench first times the whole reference frame
with glibc's default allocator ("today": the official code's setup), then switches as the
product does and measures the table. Columns: today (the reference path with the default
allocator), fast/today (the time the product's fast frame takes, as a fraction of today's), ref
and fast (both paths with the product's allocator, alternating) and ref/fast.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import model  # noqa: E402
from model import camera  # noqa: E402
from model import fast_field  # noqa: E402
from model import generator as generator_module  # noqa: E402
from model import preview  # noqa: E402
from model.device import reuse_host_memory  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "eg3d_official")
MODELS = ("portrait", "tiny128", "small512", "ffhq512")
STAGES = ("mapping", "planes", "coarse", "fine", "composite", "sr")
NEURAL = ("coarse", "fine", "composite")
CLOCK = time.perf_counter          # main(): the thread's CPU time on one thread, synced on CUDA
DEVICE = torch.device("cpu")       # main(): --device
RAW_TOL, IMAGE_TOL = 1e-3, 1e-2    # the parity tolerances of tests/test_fast_path.py
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(name: str):
    """(generator, description) of a benchmark model."""
    torch.manual_seed(0)
    if name == "portrait":
        return model.load(os.path.join(REPO, "checkpoints", "portrait.safetensors")), "shipped"
    if name == "ffhq512":
        return model.build_generator(model.presets.generator_config("ffhq512")), "random weights"
    path = os.path.join(FIXTURES, f"{name}.pkl")
    if not os.path.exists(path):          # bench/device_session.sh prepare: the G_ema alone
        path = os.path.join(FIXTURES, f"{name}.safetensors")
    try:
        return model.load(path), "official fixture"
    except (OSError, model.CheckpointError) as exc:
        raise SystemExit(f"error: {exc}") from None


def synced(clock):
    """clock() read after the GPU has finished the work queued so far."""
    def read():
        torch.cuda.synchronize()
        return clock()
    return read


@contextlib.contextmanager
def low_precision(G, amp: str):
    """--amp: G's convolution networks (the backbone and the SR) run under autocast in that
    precision, their outputs cast back to fp32; the ray marcher and the decoder stay fp32
    (autocast would put the ray positions' matmuls in 8-bit mantissas: off by ~1e-2 of the box,
    0.7 on the raw image of the shipped model)."""
    if AMP[amp] is None:
        yield
        return
    modules = (G.backbone.synthesis, G.superresolution)
    for module in modules:
        def run(*args, _forward=module.forward, **kwargs):
            with torch.autocast(DEVICE.type, dtype=AMP[amp]):
                return _forward(*args, **kwargs).float()
        module.forward = run
    try:
        yield
    finally:
        for module in modules:
            del module.forward


class StageTimer:
    """Milliseconds of the field calls (1st = coarse, 2nd = fine) and of the whole ray march."""

    def __init__(self, counter: "_OpCount" = None):
        self.ms, self.ops = {}, {}
        self.calls = 0
        self.counter = counter          # counts the ops of each stage (a separate, untimed pass)

    def field(self, fn):
        def timed(*args):
            t0, n0 = CLOCK(), self.counter.n if self.counter else 0
            out = fn(*args)
            key = "coarse" if self.calls == 0 else "fine"
            self.ms[key] = self.ms.get(key, 0.0) + (CLOCK() - t0) * 1e3
            if self.counter:
                self.ops[key] = self.ops.get(key, 0) + self.counter.n - n0
            self.calls += 1
            return out
        return timed


@contextlib.contextmanager
def instrument(G, timer: StageTimer):
    """Time the stages of G.render without touching the model code."""
    ref_march, fast_field, fast_march = (generator_module.render_rays, G.fast_renderer.field,
                                         G.fast_renderer.render)

    def march(fn, *args, **kwargs):
        t0 = CLOCK()
        out = fn(*args, **kwargs)
        timer.ms["march"] = (CLOCK() - t0) * 1e3
        return out

    def ref(field, *args, **kwargs):
        return march(ref_march, timer.field(field), *args, **kwargs)

    generator_module.render_rays = ref
    G.fast_renderer.field = lambda *a, **k: timer.field(fast_field(*a, **k))
    G.fast_renderer.render = lambda *a, **k: march(fast_march, *a, **k)
    try:
        yield
    finally:
        generator_module.render_rays = ref_march
        del G.fast_renderer.field, G.fast_renderer.render


def frame(G, ws, planes, c, path: str):
    """ms per neural-rendering stage (coarse, fine, composite) of one render from cached planes,
    and the feature image for the SR."""
    timer = StageTimer()
    with instrument(G, timer):
        out = G.render(planes, ws, c, path=path, superresolution=False)
    ms = {k: timer.ms.get(k, 0.0) for k in ("coarse", "fine")}
    ms["composite"] = timer.ms["march"] - ms["coarse"] - ms["fine"]
    return ms, out["feature_image"]


class _OpCount(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops dispatched (each costs a few microseconds, however small)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def op_counts(G, z, c, ws, planes, path: str) -> dict:
    """{stage: aten ops} of one frame on `path`."""
    counter = _OpCount()
    out = {}
    with torch.no_grad(), counter:
        for stage, fn in (("mapping", lambda: G.mapping(z, c, truncation_psi=0.7)),
                          ("planes", lambda: G.planes(ws, noise_mode="const"))):
            n0 = counter.n
            fn()
            out[stage] = counter.n - n0
        timer = StageTimer(counter)
        n0 = counter.n
        with instrument(G, timer):
            feats = G.render(planes, ws, c, path=path, superresolution=False)["feature_image"]
        out.update(timer.ops)
        out["composite"] = counter.n - n0 - sum(timer.ops.values())
        n0 = counter.n
        G.superresolution(feats[:, :3].clone(), feats, ws)
        out["sr"] = counter.n - n0
    return out


def dispatch_us() -> float:
    """Microseconds one tiny op costs (dispatch, allocation): best of 3 x 2000 adds."""
    a = torch.ones(4, device=DEVICE)
    best = float("inf")
    for _ in range(3):
        t0 = CLOCK()
        for _ in range(2000):
            a + a
        best = min(best, (CLOCK() - t0) / 2000)
    return best * 1e6


def time_sr(G, features, ws) -> float:
    """ms of the super-resolution (the same module on both paths, so timed once)."""
    t0 = CLOCK()
    G.superresolution(features[:, :3].clone(), features, ws)
    return (CLOCK() - t0) * 1e3


# softplus as the fast path computes it (x - log(sigmoid(x)) on the CPU, the faster way there),
# in place on a scratch copy (the copy's time included)
ACTIVATIONS = {"softplus": lambda v, scratch: fast_field.softplus_(scratch.copy_(v)),
               "sigmoid": lambda v, scratch: torch.sigmoid(v, out=scratch),
               "exp": lambda v, scratch: torch.exp(v, out=scratch)}
RATE_ROUNDS = 7                    # machine_rates: best of this many (the machine is shared)


def machine_rates(amp: str = "none"):
    """(matmul FLOP/s in the frame's precision, memory copy bytes/s, {activation: elements/s})
    measured now, best of RATE_ROUNDS; on the CPU the activations run on 1M standard-normal floats
    (cache-resident, so compute-bound), on a GPU on 64M (enough to fill it)."""
    gpu = DEVICE.type == "cuda"
    n = 4096 if gpu else 1024
    dtype = AMP[amp] or torch.float32
    a, b = (torch.randn(n, n, device=DEVICE, dtype=dtype) for _ in range(2))
    x = torch.empty(32 * 2 ** 20, device=DEVICE)
    y = torch.empty_like(x)
    v = torch.randn(2 ** 26 if gpu else 2 ** 20, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    best_mm = best_copy = float("inf")
    best_act = dict.fromkeys(ACTIVATIONS, float("inf"))
    scratch = torch.empty_like(v)
    for _ in range(RATE_ROUNDS):
        t0 = CLOCK()
        for _ in range(4):
            a @ b
        best_mm = min(best_mm, (CLOCK() - t0) / 4)
        t0 = CLOCK()
        y.copy_(x)
        best_copy = min(best_copy, CLOCK() - t0)
        for name, fn in ACTIVATIONS.items():
            t0 = CLOCK()
            for _ in range(4):
                fn(v, scratch)
            best_act[name] = min(best_act[name], (CLOCK() - t0) / 4)
    return (2 * n ** 3 / best_mm, 2 * x.numel() * 4 / best_copy,
            {name: v.numel() / t for name, t in best_act.items()})


def dense_cost(fn):
    """(FLOPs, bytes, {}) of the matmuls/convolutions of fn(): FLOPs from the flop counter,
    bytes = their inputs, weights and outputs (what they must move at least once); their
    activations (leaky ReLU) are not transcendental."""
    counter = _BytesMode()
    with FlopCounterMode(display=False) as flops, counter:
        fn()
    return flops.get_total_flops(), counter.bytes, {}


class _BytesMode(torch.utils._python_dispatch.TorchDispatchMode):
    OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm")

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.__name__.split(".")[0] in self.OPS:
            tensors = [t for t in list(args) + [out] if isinstance(t, torch.Tensor)]
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def field_cost(G, points: int):
    """Analytic (FLOPs, bytes, activations) of the tri-plane field at `points` points: 12 corner
    rows of C floats gathered and summed, the two decoder layers, 1 + F outputs stored; a
    softplus per hidden unit and a sigmoid per feature."""
    c = G.cfg.backbone.plane_channels
    h, f = G.cfg.decoder.hidden_dim, G.cfg.decoder.output_features
    corners = 4 * G.cfg.backbone.num_planes
    flops = points * (2 * corners * c + 2 * c * h + 2 * h * (1 + f))
    return flops, points * 4 * (corners * c + 1 + f), {"softplus": points * h, "sigmoid": points * f}


def composite_cost(G, rays: int, coarse: int, fine: int):
    """Analytic (FLOPs, bytes, activations) of compositing: a weighted sum of F features per
    sample; a softplus and an exp per interval, over the coarse set and over the merged set."""
    f = G.cfg.decoder.output_features
    samples = coarse + fine
    intervals = rays * (coarse - 1 + (samples - 1 if fine else 0))
    return (rays * samples * 2 * f, rays * samples * 4 * (f + 2),
            {"softplus": intervals, "exp": intervals})


def limits(G, ws, planes, c):
    """{stage: (FLOPs, bytes)} of one frame."""
    r = G.cfg.rendering
    rays = G.neural_rendering_resolution ** 2
    z = torch.randn(1, G.z_dim, device=DEVICE)
    cost = {"mapping": dense_cost(lambda: G.mapping(z, c)),
            "planes": dense_cost(lambda: G.planes(ws, noise_mode="const")),
            "coarse": field_cost(G, rays * r.depth_resolution),
            "fine": field_cost(G, rays * r.depth_resolution_importance),
            "composite": composite_cost(G, rays, r.depth_resolution, r.depth_resolution_importance)}
    res = G.neural_rendering_resolution
    feats = torch.zeros(1, G.cfg.decoder.output_features, res, res, device=DEVICE)
    cost["sr"] = dense_cost(lambda: G.superresolution(feats[:, :3].clone(), feats, ws))
    return cost


def setup(name: str):
    """(G, description, camera c, z) of a benchmark model: a frontal view, as the viewer opens."""
    G, how = build(name)
    G = G.eval().requires_grad_(False).to(DEVICE)
    r = G.cfg.rendering
    c = camera.orbit_label(math.pi / 2, math.pi / 2, r.avg_camera_radius, r.avg_camera_pivot, r.avg_camera_fov)
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1))
    return G, how, c.to(DEVICE), z.to(DEVICE)


def stage_times(G, c, z, paths, repeats: int, sr_repeats: int):
    """{path: {stage: best ms}} of one frame, and the ws / planes / feature image it rendered.
    The paths alternate frame by frame, so their ratio is measured under the same load."""
    best = {p: {} for p in paths}
    with torch.no_grad():
        mapping_ms, planes_ms = [], []
        for _ in range(max(1, repeats)):
            t0 = CLOCK()
            ws = G.mapping(z, c, truncation_psi=0.7)
            t1 = CLOCK()
            planes = G.planes(ws, noise_mode="const")
            mapping_ms.append((t1 - t0) * 1e3)
            planes_ms.append((CLOCK() - t1) * 1e3)
        for i in range(repeats + 1):                 # the first round warms up every path
            for p in paths:
                ms, features = frame(G, ws, planes, c, p)
                if i > 0:
                    for k, v in ms.items():
                        best[p][k] = min(best[p].get(k, float("inf")), v)
        sr = min(time_sr(G, features, ws) for _ in range(sr_repeats))
    for p in paths:
        best[p].update(mapping=min(mapping_ms), planes=min(planes_ms), sr=sr)
    return best, ws, planes


def today(name: str, repeats: int, sr_repeats: int) -> dict:
    """Stage ms of the reference frame as the official code runs it (glibc's default
    allocator). Measured before reuse_host_memory()."""
    G, _, c, z = setup(name)
    return stage_times(G, c, z, ("reference",), repeats, sr_repeats)[0]["reference"]


@contextlib.contextmanager
def no_skipping(G):
    """The fast path without fine-sample skipping: fixed shapes, no host-side decisions (what a
    CUDA graph or a compiled frame can hold)."""
    cfg = G.fast_renderer.cfg
    G.fast_renderer.cfg = dataclasses.replace(cfg, transmittance_cutoff=0.0, opacity_cutoff=0.0)
    try:
        yield
    finally:
        G.fast_renderer.cfg = cfg


def fixed_shape_fps(G, planes, ws, c, repeats: int, compile_too: bool) -> dict:
    """{variant: FPS} of the viewer's orbit frame (cached planes, new camera -> image) on CUDA:
    eager fast (no skipping), the same frame replayed from a CUDA graph, and optionally
    torch.compile(mode='reduce-overhead') of it (with its compile seconds). A variant that
    cannot be built prints why and is left out."""
    frames = max(10, 10 * repeats)
    static_c = c.clone()
    cams = [camera.orbit_label(math.pi / 2 + 0.3 * math.sin(i), math.pi / 2,
                               G.cfg.rendering.avg_camera_radius, G.cfg.rendering.avg_camera_pivot,
                               G.cfg.rendering.avg_camera_fov).to(DEVICE) for i in range(frames)]

    def one(cam):
        return G.render(planes, ws, cam, path="fast")["image"]

    def fps(step) -> float:
        for cam in cams[:3]:
            step(cam)
        t0 = CLOCK()
        for cam in cams:
            step(cam)
        return frames / (CLOCK() - t0)

    out = {}
    with torch.no_grad(), no_skipping(G):
        out["fast, eager, no skipping"] = fps(one)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    one(static_c)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                one(static_c)

            def replay(cam):
                static_c.copy_(cam)
                graph.replay()
            out["fast, CUDA graph"] = fps(replay)
        except RuntimeError as exc:
            print(f"CUDA graph: not captured ({str(exc).splitlines()[0]})")
        if compile_too:
            try:
                compiled = torch.compile(one, mode="reduce-overhead")
                t0 = time.perf_counter()
                compiled(static_c)
                compiled(static_c)
                torch.cuda.synchronize()
                print(f"torch.compile: {time.perf_counter() - t0:.1f} s to compile and run twice")
                out["fast, torch.compile"] = fps(compiled)
            except Exception as exc:  # noqa: BLE001 - a compiler failure is a result to report
                print(f"torch.compile: failed ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    return out


def parity(name: str, amp: str) -> None:
    """Largest difference of the device's deterministic frame (from the same z, both paths) to
    the CPU reference frame, against the parity tolerances."""
    G, _ = build(name)
    G = G.eval().requires_grad_(False)
    r = G.cfg.rendering
    c = camera.orbit_label(math.pi / 2 + 0.4, math.pi / 2 - 0.2, r.avg_camera_radius,
                           r.avg_camera_pivot, r.avg_camera_fov)
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2))

    def frame_of(net, path, device):
        zd, cd = z.to(device), c.to(device)
        with torch.no_grad():
            ws = net.mapping(zd, cd, truncation_psi=0.7)
            out = net.render(net.planes(ws, noise_mode="const"), ws, cd, deterministic=True, path=path)
        return {k: out[k].float().cpu() for k in ("image_raw", "image")}

    with torch.no_grad():
        oracle = frame_of(G, "reference", torch.device("cpu"))
    G = G.to(DEVICE)
    for path in ("reference", "fast"):
        with low_precision(G, amp):
            got = frame_of(G, path, DEVICE)
        raw, image = ((got[k] - oracle[k]).abs().max().item() for k in ("image_raw", "image"))
        ok = raw < RAW_TOL and image < IMAGE_TOL
        print(f"parity {name} {DEVICE.type} {path} amp={amp}: raw {raw:.2e} (tol {RAW_TOL:g}), "
              f"image {image:.2e} (tol {IMAGE_TOL:g}) -> {'ok' if ok else 'OVER TOLERANCE'}")


def bench_model(name: str, repeats: int, sr_repeats: int, rates, show_preview: bool,
                baseline: dict = None, amp: str = "none", graph: bool = False,
                compile_too: bool = False) -> dict:
    G, how, c, z = setup(name)
    r = G.cfg.rendering
    print(f"\n== {name} ({how}): {G.img_resolution} px, neural {G.neural_rendering_resolution} px, "
          f"{r.depth_resolution}+{r.depth_resolution_importance} samples/ray, "
          f"SR {G.cfg.superres.module}" + (f", autocast {amp}" if amp != "none" else ""))
    with low_precision(G, amp):
        return _bench_model(G, c, z, repeats, sr_repeats, rates, show_preview, baseline, graph,
                            compile_too)


def _bench_model(G, c, z, repeats, sr_repeats, rates, show_preview, baseline, graph, compile_too):
    best, ws, planes = stage_times(G, c, z, ("reference", "fast"), repeats, sr_repeats)
    if baseline:
        best["today"] = baseline
    with torch.no_grad():
        cost = limits(G, ws, planes, c)
    ops = op_counts(G, z, c, ws, planes, "fast")
    flops_rate, bandwidth, act_rates, op_us = rates
    today_cols = f"{'today':>8s} {'fast/today':>10s} " if baseline else ""
    print(f"{'stage':10s} {today_cols}{'ref ms':>8s} {'fast ms':>8s} {'ref/fast':>8s} | {'GFLOP':>7s} "
          f"{'MB':>8s} {'Mact':>6s} {'ops':>6s} {'limit ms':>9s} {'fast/limit':>10s}")

    def row(label, keys, lim, extra=""):
        ref, fast = (sum(best[p][k] for k in keys) for p in ("reference", "fast"))
        cols = ""
        if baseline:
            old = sum(best["today"][k] for k in keys)
            cols = f"{old:8.1f} {fast / old:9.2f}x "
        print(f"{label:10s} {cols}{ref:8.1f} {fast:8.1f} {ref / fast:7.2f}x | {extra:24s} "
              f"{sum(ops[k] for k in keys):6d} {lim:9.1f} {fast / max(lim, 1e-9):9.1f}x")

    rows = {}
    for k in STAGES:
        flops, nbytes, acts = cost[k]
        act_s = sum(n / act_rates[name] for name, n in acts.items())
        rows[k] = (max(flops / flops_rate, nbytes / bandwidth) + act_s) * 1e3 + ops[k] * op_us * 1e-3
        row(k, (k,), rows[k], f"{flops / 1e9:7.3f} {nbytes / 1e6:9.1f} {sum(acts.values()) / 1e6:6.2f}")
    for label, keys in (("neural", NEURAL), ("render", NEURAL + ("sr",)), ("end2end", STAGES)):
        row(label, keys, sum(rows[k] for k in keys))
    shared = sum(best["fast"][k] for k in STAGES if k not in NEURAL)
    ceiling = shared + sum(rows[k] for k in NEURAL)
    bases = [("reference", "ref")] + ([("today", "today")] if baseline else [])
    print(f"end2end ceiling: the stages both paths share as measured ({shared:.1f} ms) + the neural "
          f"stages at their limit ({ceiling - shared:.1f} ms) = {ceiling:.1f} ms, i.e. at most "
          + ", ".join(f"{sum(best[p][k] for k in STAGES) / ceiling:.2f}x {name}/fast" for p, name in bases))
    cached = NEURAL + ("sr",)
    fps = {p: 1e3 / sum(best[p][k] for k in cached) for p in best}
    print("FPS from cached planes: " + ", ".join(f"{p} {v:.2f}" for p, v in fps.items()))
    if graph:
        fixed = fixed_shape_fps(G, planes, ws, c, repeats, compile_too)
        print("orbit frame (cached planes), FPS: " + ", ".join(f"{k} {v:.1f}" for k, v in fixed.items()))
        top = max(fixed.values(), default=fps["fast"])
        print(f"best orbit FPS {top:.1f} = {top / fps['reference']:.2f}x the reference path's "
              f"{fps['reference']:.1f}")
    if show_preview:
        settings = preview.PreviewSettings()
        with torch.no_grad():
            preview.render_preview(G, planes, ws, c, settings)
            times = []
            for _ in range(max(3, repeats)):
                t0 = CLOCK()
                preview.render_preview(G, planes, ws, c, settings)
                times.append(CLOCK() - t0)
        print(f"preview ({settings}): {min(times) * 1e3:.1f} ms = {1 / min(times):.1f} FPS")
    return rows


def main(argv=None) -> int:
    global CLOCK, DEVICE, FIXTURES
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to render (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed frames per path (default 2)")
    p.add_argument("--sr-repeats", type=int, default=1,
                   help="timed SR runs (the same module on both paths, timed once per model; default 1)")
    p.add_argument("--preview", action="store_true", help="also time the interactive preview")
    p.add_argument("--amp", choices=tuple(AMP), default="none",
                   help="run the backbone and the SR under autocast in this precision (fp32 "
                        "accumulation; the ray marcher stays fp32; default none)")
    p.add_argument("--graph", action="store_true",
                   help="CUDA: also time the orbit frame replayed from a CUDA graph")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: --graph, and torch.compile(mode='reduce-overhead') of the orbit frame")
    p.add_argument("--parity", action="store_true",
                   help="only compare each model's deterministic frame on --device with the CPU reference")
    p.add_argument("--allocator", choices=("reuse", "default"), default="reuse",
                   help="CPU. reuse: as the viewer's render process and the exports run "
                        "(model.device.reuse_host_memory), after timing today's reference frame with "
                        "glibc's default; default: glibc's default only (default reuse)")
    p.add_argument("--fixtures", default=FIXTURES,
                   help="folder of tiny128 / small512 (.pkl or .safetensors; default ../shared's)")
    args = p.parse_args(argv)
    FIXTURES = args.fixtures
    DEVICE = torch.device(args.device)
    gpu = DEVICE.type == "cuda"
    if gpu and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here")
    if (args.graph or args.compile) and not gpu:
        p.error("--graph and --compile need --device cuda")
    torch.set_num_threads(args.threads)
    if args.parity:
        for name in args.models:
            parity(name, args.amp)
        return 0
    CLOCK = synced(time.perf_counter) if gpu else (time.thread_time if args.threads == 1 else time.perf_counter)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rates = machine_rates(args.amp) + (dispatch_us(),)
    where = (f"{torch.cuda.get_device_name(DEVICE)}" if gpu else
             f"{args.threads} threads, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"torch {torch.__version__}, {where}; measured: "
          f"{'fp32' if args.amp == 'none' else args.amp} matmul {rates[0] / 1e9:.1f} GFLOP/s, memory copy "
          f"{rates[1] / 1e9:.1f} GB/s, "
          + ", ".join(f"{name} {r / 1e9:.2f} G/s" for name, r in rates[2].items())
          + f", {rates[3]:.1f} us per op; times: "
          + ("wall clock after a device sync" if gpu else
             "CPU time of the rendering thread" if args.threads == 1 else "wall clock"))
    baselines = {}
    if args.allocator == "reuse" and not gpu:
        baselines = {name: today(name, args.repeats, args.sr_repeats) for name in args.models}
        if not reuse_host_memory():
            print("note: reuse_host_memory() does not apply here (not glibc): allocator unchanged")
    for name in args.models:
        bench_model(name, args.repeats, args.sr_repeats, rates, args.preview, baselines.get(name),
                    args.amp, args.graph or args.compile, args.compile)
    return 0

if __name__ == "__main__":
    sys.exit(main())
