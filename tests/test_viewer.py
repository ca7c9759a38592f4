"""The real viewer window under Xvfb + Mesa (llvmpipe): render, orbit, errors, capture, state.

The session starts its own Xvfb server (CI installs `xvfb`); outside CI the tests are skipped
when Xvfb is missing, in CI they fail instead.
"""
import os
import time

import numpy as np
import pytest
import torch

import model
from conftest import xvfb_server
from app import state as S

BG = np.array([0.11, 0.11, 0.12]) * 255        # the viewport background colour


@pytest.fixture(scope="session")
def xvfb_display():
    with xvfb_server(range(97, 140), "1280x800x24") as display:
        yield display


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    torch.manual_seed(1)
    G = model.build_generator(model.presets.generator_config("tiny"))
    path = tmp_path_factory.mktemp("viewer") / "tiny.safetensors"
    model.save(path, G)
    return str(path)


@pytest.fixture(scope="module")
def viewer(xvfb_display, tmp_path_factory):
    from app.viewer import Viewer
    cfg = tmp_path_factory.mktemp("viewer_cfg")
    v = Viewer(model_path=None, size=(1100, 700), vsync=False, config_dir=str(cfg))
    v.settings.out_dir = str(cfg / "out")
    v.settings.show_perf = True
    yield v
    v.close()


def wait_for(v, cond, timeout=30.0):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        v.step()
        if cond():
            return True
        time.sleep(0.03)            # leave the CPU to the render worker (llvmpipe frames cost ~12 ms)
    return False


def settle(v, timeout=30.0):
    assert v.run_until_idle(timeout), "viewer did not settle"


def image_region(v, pixels):
    """The part of the framebuffer where the render is drawn (window -> framebuffer pixels)."""
    sx, sy = v.framebuffer_scale()
    x, y, w, h = v.viewport.image_rect
    assert w > 50 and h > 50, v.viewport.image_rect
    x0, y0 = int(max(x, 0) * sx) + 2, int(max(y, 0) * sy) + 2
    x1 = int(min(x + w, v.viewport.rect[2]) * sx) - 2
    y1 = int(min(y + h, v.viewport.rect[3]) * sy) - 2
    return pixels[y0:y1, x0:x1].astype(np.float32)


def test_starts_without_model(viewer):
    """No model: the viewport says so (the shipped checkpoint may be absent)."""
    for _ in range(3):
        viewer.step()
    assert viewer.model is None
    assert viewer.viewport.image_rect[2] == 0                 # nothing to show yet
    assert viewer.viewport.text.startswith("no model loaded")
    pixels = viewer.read_framebuffer()
    assert pixels.shape[0] >= 700 and pixels.shape[1] >= 1100
    vp = pixels[50:600, 50:600].astype(np.float32)
    assert np.abs(vp.mean(axis=(0, 1)) - BG).max() < 12    # the empty viewport background


def test_open_model_renders_into_viewport(viewer, tiny_path):
    viewer.open_model(tiny_path)
    assert wait_for(viewer, lambda: viewer.model is not None and viewer.frame is not None)
    settle(viewer)
    assert viewer.error is None
    pixels = viewer.read_framebuffer()
    region = image_region(viewer, pixels)
    assert region.std() > 3.0, "viewport is uniform"
    assert np.abs(region.mean(axis=(0, 1)) - BG).max() > 3 or region.std() > 10
    # the viewport shows the finished render: compare with it, resized to the drawn size
    from PIL import Image
    ref = np.asarray(Image.fromarray(viewer.frame.rgb).resize(region.shape[1::-1], Image.BILINEAR),
                     np.float32)
    corr = np.corrcoef(ref.ravel(), region.ravel())[0, 1]
    assert corr > 0.9, corr
    assert abs(ref.mean() - region.mean()) < 8


