"""Mesh extraction (app/mesh.py) on a known analytic density: a sphere planted in the real tiny
model's tri-planes and decoder, so the grid goes through G.sample_density (plane projection,
bilinear sampling, decoder MLP) exactly as for a trained model."""
import math
import os

import mrcfile
import numpy as np
import pytest
import torch
import trimesh

import model
from app import cli
from app import export as E
from app import mesh as M
from app import state as S

CENTER = (0.06, -0.04, 0.09)      # off-centre, so any swapped or flipped axis shows
RADIUS = 0.28
LEVEL = 10.0
SIGMA_AT_CENTER = 40.0             # raw sigma = 40 - (40 - 10) * r^2 / R^2: = 10 on the sphere
RED_SLOPE = 4.0                    # red = sigmoid(4 x): colours vary along world x


def plant_sphere(G):
    """Make G's field analytic: planes (tiny preset, 'clean' axes (x,y), (x,z), (y,z)) hold
    channel 0: (x-cx)^2, (z-cz)^2, (y-cy)^2 -> their mean is |p - c|^2 / 3; channel 1: 3x, 0, 0 ->
    mean x. The decoder's softplus hidden units get a +30 bias (softplus(t + 30) = t + 30 to
    1e-13), so sigma and the red logit are linear in those means."""
    assert G.cfg.rendering.plane_axes == "clean"
    res = G.cfg.backbone.resolution
    box = G.cfg.rendering.box_warp
    coords = ((torch.arange(res, dtype=torch.float64) + 0.5) / res * 2 - 1) * box / 2   # align_corners=False
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")     # grid x = width = column
    planes = torch.zeros(1, 3, G.cfg.backbone.plane_channels, res, res, dtype=torch.float64)
    cx, cy, cz = CENTER
    planes[0, 0, 0] = (cols - cx) ** 2                             # plane (x, y): column = x
    planes[0, 1, 0] = (rows - cz) ** 2                             # plane (x, z): row = z
    planes[0, 2, 0] = (cols - cy) ** 2                             # plane (y, z): column = y
    planes[0, 0, 1] = 3 * cols
    planes = planes.float()

    fc1, fc2 = G.decoder.net[0], G.decoder.net[2]
    with torch.no_grad():
        w1 = torch.zeros_like(fc1.weight)
        w1[0, 0] = 1.0
        w1[1, 1] = 1.0
        fc1.weight.copy_(w1 / fc1.weight_gain)
        fc1.bias.copy_(torch.full_like(fc1.bias, 30.0) / fc1.bias_gain)
        k = (SIGMA_AT_CENTER - LEVEL) * 3 / RADIUS ** 2               # sigma = 40 - k * (|p-c|^2 / 3)
        w2 = torch.zeros_like(fc2.weight)
        b2 = torch.zeros_like(fc2.bias)
        w2[0, 0] = -k
        b2[0] = SIGMA_AT_CENTER + 30 * k
        w2[1, 1] = RED_SLOPE                                       # red logit = 4 x
        b2[1] = -30 * RED_SLOPE
        b2[3] = 2.0                                                # blue: constant sigmoid(2)
        fc2.weight.copy_(w2 / fc2.weight_gain)
        fc2.bias.copy_(b2 / fc2.bias_gain)
    G.planes = lambda ws, noise_mode="const", **kw: planes.expand(ws.shape[0], -1, -1, -1, -1)
    return G


@pytest.fixture()
def sphere_model():
    torch.manual_seed(0)
    return plant_sphere(model.build_generator(model.presets.generator_config("tiny")).eval())


def test_planted_field_is_the_analytic_sphere(sphere_model):
    G = sphere_model
    pts = torch.rand(1, 500, 3) * 0.8 - 0.4
    out = G.sample_density(G.planes(torch.zeros(1, 1, 1)), pts)
    r2 = ((pts[0].double() - torch.tensor(CENTER, dtype=torch.float64)) ** 2).sum(-1)
    expect = SIGMA_AT_CENTER - (SIGMA_AT_CENTER - LEVEL) * r2 / RADIUS ** 2
    assert torch.allclose(out["sigma"][0, :, 0].double(), expect, atol=0.2)   # bilinear planes


