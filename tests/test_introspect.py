"""Looking inside the generator: the layer table, layer images, PCA colours and ray traces."""
from __future__ import annotations

import json
import re

import pytest
import torch

import model
from model import introspect
from model.backbone import channels_at


@pytest.fixture(scope="module", params=["tiny128", "small512"])
def official(request, fixture_dir):
    name = request.param
    G = model.load(fixture_dir / f"{name}.pkl")
    keys = json.loads((fixture_dir / f"{name}_state_dict_shapes.json").read_text())["G_ema"]
    return name, G, keys


def _inputs(G, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.z_dim, generator=g)
    c = model.camera.orbit_label(1.8, 1.4, fov_degrees=18.837).expand(batch, -1)
    with torch.no_grad():
        return G.mapping(z, c), c


# Small render settings keep the forward pass cheap; shapes follow them.
RENDER = dict(neural_rendering_resolution=32, depth_resolution=6, depth_resolution_importance=6,
              deterministic=True)


def test_layer_table_names_every_official_block_with_forward_shapes(official):
    name, G, keys = official
    ws, c = _inputs(G)
    table = {info.name: info for info in introspect.list_layers(G, ws, c, **RENDER)}
    blocks = {m.group(1) for k in keys
              for m in [re.match(r"((backbone\.synthesis\.b\d+|superresolution\.block\d)\.(conv0|conv1|torgb))\.", k)] if m}
    assert blocks and blocks <= set(table), sorted(blocks - set(table))
    assert list(table)[:1] == ["mapping"] and list(table)[-1] == "image"
    b, R, N = 2, RENDER["neural_rendering_resolution"], RENDER["depth_resolution"]
    bb = G.cfg.backbone
    assert table["mapping"].shape == (b, G.num_ws, G.w_dim)
    for res in (4, 64, 256):
        ch = channels_at(res, bb.channel_base, bb.channel_max)
        assert table[f"backbone.synthesis.b{res}.conv1"].shape == (b, ch, res, res)
        assert table[f"backbone.synthesis.b{res}.torgb"].shape == (b, bb.out_channels, res, res)
    assert table["planes"].shape == (b, 3, 32, 256, 256)
    assert table["decoder"].shape == (b, R * R * N, 33)
    assert table["feature_image"].shape == (b, 32, R, R)
    S = G.img_resolution
    assert table["superresolution.block1.torgb"].shape == (b, 3, S, S)
    assert table["image"].shape == (b, 3, S, S) and table["image"].dtype == "float32"
    assert [i.stage for i in table.values()].count("superres") == 7


def test_captured_layers_equal_the_direct_computation(tiny_generator):
    G = tiny_generator
    ws, c = _inputs(G, batch=1)
    layers, out = introspect.capture_layers(G, ws, c, **RENDER)
    with torch.no_grad():
        planes = G.planes(ws, noise_mode="const")
        direct = G.render(planes, ws, c, **RENDER)
    torch.testing.assert_close(introspect.layer_image("planes", layers["planes"]),
                               planes[0].reshape(-1, *planes.shape[-2:]))
    torch.testing.assert_close(layers["image"], direct["image"])
    torch.testing.assert_close(layers["feature_image"], direct["feature_image"])
    # The decoder image at coarse sample k is the decoder evaluated at those points.
    R, N, k = RENDER["neural_rendering_resolution"], RENDER["depth_resolution"], 2
    img = introspect.layer_image("decoder", layers["decoder"], resolution=R, sample_index=k)
    c2w, K = model.camera.split_label(c)
    o, d = model.camera.generate_rays(c2w, K, R)
    r = G.cfg.rendering
    depth = r.ray_start + k * (r.ray_end - r.ray_start) / (N - 1)
    probe = G.sample_density(planes, o + depth * d)
    expected = torch.cat([probe["sigma"], probe["rgb"]], -1)[0].T.reshape(-1, R, R)
    torch.testing.assert_close(img, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="sample_index 6 out of range"):
        introspect.layer_image("decoder", layers["decoder"], resolution=R, sample_index=N)
    with pytest.raises(KeyError, match="unknown layer"):
        introspect.capture_layers(G, ws, c, names=["backbone.nope"])