def test_mouse_drag_orbits_camera(viewer):
    settle(viewer)
    before = image_region(viewer, viewer.read_framebuffer())
    yaw0, pitch0 = viewer.state.yaw, viewer.state.pitch
    x, y, w, h = viewer.viewport.image_rect
    cx, cy = x + w / 2, y + h / 2
    win = viewer.window
    viewer.on_cursor_pos(win, cx + 200, cy + 100)
    viewer.step()
    viewer.on_cursor_pos(win, cx, cy)                 # pointer jump + press in one frame:
    viewer.on_mouse_button(win, 0, viewer.glfw.PRESS, 0)
    viewer.step()
    viewer.step()
    assert (viewer.state.yaw, viewer.state.pitch) == (yaw0, pitch0)   # ... does not orbit
    for i in range(1, 9):
        viewer.on_cursor_pos(win, cx + 12 * i, cy + 4 * i)
        viewer.step()
    viewer.on_mouse_button(win, 0, viewer.glfw.RELEASE, 0)
    viewer.step()
    assert viewer.state.yaw != yaw0 and viewer.state.pitch != pitch0
    assert viewer.state.yaw < yaw0                  # dragging right turns the camera to -yaw
    settle(viewer)
    assert not viewer.frame.preview
    assert viewer.frame.state.yaw == viewer.state.yaw
    after = image_region(viewer, viewer.read_framebuffer())
    assert np.abs(after - before).mean() > 1.0, "image did not change"


def test_fast_drag_between_two_frames_orbits_the_full_distance(viewer):
    """A press, ten moves and the release all arrive before the next UI frame (a busy CPU, a few
    UI FPS): the camera still turns by the whole drag, once."""
    from app.viewer.viewport import ORBIT_DEG_PER_PX
    settle(viewer)
    x, y, w, h = viewer.viewport.image_rect
    cx, cy = x + w / 2, y + h / 2
    win, glfw = viewer.window, viewer.glfw
    viewer.on_cursor_pos(win, cx, cy)
    viewer.step()
    yaw0, pitch0 = viewer.state.camera.yaw, viewer.state.camera.pitch
    viewer.on_mouse_button(win, 0, glfw.PRESS, 0)                  # the burst: no frame in between
    for i in range(1, 11):
        viewer.on_cursor_pos(win, cx + 9 * i, cy + 3 * i)
    viewer.on_mouse_button(win, 0, glfw.RELEASE, 0)
    viewer.step()
    k = ORBIT_DEG_PER_PX / viewer.ctx.scale
    assert viewer.state.camera.yaw == pytest.approx(yaw0 - 90 * k)
    assert viewer.state.camera.pitch == pytest.approx(pitch0 - 30 * k)
    viewer.step()                                                 # applied once, not again
    assert viewer.state.camera.yaw == pytest.approx(yaw0 - 90 * k)
    settle(viewer)
    assert viewer.frame.state.camera == viewer.state.camera and not viewer.frame.preview
    # a drag that starts over the side panel is the panel's, not the camera's
    yaw1 = viewer.state.camera.yaw
    px = viewer.viewport.rect[2] + 60
    viewer.on_cursor_pos(win, px, 300)
    viewer.on_mouse_button(win, 0, glfw.PRESS, 0)
    viewer.on_cursor_pos(win, px - 200, 300)
    viewer.on_mouse_button(win, 0, glfw.RELEASE, 0)
    viewer.step()
    assert viewer.state.camera.yaw == yaw1
    viewer.state.camera.yaw = viewer.state.camera.pitch = 0.0
    settle(viewer)


