"""The render worker without a window: requests carry their options, ws is cached by the latent
section and the conditioning label, and the worker thread runs below the UI's priority."""
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


@pytest.fixture()
def worker(G, one_thread):
    w = RenderWorker()
    w.set_model(G)
    yield w
    w.stop()


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


def count_mapping(G, monkeypatch):
    calls = []
    real = G.mapping

    def mapping(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(G, "mapping", mapping)
    return calls


def test_ws_cache_follows_latent_section_and_conditioning_label(worker, G, monkeypatch):
    calls = count_mapping(G, monkeypatch)
    s = S.ViewerState(seed=3, render_type="raw", neural_res=16)
    render(worker, s)
    n = len(calls)
    assert n >= 1
    render(worker, s.copy(yaw=25.0, depth_mult=0.5))              # camera / render only: cached ws
    assert len(calls) == n
    for change in (dict(trunc_cutoff=2), dict(mix_enabled=True, mix_layers=[0]), dict(seed_frac=0.5),
                   dict(cond_mode="custom", cond_yaw=20.0)):           # every latent field, the cond label
        before = len(calls)
        render(worker, s.copy(**change))
        assert len(calls) > before, change
    before = len(calls)
    follow = s.copy(cond_mode="camera", yaw=5.0)
    render(worker, follow)
    render(worker, follow.copy(yaw=30.0))       # conditioning follows the camera: new label, new ws
    assert len(calls) >= before + 2


def test_render_options_travel_with_the_request(worker):
    s = S.ViewerState(seed=1, render_type="raw", neural_res=16, yaw=30.0)
    plain = render(worker, s)
    assert plain.rgb_b is None and plain.options == RenderOptions()
    split = render(worker, s, RenderOptions(split_ab=True))
    assert split.options.split_ab and split.rgb_b is not None and split.rgb_b.shape == split.rgb.shape
    assert np.abs(split.rgb.astype(float) - split.rgb_b.astype(float)).mean() > 0   # A: frontal cond, B: camera
    hits = worker.cache.hits
    render(worker, s.copy(yaw=10.0), RenderOptions(cache_planes=False))
    render(worker, s.copy(yaw=11.0), RenderOptions(cache_planes=False))
    assert worker.cache.hits == hits                                   # caching off: never a hit
    render(worker, s.copy(yaw=12.0), RenderOptions(sensitivity=True))
    end = time.perf_counter() + 60
    sens = None
    while sens is None and time.perf_counter() < end:
        sens = worker.poll_sensitivity()
        time.sleep(0.01)
    assert sens is not None and set(sens) >= {"yaw", "pitch", "camera"}


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread priorities on this OS")
def test_worker_thread_runs_below_the_ui_priority(worker):
    end = time.perf_counter() + 5
    while worker.native_id is None and time.perf_counter() < end:
        time.sleep(0.01)
    ui = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, worker.native_id) == min(19, ui + WORKER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == ui                  # the UI thread keeps its own


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
