"""Fitted scenes outside training/ (model/scene.py): file detection, loading, the generator
interface the viewer and the exports use, and turntable / mesh exports of a scene through the
command line. A scene with a planted analytic sphere (no fitting) keeps it fast and exact."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from model import scene as MS

REPO = Path(__file__).resolve().parents[1]
CENTER = (0.05, -0.03, 0.04)       # world units, off-centre so a swapped axis shows
RADIUS = 0.25
BOX = 1.0


def save_sphere_scene(path, resolution: int = 32, plane_res: int = 64) -> Path:
    """A tri-plane scene whose field is an analytic sphere: raw sigma = 40 - 30 |p - c|^2 / R^2
    (= surface_level 10 on the sphere), red = sigmoid(4 x). Planes (clean axes (x,y), (x,z),
    (y,z)) hold channel 0: (x-cx)^2, (z-cz)^2, (y-cy)^2 (normalised coordinates; their sum is
    |x - c|^2) and channel 1: x; the decoder is one linear layer, so sigma is exact up to
    bilinear interpolation."""
    cfg = MS.SSOConfig()
    cfg.field = MS.FieldConfig(repr="triplane", box_size=BOX, plane_resolution=plane_res, plane_channels=2,
                               decoder_layers=1, decoder_hidden=4, decoder_fourier=0)
    cfg.rendering = MS.default_rendering(BOX, 24, 24)
    cfg.background = [1.0, 1.0, 1.0]
    cfg.resolution = resolution
    fld = MS.build_field(cfg.field)
    n = plane_res
    coords = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1          # align_corners=False
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    c = [2 * v / BOX for v in CENTER]
    planes = torch.zeros(1, 3, 2, n, n, dtype=torch.float64)
    planes[0, 0, 0] = (cols - c[0]) ** 2        # plane (x, y): column = x
    planes[0, 1, 0] = (rows - c[2]) ** 2        # plane (x, z): row = z
    planes[0, 2, 0] = (cols - c[1]) ** 2        # plane (y, z): column = y
    planes[0, 0, 1] = cols
    r_n = 2 * RADIUS / BOX
    with torch.no_grad():
        fld.planes.copy_(planes.float())
        lin = fld.decoder[0]
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 0] = -30.0 / r_n ** 2
        lin.bias[0] = 40.0
        lin.weight[1, 1] = 4.0
        lin.bias[3] = 2.0
    info = dict(camera=dict(radius=2.2, focal=1.5, fov_degrees=float(model.camera.intrinsics_to_fov(
        torch.tensor([[1.5, 0, 0.5], [0, 1.5, 0.5], [0, 0, 1.0]])))), resolution=resolution, repr="triplane")
    path = Path(path)
    MS.save_checkpoint(path, fld, cfg, 0, info=info)
    return path


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    run = tmp_path_factory.mktemp("scene_run")
    return save_sphere_scene(run / MS.SCENE_NAME)


def test_model_and_app_never_import_training(scene_path):
    code = ("import sys; import model.scene, app.state, app.export, app.mesh, app.cli, app.viewer, "
            "app.renderer_worker; G = app.state.load_model(sys.argv[1]); "
            "bad = [m for m in sys.modules if m == 'training' or m.startswith('training.')]; "
            "assert not bad, bad; print(type(G).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(scene_path)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SceneGenerator"


def test_detect_and_load(scene_path, tmp_path):
    from app import state as S
    assert MS.is_scene(scene_path) and MS.is_scene(scene_path.parent)
    torch.manual_seed(0)
    gen = tmp_path / "g.safetensors"
    model.save(gen, model.build_generator(model.presets.generator_config("tiny")))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    for p in (gen, junk, tmp_path / "missing.safetensors", tmp_path):
        assert not MS.is_scene(p), p
    assert S.load_model(gen).has_latent
    for p in (scene_path, scene_path.parent):
        G = S.load_model(p)
        assert not G.has_latent and G.repr == "triplane" and G.surface_level == MS.SceneField.surface_level
    sigma = G.scene.density(torch.tensor([CENTER, [CENTER[0] + RADIUS, CENTER[1], CENTER[2]]]))[:, 0]
    np.testing.assert_allclose(sigma.numpy(), [40.0, 10.0], atol=0.1)   # bilinear: ~h^2 error
    # training.sso re-exports the same objects (no second copy of the representations)
    from training import sso
    assert sso.load_scene is MS.load_scene and sso.TriPlaneField is MS.TriPlaneField


def test_scene_renders_through_the_viewer_state(scene_path):
    from app import state as S
    G = S.load_model(scene_path)
    st = S.ViewerState(render_type="final")
    cam = S.resolved_camera(st, G)
    assert cam["radius"] == pytest.approx(2.2) and cam["pivot"] == [0.0, 0.0, 0.0]
    assert cam["fov"] == pytest.approx(G.scene.fov)
    out = S.render_state(G, st)
    assert out["image"].shape == (1, 3, 32, 32)
    alpha = out["image_alpha"][0, 0]
    assert alpha[16, 16] > 0.99 and alpha[0, 0] < 0.01                # the sphere, on a clear background
    # the same pixels as SceneField.render at the same camera (frontal: yaw = pitch = pi/2)
    ref = G.scene.render(G.scene.orbit_label(math.pi / 2, math.pi / 2), 32)
    assert (ref["image"] - out["image"]).abs().max() < 0.02
    for kind in ("final", "depth", "alpha"):
        rgb = S.to_display_rgb(out, st.copy(render_type=kind))
        assert rgb.shape == (32, 32, 3) and rgb.std() > 5


def test_cli_turntable_of_a_scene_decodes(scene_path, tmp_path):
    import imageio_ffmpeg
    from app import cli
    out = tmp_path / "t.mp4"
    assert cli.main(["turntable", "--network", str(scene_path.parent), "--frames", "5", "--fps", "10",
                     "--pitch-range", "10", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(32, 32, 3) for f in reader])
    assert meta["size"] == (32, 32) and meta["codec"].startswith("h264")
    assert frames.shape == (5, 32, 32, 3) and frames.std() > 5


def test_cli_mesh_of_a_scene_has_the_sphere_radius(scene_path, tmp_path):
    import trimesh
    from app import cli
    out = tmp_path / "m.ply"
    assert cli.main(["mesh", "--network", str(scene_path), "--res", "64", "--formats", "mrc", "--out", str(out),
                     "--quiet", "--threads", "1"]) == 0            # level = the scene's surface_level
    assert out.is_file() and out.with_suffix(".mrc").is_file()
    mesh = trimesh.load(out, process=False)
    d = np.linalg.norm(np.asarray(mesh.vertices) - np.asarray(CENTER), axis=1)
    assert abs(d.mean() - RADIUS) < 0.01 and d.std() < 0.01
    assert mesh.is_watertight
    assert abs(mesh.volume - 4 / 3 * math.pi * RADIUS ** 3) / (4 / 3 * math.pi * RADIUS ** 3) < 0.05
    red = np.asarray(mesh.visual.vertex_colors)[:, 0].astype(float)
    assert np.corrcoef(red, np.asarray(mesh.vertices)[:, 0])[0, 1] > 0.9     # red grows with x