def test_scroll_zooms_and_reset_key(viewer):
    x, y, w, h = viewer.viewport.image_rect
    viewer.on_cursor_pos(viewer.window, x + w / 2, y + h / 2)
    viewer.step()
    r0 = viewer.camera()["radius"]
    viewer.on_scroll(viewer.window, 0, 2)
    viewer.step()
    assert viewer.camera()["radius"] < r0
    glfw = viewer.glfw
    viewer.on_key(viewer.window, glfw.KEY_R, 0, glfw.PRESS, 0)
    viewer.step()
    viewer.on_key(viewer.window, glfw.KEY_R, 0, glfw.RELEASE, 0)
    viewer.step()
    assert viewer.state.yaw == 0 and viewer.state.radius is None
    seed = viewer.state.seed
    viewer.on_key(viewer.window, glfw.KEY_RIGHT, 0, glfw.PRESS, 0)
    viewer.step()
    viewer.on_key(viewer.window, glfw.KEY_RIGHT, 0, glfw.RELEASE, 0)
    viewer.step()
    assert viewer.state.seed == seed + 1
    settle(viewer)


def test_bad_file_shows_error_and_keeps_model(viewer, tmp_path):
    G = viewer.model
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a model" * 10)
    for path in (str(bad), str(tmp_path / "missing.pkl")):
        viewer.open_model(path)
        assert wait_for(viewer, lambda: not viewer.loading)
        assert viewer.error and path in viewer.error
        assert viewer.model is G
        viewer.step()                                  # the error is drawn without crashing
    viewer.error = None
    viewer.state.latent.seed += 1
    settle(viewer)
    assert viewer.error is None and viewer.frame.state.seed == viewer.state.seed


def test_render_types_split_and_sensitivity(viewer):
    for kind in S.RENDER_TYPES:
        viewer.state.render.type = kind
        settle(viewer)
        assert viewer.error is None, viewer.error
        assert viewer.frame.state.render_type == kind
        assert viewer.frame.rgb.std() > 0.5
    viewer.state.render.type = "final"
    viewer.settings.split_ab = True
    viewer.settings.sensitivity = True
    viewer.state.camera.yaw = 35.0
    settle(viewer)
    assert viewer.frame.rgb_b is not None
    assert wait_for(viewer, lambda: viewer.ctx.sensitivity is not None)
    assert viewer.ctx.sensitivity["yaw"] >= 0 and "camera" in viewer.ctx.sensitivity
    viewer.settings.split_ab = viewer.settings.sensitivity = False
    viewer.state.camera.yaw = 0.0
    settle(viewer)


def test_capture_and_state_files(viewer, tmp_path):
    settle(viewer)
    png = viewer.save_render(str(tmp_path / "render.png"))
    assert png and S.ViewerState.load(png) == viewer.frame.state
    win = viewer.save_window(str(tmp_path / "window.png"))
    viewer.step()
    from PIL import Image
    with Image.open(win) as im:
        assert im.size == tuple(viewer.glfw.get_framebuffer_size(viewer.window))
    viewer.state.latent.seed, viewer.state.latent.mix_enabled, viewer.state.latent.mix_layers = 77, True, [1, 2]
    path = viewer.save_state(str(tmp_path / "view.json"))
    saved = viewer.state.copy()
    viewer.state = S.ViewerState()
    viewer.on_drop(viewer.window, [path])              # drag-and-drop a state file
    assert viewer.state == saved
    bad = tmp_path / "bad.json"
    bad.write_text('{"seed": 1, "colour": "red"}')
    assert not viewer.load_state(str(bad))
    assert "colour" in viewer.error and viewer.state == saved
    bad.write_text('{"version": 2, "camera": {"yaw": 1e308}}')      # non-finite / absurd numbers
    assert not viewer.load_state(str(bad))
    assert "camera.yaw" in viewer.error and viewer.state == saved
    # a bad number set from code reaches neither the worker nor a file
    viewer.error = None
    viewer.state.latent.interp_t = 5.0
    viewer.step()
    assert "latent.interp_t" in viewer.error
    shot = viewer.save_window(str(tmp_path / "bad_window.png"))
    viewer.step()
    assert not os.path.exists(shot) and "latent.interp_t" in viewer.error
    assert viewer.save_state(str(tmp_path / "bad_state.json")) is None and not (tmp_path / "bad_state.json").exists()
    viewer.state.latent.interp_t = 0.0
    viewer.error = None
    settle(viewer)
    assert viewer.frame.state == viewer.state


