"""Projections in the viewer (Xvfb + Mesa): open a projection file as the current latent, orbit,
mix and capture it; the Invert panel's task runs `model.invert` in its own process, opens the
result, cancels with the best so far, and saves it under the overwrite rule.

Reference pixels are direct renders of the projection (`model.inversion.render`, the same
deterministic renderer the projector optimised through), not the viewer's own code.
"""
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

import model
from app import state as S
from model import inversion as inv
from model import projection as proj

from conftest import REPO
from test_viewer import image_region, settle, wait_for, xvfb_display  # noqa: F401  (fixture)

SHIPPED = REPO / "checkpoints" / "portrait.safetensors"
TARGET_SEED = 101
TARGET_YAW = 20.0
FAST = inv.InversionConfig(w_avg_samples=1000)     # w_avg from fewer samples: seconds, not tens


def to_u8(image):
    return (image[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def direct(loaded, ws, state):
    """The projection's image from the state's camera, rendered without the viewer."""
    with torch.no_grad():
        return to_u8(inv.render(loaded.G, ws, S.camera_label(state, loaded.G))["image"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A target image (a held-out seed from yaw 20) and a small w+ / PTI projection of it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("invert_viewer")
    G = model.load(SHIPPED)
    st = S.ViewerState(seed=TARGET_SEED, yaw=TARGET_YAW)
    target = d / "target.png"
    Image.fromarray(S.to_display_rgb(S.render_state(G, st), st)).save(target)
    from app.invert_cli import load_image
    with torch.enable_grad():
        p = inv.invert(G, load_image(str(target), G.img_resolution), S.camera_label(st, G), space="w+",
                       steps=3, pti_steps=2)
    path = proj.save_projection(d / "face.safetensors", p, network=SHIPPED)
    torch.set_num_threads(before)
    return dict(dir=d, target=target, projection=str(path))


@pytest.fixture(scope="module")
def viewer(xvfb_display, tmp_path_factory):  # noqa: F811
    from app.viewer import Viewer
    cfg = tmp_path_factory.mktemp("viewer_inv_cfg")
    v = Viewer(model_path=None, size=(1100, 760), vsync=False, config_dir=str(cfg), threads=1)
    v.settings.out_dir = str(cfg / "out")
    yield v
    v.close()


def wait_slowly(v, cond, timeout=180.0):
    """wait_for at the pace of the viewer's own loop while a task runs (it waits 0.1 s for events),
    so the inversion process gets the CPU rather than a test loop redrawing the window."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        v.step()
        if cond():
            return True
        time.sleep(0.1)
    return False


def open_and_settle(v, path):
    v.open_model(path)
    assert wait_for(v, lambda: not v.loading and v.model is not None and v.frame is not None, 60)
    settle(v, 60)
    assert v.error is None, v.error


def test_projection_opens_as_the_projected_latent(viewer, files):
    path = files["projection"]
    viewer.state = S.ViewerState(seed=7, trunc_psi=0.5, mix_enabled=True, mix_layers=[3])
    open_and_settle(viewer, path)
    lat = viewer.state.latent
    assert lat.projection == os.path.abspath(path) and lat.projection_sha256 == proj.file_sha256(path)
    assert lat.trunc_psi == 1.0 and not lat.mix_enabled           # the projection as it was made
    viewer.open_panels(["Latent", "Invert"])
    viewer.step()
    assert viewer.panel("Latent").heading == "projected: face.safetensors"
    loaded = model.load_projection(path)
    assert loaded.tuned                                           # PTI ran: the viewer renders the tuned G
    expected = direct(loaded, loaded.ws, viewer.frame.state)
    got = viewer.frame.rgb
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    region = image_region(viewer, viewer.read_framebuffer())      # and that is what the window shows
    ref = np.asarray(Image.fromarray(expected).resize(region.shape[1::-1], Image.BILINEAR), np.float32)
    assert np.corrcoef(ref.ravel(), region.ravel())[0, 1] > 0.9
    assert abs(ref.mean() - region.mean()) < 8


def test_orbit_mixing_and_render_types_on_the_projection(viewer, files):
    loaded = model.load_projection(files["projection"])
    viewer.state.camera.yaw, viewer.state.camera.pitch = -25.0, 8.0
    settle(viewer)
    assert np.abs(viewer.frame.rgb.astype(int) - direct(loaded, loaded.ws, viewer.state).astype(int)).max() <= 1
    frame0 = viewer.frame.rgb.copy()
    lat = viewer.state.latent                                     # the projection mixed with a seed
    lat.mix_enabled, lat.mix_seed, lat.mix_layers = True, 5, [0, 1, 2, 3]
    settle(viewer)
    assert viewer.frame.ws_cached is False
    z = torch.from_numpy(S.z_from_seed(5, loaded.G.z_dim)).float()
    with torch.no_grad():
        w5 = loaded.G.mapping(z, S.conditioning_label(viewer.state, loaded.G))
    ws = loaded.ws.clone()
    ws[:, :4] = w5[:, :4]
    mixed = viewer.frame.rgb
    assert np.abs(mixed.astype(int) - direct(loaded, ws, viewer.state).astype(int)).max() <= 1
    assert np.abs(mixed.astype(float) - frame0).mean() > 2          # the mix seed's coarse styles show
    viewer.state.render.type = "depth"
    settle(viewer)
    assert viewer.frame.rgb.shape[0] == loaded.G.neural_rendering_resolution and viewer.error is None
    viewer.state.render.type = "final"
    lat.mix_enabled = False
    settle(viewer)


def test_turntable_and_mesh_panels_export_the_projection(viewer, files, tmp_path):
    """The viewer's export panels film and mesh the projection: the turntable's frames are direct
    renders of it at the path's yaws, the mesh is the one of the CLI's projected generator."""
    import imageio_ffmpeg
    import trimesh
    from app import mesh as M
    loaded = model.load_projection(files["projection"])
    viewer.state.camera.yaw, viewer.state.camera.pitch = 0.0, 0.0
    settle(viewer)
    panel = viewer.panel("Turntable export")
    panel.form.frames, panel.form.fps, panel.form.pitch, panel.form.path = 4, 4, 0.0, "360"
    out = tmp_path / "tt.mp4"
    job = panel.start(viewer.ctx, str(out))
    assert wait_for(viewer, lambda: job.reported, 60) and job.error is None, job.error
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    assert len(frames) == 4
    for k, frame in enumerate(frames):                 # yaw 0, 90, 180, 270 (H.264: lossy)
        expected = direct(loaded, loaded.ws, viewer.state.copy(yaw=90.0 * k))
        assert np.abs(frame.astype(float) - expected).mean() < 4, k
    seed_view = direct(loaded, S.compute_ws(loaded.G, S.ViewerState(seed=0)), viewer.state)
    assert np.abs(frames[0].astype(float) - seed_view).mean() > 8       # not a seed's render
    mesh_panel = viewer.panel("Mesh export")
    mesh_panel.form.res, mesh_panel.form.obj = 32, False
    job = mesh_panel.start(viewer.ctx, str(tmp_path / "m.ply"))
    assert wait_for(viewer, lambda: job.reported, 60) and job.error is None, job.error
    ref = M.export_mesh(loaded.as_generator(), tmp_path / "ref.ply", S.ViewerState(trunc_psi=1.0), res=32,
                        level=mesh_panel.form.level, trim=mesh_panel.form.trim, formats=["ply"], bar=False)
    a = trimesh.load(tmp_path / "m.ply", process=False)
    b = trimesh.load(ref[0], process=False)
    assert len(a.vertices) > 100 and np.array_equal(np.asarray(a.vertices), np.asarray(b.vertices))


def test_capture_and_state_reference_the_projection_file(viewer, files, tmp_path):
    png = viewer.save_render(str(tmp_path / "capture.png"))
    state = S.ViewerState.load(png)
    assert state.latent == viewer.frame.state.latent and state.latent.projection == os.path.abspath(files["projection"])
    js = tmp_path / "view.json"
    viewer.save_state(str(js))
    assert js.stat().st_size < 2000                               # a path and a hash, not the floats
    assert S.ViewerState.load(js) == viewer.state
    # the exports reproduce the capture from the state alone (the file's generator, the state's latent)
    from app import cli
    out = tmp_path / "still.png"
    assert cli.main(["images", "--network", files["projection"], "--state", str(png), "--quiet",
                     "--out", str(out)]) == 0
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert np.abs(got - np.asarray(Image.open(png).convert("RGB")).astype(int)).max() <= 1


def test_invert_panel_runs_cancels_and_saves(viewer, files, tmp_path):
    from app.viewer.panels.invert import InvertPanel
    panel = viewer.panel(InvertPanel)
    if viewer.model is None:
        open_and_settle(viewer, files["projection"])
    viewer.on_drop(viewer.window, [str(files["target"])])           # a dropped photo goes to the panel
    viewer.open_panels(["Invert"])
    viewer.step()
    assert panel.form.image == str(files["target"])
    panel.form.camera, panel.form.steps, panel.form.space = "current", 4, "w"
    viewer.state.camera.yaw, viewer.state.camera.pitch = TARGET_YAW, 0.0
    task = panel.start(viewer.ctx, threads=1, config=FAST)
    assert task is not None
    assert wait_slowly(viewer, lambda: task.reported and not viewer.loading and not viewer.busy), task.error
    assert task.error is None and panel.outcome is not None and not panel.outcome.interrupted
    out = panel.outcome.path
    assert os.path.dirname(out) == os.path.join(viewer.settings.out_dir, "projections")
    assert viewer.state.latent.projection == os.path.abspath(out)      # the result is the current latent
    assert viewer.ctx.info.path == out
    loaded = model.load_projection(out)
    assert len(loaded.history["psnr"]) == 4 and panel.live.psnr == pytest.approx(loaded.history["psnr"])
    assert panel.live.images is not None and [im.shape for im in panel.live.images] == [(128, 128, 3)] * 3
    settle(viewer)
    assert np.abs(viewer.frame.rgb.astype(int) - direct(loaded, loaded.ws, viewer.state).astype(int)).max() <= 1

    # cancel: the best result so far is saved and opened
    panel.form.steps = 400
    task = panel.start(viewer.ctx, threads=1, config=FAST)
    assert wait_slowly(viewer, lambda: task.done >= 10)
    task.cancel.set()
    assert wait_slowly(viewer, lambda: task.reported and not viewer.loading and not viewer.busy), task.error
    assert task.error is None and panel.outcome.interrupted and 10 <= panel.outcome.steps < 400
    cancelled = panel.outcome.path
    assert cancelled != out and viewer.state.latent.projection == os.path.abspath(cancelled)
    kept = model.load_projection(cancelled)
    assert json.loads(kept.metadata["interrupted"]) is True
    assert len(kept.history["psnr"]) == panel.outcome.steps
    target = torch.from_numpy(np.asarray(Image.open(files["target"]).convert("RGB"), np.float32).copy())
    target = (target.permute(2, 0, 1)[None] / 127.5 - 1)
    with torch.no_grad():
        again = inv.render(kept.G, kept.ws, kept.camera)["image"]
    print("cancelled after", panel.outcome.steps, "steps: PSNR of the kept latent", inv.psnr(again, target),
          "history", [round(v, 2) for v in kept.history["psnr"]])
    assert inv.psnr(again, target) > kept.history["psnr"][0] + 0.5    # better than where it started

    # save: a new file copies the projection and the view follows it; an existing one is kept
    dest = tmp_path / "mine.safetensors"
    panel.form.save_path, panel.form.overwrite = str(dest), False
    assert panel.save(viewer.ctx) is not None
    assert wait_for(viewer, lambda: not viewer.busy, 30)
    assert dest.read_bytes() == open(cancelled, "rb").read()
    assert viewer.state.latent.projection == str(dest)
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"mine")
    viewer.error = None
    assert panel.save(viewer.ctx, str(other)) is None and "overwrite" in viewer.error
    assert other.read_bytes() == b"mine"
    panel.form.overwrite = True                                    # asked for: replaced
    assert panel.save(viewer.ctx, str(other)) is not None
    assert wait_for(viewer, lambda: not viewer.busy, 30)
    assert other.read_bytes() == dest.read_bytes()
    assert viewer.state.latent.projection == str(other)
    assert panel.save(viewer.ctx, str(other)) is None and "input" in viewer.error  # never its own source
    assert other.read_bytes() == open(cancelled, "rb").read()
    viewer.error = None


def test_opening_a_seed_model_leaves_the_projection(viewer, files):
    open_and_settle(viewer, str(SHIPPED))
    assert viewer.state.latent.projection is None and viewer.state.latent.projection_sha256 is None
    viewer.open_panels(["Latent"])
    viewer.step()
    assert viewer.panel("Latent").heading.startswith("seed")