def test_mesh_of_planted_sphere_has_expected_radius_volume_and_colours(sphere_model, tmp_path):
    G = sphere_model
    out = tmp_path / "sphere.ply"
    chunks = []
    paths = M.export_mesh(G, out, S.ViewerState(), seeds=[0], res=64, level=LEVEL, trim=0.0,
                          formats=["obj", "mrc"], chunk=20_000, progress=lambda d, t: chunks.append(t), bar=False)
    assert [p.name for p in paths] == ["sphere.ply", "sphere.obj", "sphere.mrc"]
    assert sorted(os.listdir(tmp_path)) == ["sphere.mrc", "sphere.obj", "sphere.ply"]
    assert chunks and chunks[0] == math.ceil(64 ** 3 / 20_000)    # sampled in bounded chunks

    for path in paths[:2]:
        mesh = trimesh.load(path, process=False)
        v = np.asarray(mesh.vertices)
        radii = np.linalg.norm(v - np.array(CENTER), axis=1)
        assert radii.mean() == pytest.approx(RADIUS, rel=0.01)
        assert radii.std() < 0.01 * RADIUS
        assert np.abs(v.mean(0) - CENTER).max() < 0.005          # world axes, not swapped or flipped
        assert mesh.is_watertight
        assert mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS ** 3, rel=0.02)  # outward faces
        colors = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(np.float64)
        red = (1 / (1 + np.exp(-RED_SLOPE * v[:, 0])) * 1.002 - 0.001) * 255
        blue = (1 / (1 + np.exp(-2.0)) * 1.002 - 0.001) * 255
        assert np.abs(colors[:, 0] - red).max() <= 1.5           # decoder RGB at each vertex
        assert np.abs(colors[:, 2] - blue).max() <= 1.0 and colors[:, 1].max() <= 128

    with mrcfile.open(paths[2]) as mrc:                          # the official layout: x flipped
        data = np.array(mrc.data)
        assert data.shape == (64, 64, 64)
        assert float(mrc.voxel_size.x) == pytest.approx(1 / 63)
    spacing = 1 / 63
    ix, iy, iz = np.unravel_index(np.argmax(np.flip(data, 0)), data.shape)
    assert np.allclose(np.array([ix, iy, iz]) * spacing - 0.5, CENTER, atol=spacing)


def test_trim_level_and_errors(sphere_model, tmp_path):
    G = sphere_model
    spec = M.GridSpec(32, 1.0)
    fn = M.model_density_fn(G, G.planes(torch.zeros(1, 1, 1)))
    full = M.extract_mesh(fn, spec, level=LEVEL, trim=0.0, bar=False)
    lower = M.extract_mesh(fn, spec, level=25.0, trim=0.0, bar=False)      # higher level: smaller sphere
    assert M.signed_volume(lower.verts, lower.faces) < M.signed_volume(full.verts, full.faces)
    r_lower = np.linalg.norm(lower.verts - np.array(CENTER), axis=1).mean()
    assert r_lower == pytest.approx(RADIUS * math.sqrt((40 - 25) / 30), rel=0.02)
    with pytest.raises(E.ExportError, match="outside the density range"):
        M.extract_mesh(fn, spec, level=100.0, bar=False)
    with pytest.raises(E.ExportError, match="end in .ply, .obj or .mrc"):
        M.export_mesh(G, tmp_path / "m.stl", res=8, bar=False)


def test_mesh_interrupt_leaves_nothing(sphere_model, tmp_path):
    def progress(done, total):
        if done == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        M.export_mesh(sphere_model, tmp_path / "m.ply", res=32, level=LEVEL, chunk=4096, progress=progress, bar=False)
    assert os.listdir(tmp_path) == []


def test_cli_mesh_example(tmp_path, capsys):
    """`visualizer.py mesh --network X --seeds 0 --res N --out m.ply` on a saved checkpoint whose
    density crosses the default level 10 (the decoder's density bias raised by 10)."""
    torch.manual_seed(0)
    G = model.build_generator(model.presets.generator_config("tiny"))
    with torch.no_grad():
        G.decoder.net[2].bias[0] += 10.5 / G.decoder.net[2].bias_gain
    ckpt = tmp_path / "tiny.safetensors"
    model.save(ckpt, G)
    out = tmp_path / "m.ply"
    assert cli.main(["mesh", "--network", str(ckpt), "--seeds", "0", "--res", "48", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    mesh = trimesh.load(out, process=False)
    assert len(mesh.faces) > 0 and np.abs(mesh.vertices).max() <= 0.5 * (1 - 30 / 256) + 1e-6  # trimmed box
    header = out.read_bytes()[:600].decode("latin-1")
    assert "seed 0" in header and E.file_digest(ckpt) in header