def test_fast_preview_while_dragging_then_refine(viewer):
    settle(viewer)
    viewer._last_full_ms = 2000.0                     # pretend full renders are slow
    x, y, w, h = viewer.viewport.image_rect
    win, glfw = viewer.window, viewer.glfw
    viewer.on_cursor_pos(win, x + w / 2, y + h / 2)
    viewer.step()
    viewer.on_mouse_button(win, 0, glfw.PRESS, 0)
    viewer.step()
    seen_preview = False
    for i in range(1, 200):
        viewer.on_cursor_pos(win, x + w / 2 - 2 * (i % 40), y + h / 2)
        viewer.step()
        if viewer.frame is not None and viewer.frame.preview:
            seen_preview = True
            break
        time.sleep(0.01)
    assert seen_preview, "no fast preview while dragging"
    assert viewer.frame.rgb.shape[0] == viewer.model.img_resolution   # raw upsampled to the output size
    viewer.on_mouse_button(win, 0, glfw.RELEASE, 0)
    settle(viewer)
    assert not viewer.frame.preview and viewer.frame.state == viewer.state


def test_opens_official_pkl(viewer, fixture_dir):
    G = viewer.model
    viewer.state.render.neural_res, viewer.state.render.depth_mult, viewer.state.render.importance_mult = 32, 0.25, 0.25
    viewer.open_model(str(fixture_dir / "tiny128.pkl"))
    assert wait_for(viewer, lambda: viewer.model is not G and viewer.frame is not None, timeout=60)
    assert viewer.error is None
    assert viewer.ctx.info.img_resolution == 128
    settle(viewer, 60)
    assert viewer.frame.rgb.shape == (128, 128, 3) and viewer.frame.rgb.std() > 0.5
    viewer.open_model(G_path := viewer.recent[1])     # back to the test model via the recent list
    assert wait_for(viewer, lambda: viewer.ctx.info.path == G_path and viewer.frame is not None)
    viewer.state.render.neural_res, viewer.state.render.depth_mult, viewer.state.render.importance_mult = None, 1.0, 1.0
    settle(viewer)


def test_visualizer_help_describes_viewer_options():
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "visualizer.py"), "--help"], capture_output=True,
                         text=True, timeout=60, cwd=repo)
    assert out.returncode == 0, out.stderr
    for opt in ("--state", "--dataset", "--device", "--screenshot", "--font-scale", "model",
                "portrait.safetensors", "turntable"):
        assert opt in out.stdout, opt


def test_turntable_export_with_progress_and_cancel(viewer, tmp_path):
    settle(viewer)
    panel = viewer.panel("Turntable export")
    panel.form.frames, panel.form.fps, panel.form.pitch = 6, 12, 5.0
    out = tmp_path / "tt.mp4"
    job = panel.start(viewer.ctx, str(out))
    assert job is not None
    assert wait_for(viewer, lambda: job.finished, timeout=60)
    assert job.error is None, job.error
    assert out.is_file() and out.stat().st_size > 0 and job.done == job.total == 6
    # a long export is cancelled from the UI and leaves nothing behind
    panel.form.frames = 2000
    out2 = tmp_path / "long.mp4"
    job = panel.start(viewer.ctx, str(out2))
    assert wait_for(viewer, lambda: job.done >= 1 or job.finished, timeout=60)
    job.cancel.set()
    assert wait_for(viewer, lambda: job.finished, timeout=60)
    assert job.error == "cancelled"
    assert not out2.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tt.mp4"]
    viewer.step()