def test_hooks_exist_only_while_capturing(tiny_generator):
    G = tiny_generator
    ws, c = _inputs(G, batch=1)
    introspect.capture_layers(G, ws, c, names=["decoder", "superresolution.block0.conv0"], **RENDER)
    assert all(not m._forward_hooks for m in G.modules())


def test_pca_projection_is_stable_and_ordered():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(3, 40 * 50, generator=g) * torch.tensor([[4.0], [2.0], [1.0]])
    mix = torch.linalg.qr(torch.randn(8, 8, generator=g))[0][:, :3]
    x = (mix @ y).reshape(8, 40, 50) + 0.5
    pca = introspect.PCAProjection.fit(x)
    proj = (x.reshape(8, -1).T - pca.mean) @ pca.basis
    var = proj.var(0)
    assert var[0] > var[1] > var[2] and torch.allclose(var.sum(), (x.reshape(8, -1).T - pca.mean).var(0).sum(), rtol=1e-3)
    rgb = pca.apply(x)
    assert rgb.shape == (40, 50, 3) and 0 <= rgb.min() and rgb.max() <= 1
    # Stable across frames: the same feature vector gets the same colour in another image.
    perm = torch.randperm(40 * 50, generator=g)
    shuffled = x.reshape(8, -1)[:, perm].reshape(8, 40, 50)
    torch.testing.assert_close(pca.apply(shuffled).reshape(-1, 3), rgb.reshape(-1, 3)[perm])


@pytest.mark.parametrize("multipliers", [(1, 1), (2, 0.5)])
def test_ray_trace_matches_the_rendered_pixels(tiny_generator, multipliers):
    G = tiny_generator
    ws, c = _inputs(G, batch=1, seed=5)
    R = 16
    n = int(G.cfg.rendering.depth_resolution * multipliers[0])
    nf = int(G.cfg.rendering.depth_resolution_importance * multipliers[1])
    rays = torch.tensor([0, 5 * R + 7, 8 * R + 8, R * R - 1])
    with torch.no_grad():
        planes = G.planes(ws, noise_mode="const")
        out = G.render(planes, ws, c, neural_rendering_resolution=R, deterministic=True, depth_resolution=n,
                       depth_resolution_importance=nf, return_samples=True, trace_rays=rays)
    t = out["trace"]
    rows, cols = rays // R, rays % R
    assert t.depths.shape == (1, 4, n + nf) and t.weights.shape == (1, 4, n + nf - 1)
    torch.testing.assert_close(t.weights.sum(-1), out["image_alpha"][0, 0, rows, cols][None])
    torch.testing.assert_close(t.opacity, out["image_alpha"][0, 0, rows, cols][None])
    torch.testing.assert_close(t.depth, out["image_depth"][0, 0, rows, cols][None])
    torch.testing.assert_close(t.rgb, out["feature_image"][0, :3, rows, cols].T[None])
    # The colour is the sum of the per-interval contributions (mapped to [-1, 1]).
    torch.testing.assert_close(t.contribution.sum(-2) * 2 - 1, t.rgb)
    torch.testing.assert_close(t.weights, t.transmittance * (1 - torch.exp(
        -t.density * (t.depths[..., 1:] - t.depths[..., :-1]))))
    torch.testing.assert_close(t.depths_coarse, out["depths_coarse"][:, rays, :, 0])
    torch.testing.assert_close(t.depths_fine, out["depths_fine"][:, rays, :, 0])
    torch.testing.assert_close(t.weights_coarse, out["weights_coarse"][:, rays, :, 0])
    # Reproducible: the deterministic trace is the same the second time.
    with torch.no_grad():
        again = G.render(planes, ws, c, neural_rendering_resolution=R, deterministic=True, depth_resolution=n,
                         depth_resolution_importance=nf, trace_rays=rays)["trace"]
    assert torch.equal(again.weights, t.weights)


def test_plane_labels():
    assert introspect.plane_labels("official") == ["xy", "xz", "zx"]
    assert introspect.plane_labels("clean") == ["xy", "xz", "yz"]
