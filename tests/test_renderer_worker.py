"""The render worker without a window: requests carry their options, ws is cached by the latent
section and the conditioning label, and the render process runs below the UI's priority."""
import os
import time

import numpy as np
import pytest
import torch

import model
from app import state as S
from app.renderer_worker import WORKER_NICE, RenderOptions, RenderRequest, RenderWorker


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return model.build_generator(model.presets.generator_config("tiny")).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def worker(G):
    w = RenderWorker(threads=1)
    w.set_model(G)
    yield w
    w.stop()
    assert not w._proc.is_alive()


def render(worker, state, options=RenderOptions(), timeout=60.0):
    serial = worker.submit(RenderRequest(state.copy(), options))
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        frame = worker.poll()
        if frame is not None and frame.serial == serial:
            assert frame.error is None, frame.error
            return frame
        time.sleep(0.005)
    raise AssertionError("no frame")


def test_ws_cache_follows_latent_section_and_conditioning_label(worker):
    s = S.ViewerState(seed=3, render_type="raw", neural_res=16)
    assert not render(worker, s).ws_cached
    again = render(worker, s.copy(yaw=25.0, depth_mult=0.5))      # camera / render only: cached ws
    assert again.ws_cached and again.planes_cached
    for change in (dict(trunc_cutoff=2), dict(mix_enabled=True, mix_layers=[0]), dict(seed_frac=0.5),
                   dict(cond_mode="custom", cond_yaw=20.0)):           # latent fields, the cond label
        assert not render(worker, s.copy(**change)).ws_cached, change
    follow = s.copy(cond_mode="camera", yaw=5.0)
    render(worker, follow)
    assert not render(worker, follow.copy(yaw=30.0)).ws_cached   # cond follows the camera: new ws
    assert render(worker, follow.copy(yaw=30.0, depth_mult=2.0)).ws_cached


def test_render_options_travel_with_the_request(worker):
    s = S.ViewerState(seed=1, render_type="raw", neural_res=16, yaw=30.0)
    plain = render(worker, s)
    assert plain.rgb_b is None and plain.options == RenderOptions()
    split = render(worker, s, RenderOptions(split_ab=True))
    assert split.options.split_ab and split.rgb_b is not None and split.rgb_b.shape == split.rgb.shape
    assert np.abs(split.rgb.astype(float) - split.rgb_b.astype(float)).mean() > 0   # A: frontal cond, B: camera
    hits = render(worker, s.copy(yaw=9.0)).cache_hits
    render(worker, s.copy(yaw=10.0), RenderOptions(cache_planes=False))
    off = render(worker, s.copy(yaw=11.0), RenderOptions(cache_planes=False))
    assert off.cache_hits == hits and not off.planes_cached            # caching off: never a hit
    render(worker, s.copy(yaw=12.0), RenderOptions(sensitivity=True))
    end = time.perf_counter() + 60
    sens = None
    while sens is None and time.perf_counter() < end:
        sens = worker.poll_sensitivity()
        time.sleep(0.01)
    assert sens is not None and set(sens) >= {"yaw", "pitch", "camera"}


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no process priorities on this OS")
def test_render_process_runs_below_the_ui_priority(worker):
    ui = os.getpriority(os.PRIO_PROCESS, 0)
    render(worker, S.ViewerState(render_type="raw", neural_res=16))   # the process has started
    assert worker.pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, ui + WORKER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == ui                  # the UI keeps its own


def test_newest_request_wins_and_a_new_model_drops_old_frames(worker, G):
    s = S.ViewerState(render_type="raw", neural_res=16)
    serials = [worker.submit(RenderRequest(s.copy(yaw=float(i)), RenderOptions())) for i in range(8)]
    frame = render(worker, s.copy(yaw=40.0))
    assert frame.state.camera.yaw == 40.0 and frame.serial > serials[-1]
    assert not worker.busy
    worker.set_model(G)                                               # same model, new serial
    assert worker.poll() is None
    assert render(worker, s).model_serial == 2


def test_generator_and_fitted_scene_share_the_renderable_interface(G, tmp_path):
    """One protocol, one set of render keywords: no signature filtering, no class-name lookups."""
    import inspect
    from model.interface import RENDER_KEYWORDS, Renderable
    from test_scene import save_sphere_scene
    scene = S.load_model(save_sphere_scene(tmp_path / "scene.safetensors"))
    for m in (G, scene):
        assert isinstance(m, Renderable)
        params = inspect.signature(m.render).parameters
        assert list(params)[:3] == ["planes", "ws", "c"]
        assert {k: params[k].default for k in RENDER_KEYWORDS} == {
            "neural_rendering_resolution": None, "deterministic": False, "depth_resolution": None,
            "depth_resolution_importance": None, "superresolution": True}
        assert not any(p.kind == p.VAR_KEYWORD for p in params.values())
    assert G.has_latent and not scene.has_latent
    st = S.ViewerState(render_type="depth", neural_res=16)
    for m in (G, scene):
        out = S.render_state(m, st)
        assert out["image_depth"].shape == (1, 1, 16, 16)


def test_preview_skips_the_super_resolution_and_refines_to_the_full_frame(worker, G):
    """A drag preview shows the raw render (lower neural resolution, half the samples)
    upsampled to the output size; the next full request is the ordinary final image."""
    import torch.nn.functional as F

    from app.renderer_worker import preview_state
    s = S.ViewerState(seed=2, yaw=15.0)
    serial = worker.submit(RenderRequest(s.copy(), RenderOptions(), preview=2))
    end = time.perf_counter() + 60
    frame = None
    while frame is None and time.perf_counter() < end:
        got = worker.poll()
        frame = got if got is not None and got.serial == serial else None
        time.sleep(0.005)
    assert frame is not None and frame.preview
    assert frame.timings.get("superres", 0.0) == 0.0
    cheap = preview_state(s, G, 2)
    out = S.render_state(G, cheap, superresolution=False)
    expected = S.to_display_rgb({**out, "image": F.interpolate(out["image_raw"], size=(G.img_resolution,) * 2,
                                                               mode="bilinear", align_corners=False)}, s)
    assert frame.rgb.shape == (G.img_resolution, G.img_resolution, 3)
    assert np.abs(frame.rgb.astype(int) - expected.astype(int)).max() <= 1
    full = render(worker, s)
    assert not full.preview
    direct = S.to_display_rgb(S.render_state(G, s), s)
    assert np.abs(full.rgb.astype(int) - direct.astype(int)).max() <= 1


def test_render_process_ends_when_the_viewer_dies(tmp_path):
    """A viewer killed outright (no stop message) must not leave its render process behind."""
    import signal
    import subprocess
    import sys

    from conftest import REPO
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from app.renderer_worker import RenderWorker\n"
            "w = RenderWorker(threads=1); print(w._proc.pid, flush=True); time.sleep(600)\n") % str(REPO)
    viewer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(viewer.stdout.readline())
    viewer.send_signal(signal.SIGKILL)
    viewer.wait(10)
    end = time.perf_counter() + 30
    while time.perf_counter() < end:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":     # exited, not yet reaped by init
                    return
        except FileNotFoundError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the render process outlived the viewer")