def test_dataset_camera_distribution(viewer, tmp_path):
    import json
    import zipfile
    from app.viewer.dataset_poses import read_dataset_poses
    yaws, pitches = np.array([-30.0, 0.0, 12.5, 40.0]), np.array([10.0, 0.0, -5.0, 20.0])
    labels = model.camera.orbit_label(model.camera.FRONTAL + np.radians(yaws),
                                      model.camera.FRONTAL + np.radians(pitches))
    meta = {"labels": [[f"img{i:08d}.png", lab.tolist()] for i, lab in enumerate(labels)]}
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("dataset.json", json.dumps(meta))
    poses = read_dataset_poses(str(zpath))
    np.testing.assert_allclose(poses[:, 0], yaws, atol=1e-3)
    np.testing.assert_allclose(poses[:, 1], pitches, atol=1e-3)
    viewer.on_drop(viewer.window, [str(zpath)])                 # drop a dataset onto the window
    assert wait_for(viewer, lambda: not viewer.tasks.running("dataset") and viewer.ctx.dataset_poses is not None)
    assert len(viewer.ctx.dataset_poses) == 4 and viewer.ctx.dataset_error is None
    viewer.load_dataset(str(tmp_path / "nothing.zip"))
    assert wait_for(viewer, lambda: not viewer.tasks.running("dataset"))
    assert viewer.ctx.dataset_error and "nothing.zip" in viewer.ctx.dataset_error
    viewer.step()


def test_resize_and_toggle_panel(viewer):
    glfw = viewer.glfw
    settle(viewer)
    w0 = viewer.viewport.rect[2]
    glfw.set_window_size(viewer.window, 900, 600)
    assert wait_for(viewer, lambda: viewer.viewport.rect[3] == 600, timeout=10)
    assert viewer.viewport.rect[2] < w0
    x, y, w, h = viewer.viewport.image_rect
    assert w <= viewer.viewport.rect[2] + 1 and h <= 600       # letterboxed inside the viewport
    viewer.on_key(viewer.window, glfw.KEY_TAB, 0, glfw.PRESS, 0)
    viewer.step()
    viewer.on_key(viewer.window, glfw.KEY_TAB, 0, glfw.RELEASE, 0)
    viewer.step()
    assert not viewer.settings.show_panel and viewer.viewport.rect[2] == 900
    viewer.settings.show_panel = True
    glfw.set_window_size(viewer.window, 1100, 700)
    assert wait_for(viewer, lambda: viewer.viewport.rect[3] == 700, timeout=10)


def test_shipped_checkpoint_opens_and_renders(viewer):
    from app import DEFAULT_MODEL_PATH
    assert DEFAULT_MODEL_PATH.is_file(), f"{DEFAULT_MODEL_PATH} is missing"
    keep = viewer.state.copy()
    viewer.state = S.ViewerState(render_type="raw", neural_res=32, depth_mult=0.25, importance_mult=0.25)
    viewer.open_model(str(DEFAULT_MODEL_PATH))
    assert wait_for(viewer, lambda: not viewer.loading, timeout=120)
    assert viewer.error is None and viewer.ctx.info.path == str(DEFAULT_MODEL_PATH)
    settle(viewer, 120)
    region = image_region(viewer, viewer.read_framebuffer())
    assert region.std() > 3.0
    viewer.state = keep


def test_animation_advances_and_stops(viewer):
    settle(viewer)
    s0 = viewer.state.seed + viewer.state.seed_frac
    viewer.settings.animate, viewer.settings.animate_speed = True, 2.0
    for _ in range(10):
        viewer.step()
        time.sleep(0.02)
    assert viewer.state.seed + viewer.state.seed_frac > s0
    glfw = viewer.glfw
    viewer.on_key(viewer.window, glfw.KEY_ESCAPE, 0, glfw.PRESS, 0)
    viewer.step()
    viewer.on_key(viewer.window, glfw.KEY_ESCAPE, 0, glfw.RELEASE, 0)
    viewer.step()
    assert not viewer.settings.animate
    settle(viewer)
    assert not viewer.frame.preview


def test_every_panel_section_draws(viewer, tmp_path):
    settle(viewer)
    viewer.state.latent.mix_enabled, viewer.state.latent.mix_layers = True, [0, 1]
    viewer.state.render.type = "feature"
    viewer.settings.split_ab = True
    viewer.open_panels(["*"])
    for _ in range(4):
        viewer.step()
    settle(viewer)
    viewer.settings.show_help = True
    pixels = viewer.read_framebuffer()
    assert viewer.ui_errors == []
    assert pixels.std() > 10
    viewer.open_panels(None)
    viewer.settings.show_help = viewer.settings.split_ab = False
    viewer.state.latent.mix_enabled, viewer.state.render.type = False, "final"
    settle(viewer)


def test_inspection_panels_work_only_while_open(viewer, tiny_path):
    """Layers / Tri-planes / Ray inspector: the render process captures, shows and traces only
    while the panel is open; a click on the image picks the ray."""
    if viewer.ctx.info is None or viewer.ctx.info.path != tiny_path:
        viewer.open_model(tiny_path)
        assert wait_for(viewer, lambda: viewer.ctx.info is not None and viewer.ctx.info.path == tiny_path
                        and viewer.frame is not None)
    st = viewer.state
    st.render.neural_res, st.render.type = 32, "raw"
    st.layers.name = "backbone.synthesis.b32.conv1"
    viewer.open_panels(["Layers"])
    assert wait_for(viewer, lambda: viewer.frame is not None and viewer.frame.shows == "layer")
    settle(viewer)
    f = viewer.frame
    assert f.planes_bypassed and f.layer_table and f.rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(f.rgb, S.layer_view(viewer.model, f.state))
    assert image_region(viewer, viewer.read_framebuffer()).std() > 3
    st.layers.name, st.layers.mode = "superresolution.block0.conv1", "grid"     # after the backbone: cached planes
    assert wait_for(viewer, lambda: viewer.frame.state.layers.name == "superresolution.block0.conv1")
    assert not viewer.frame.planes_bypassed and viewer.frame.shows == "layer"
    viewer.open_panels(["Render"])                 # closed: the plain render, no table, no hooks
    assert wait_for(viewer, lambda: viewer.frame.shows == "image" and not viewer.frame.options.layers)
    settle(viewer)
    assert viewer.frame.layer_table is None and not viewer.frame.planes_bypassed
    assert viewer.frame.state.layers.name is None and st.layers.name is not None   # a capture records what it shows
    st.planes.show = True
    viewer.open_panels(["Tri-planes"])
    assert wait_for(viewer, lambda: viewer.frame.shows == "planes")
    settle(viewer)
    assert viewer.frame.rgb.shape[1] > 2 * viewer.frame.rgb.shape[0]
    st.planes.show, st.layers.name = False, None
    viewer.open_panels(["Ray inspector"])
    assert wait_for(viewer, lambda: viewer.frame.shows == "image" and viewer.frame.options.rays)
    settle(viewer)
    x, y, w, h = viewer.viewport.image_rect
    viewer.on_cursor_pos(viewer.window, x + 0.25 * w, y + 0.75 * h)
    viewer.on_mouse_button(viewer.window, 0, viewer.glfw.PRESS, 0)
    viewer.on_mouse_button(viewer.window, 0, viewer.glfw.RELEASE, 0)
    assert wait_for(viewer, lambda: viewer.frame.trace is not None)
    settle(viewer)
    assert np.allclose(st.ray.pixel, [0.25, 0.75], atol=0.01)
    t = viewer.frame.trace
    assert (t["row"], t["col"]) == (24, 8) and abs(t["weights"].sum() - t["image_alpha"]) < 1e-5
    assert viewer.ui_errors == []
    st.ray.pixel = None
    viewer.open_panels(None)
    settle(viewer)


def test_opens_fitted_scene_orbits_and_hides_latent_panels(viewer, tmp_path):
    """A fitted scene (here a planted sphere, model/scene.py format) opens like a model: the
    viewport shows its render, dragging orbits it, final/depth/alpha render, the latent and
    conditioning panels are hidden; the run folder opens too."""
    from test_scene import save_sphere_scene
    G = viewer.model
    path = save_sphere_scene(tmp_path / "run" / "scene.safetensors")
    viewer.on_drop(viewer.window, [str(path.parent)])               # the run folder
    assert wait_for(viewer, lambda: viewer.model is not G and viewer.frame is not None, timeout=60)
    assert viewer.error is None and not viewer.model.has_latent
    assert viewer.state.fov is None and viewer.camera()["fov"] == pytest.approx(viewer.model.scene.fov)
    settle(viewer)
    region = image_region(viewer, viewer.read_framebuffer())
    assert region.std() > 3.0, "viewport is uniform"
    from PIL import Image
    # the 32 px render is magnified ~20x: compare at the render's size
    small = np.asarray(Image.fromarray(region.astype(np.uint8)).resize(viewer.frame.rgb.shape[1::-1], Image.BOX),
                       np.float32)
    c = slice(6, 26)                # the middle, clear of the status line / message / perf overlays
    assert np.corrcoef(viewer.frame.rgb[c, c].astype(np.float32).ravel(), small[c, c].ravel())[0, 1] > 0.9
    yaw0 = viewer.state.yaw
    viewer.orbit(-40, 10)
    settle(viewer)
    assert viewer.frame.state.yaw != yaw0
    for kind in ("depth", "alpha", "final"):
        viewer.state.render.type = kind
        settle(viewer)
        assert viewer.error is None and viewer.frame.rgb.std() > 3
    viewer.open_panels(["*"])
    for _ in range(3):
        viewer.step()
    assert viewer.ui_errors == []
    viewer.open_panels(None)
    assert "Latent" not in viewer.drawn_panels and "Conditioning pose" not in viewer.drawn_panels
    assert "Mesh export" in viewer.drawn_panels and "Camera" in viewer.drawn_panels


def test_mesh_export_with_progress_and_cancel(viewer, tmp_path):
    """The mesh panel's export runs app.mesh.export_mesh in the background (the scene opened
    above: a sphere at the scene's surface level); a cancelled export leaves no file."""
    import trimesh
    from test_scene import CENTER, RADIUS
    assert not viewer.model.has_latent
    panel = viewer.panel("Mesh export")
    panel.form.res, panel.form.obj = 48, True
    out = tmp_path / "m.ply"
    job = panel.start(viewer.ctx, str(out))
    assert job is not None
    assert wait_for(viewer, lambda: job.finished, timeout=60)
    assert job.error is None, job.error
    assert out.is_file() and out.with_suffix(".obj").is_file() and job.done == job.total > 1
    d = np.linalg.norm(np.asarray(trimesh.load(out, process=False).vertices) - np.asarray(CENTER), axis=1)
    assert abs(d.mean() - RADIUS) < 0.015
    panel.form.res, panel.form.chunk, panel.form.obj = 400, 1024, False
    out2 = tmp_path / "big.ply"
    job = panel.start(viewer.ctx, str(out2))
    assert wait_for(viewer, lambda: job.done >= 1 or job.finished, timeout=60)
    job.cancel.set()
    assert wait_for(viewer, lambda: job.finished, timeout=60)
    assert job.error == "cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.obj", "m.ply"]
    panel.form.res, panel.form.chunk = 128, 1 << 16
    viewer.step()


def test_a_dead_render_process_is_reported(viewer):
    """Last (it ends the module's render process): the viewer says so instead of waiting."""
    viewer.worker._proc.terminate()
    assert wait_for(viewer, lambda: "render process stopped" in (viewer.error or ""), timeout=30)
    assert not viewer.busy
