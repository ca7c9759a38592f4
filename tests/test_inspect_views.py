"""The viewer side of looking inside the generator: the render process's layer table, layer and
planes views against the hooked tensors after the documented normalisation (app.state.display),
the ray inspector through the worker, and the `--render layer:/planes` exports decoded back."""
import json
import re

import numpy as np
import pytest
import torch

import model
from app import cli
from app import state as S
from app.renderer_worker import RenderOptions, RenderRequest, RenderWorker, _Renderer
from app.state import display as D

SMALL = dict(neural_res=32, depth_mult=0.25, importance_mult=0.25, render_type="raw")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return model.build_generator(model.presets.generator_config("tiny")).eval().requires_grad_(False)


def by_hand(x: np.ndarray, lo=None, hi=None) -> np.ndarray:
    """The documented one-channel normalisation, written out: 1st..99th percentile, Turbo."""
    if lo is None:
        f = x[np.isfinite(x)].astype(np.float64)
        lo, hi = np.percentile(f, [1.0, 99.0])
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return (D._turbo(np.nan_to_num(t)) * 255 + 0.5).astype(np.uint8)


def hooked(G, module, state):
    """The module's output in one render of the state, hooked by the test itself."""
    store = {}
    h = module.register_forward_hook(lambda m, i, o: store.setdefault("x", (o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            S.render_state(G, state)
    finally:
        h.remove()
    return store["x"]


@pytest.mark.parametrize("name", ["tiny128", "small512"])
def test_layer_table_in_the_frame_names_every_official_block(fixture_dir, name):
    G = model.load(fixture_dir / f"{name}.pkl").eval().requires_grad_(False)
    keys = json.loads((fixture_dir / f"{name}_state_dict_shapes.json").read_text())["G_ema"]
    blocks = {m.group(1) for k in keys
              for m in [re.match(r"((backbone\.synthesis\.b\d+|superresolution\.block\d)\.(conv0|conv1|torgb))\.", k)] if m}
    r = _Renderer()
    r.set_model(G)
    state = S.ViewerState(seed=2, **SMALL)
    frame = r.render(RenderRequest(state, RenderOptions(layers=True)))
    table = {row[0]: row for row in frame.layer_table}
    assert blocks and blocks <= set(table), sorted(blocks - set(table))
    assert {"mapping", "planes", "decoder", "feature_image", "image"} <= set(table)
    # The shapes are a forward pass's, at the state's render settings.
    kw = S.render_settings(G, state)
    R, N = kw["neural_rendering_resolution"], kw["depth_resolution"]
    assert table["decoder"][2] == (1, R * R * N, 33) and table["feature_image"][2] == (1, 32, R, R)
    assert table["image"][2] == (1, 3, G.img_resolution, G.img_resolution)
    assert table["planes"][2] == (1, 3, 32, 256, 256) and table["image"][3] == "float32"
    assert frame.shows == "image" and not frame.planes_bypassed   # no layer selected: the render


def test_layer_view_is_the_hooked_channel_normalised(G):
    st = S.ViewerState(seed=4, **SMALL).copy(layer="backbone.synthesis.b32.conv1", layer_channel=3)
    x = hooked(G, G.backbone.synthesis.b32.conv1, st)[0].numpy()
    np.testing.assert_array_equal(S.layer_view(G, st), by_hand(x[3]))
    grid = S.layer_view(G, st.copy(layer_mode="grid", layer_grid=5))          # 3 columns, 2 rows
    h, w = x.shape[1:]
    assert grid.shape == (2 * h + D.GRID_GAP, 3 * w + 2 * D.GRID_GAP, 3)
    np.testing.assert_array_equal(grid[h + 1:, w + 1:2 * w + 1], by_hand(x[4]))
    assert not grid[h + 1:, 2 * w + 2:].any()                                 # no 6th channel: black
    from model.introspect import PCAProjection
    pca = PCAProjection.fit(torch.from_numpy(x))
    np.testing.assert_array_equal(S.layer_view(G, st.copy(layer_mode="pca")),
                                  (pca.apply(torch.from_numpy(x)).numpy() * 255 + 0.5).astype(np.uint8))
    # A fixed range, and the decoder at one coarse sample.
    np.testing.assert_array_equal(S.layer_view(G, st.copy(layer_range=[-0.5, 0.5])), by_hand(x[3], -0.5, 0.5))
    dec_state = st.copy(layer="decoder", layer_channel=0, layer_sample=1)
    dec = S.layer_view(G, dec_state)
    assert dec.shape == (32, 32, 3)
    cache = S.PlanesCache()                   # a non-backbone layer reuses cached planes: same view
    for _ in range(2):
        np.testing.assert_array_equal(S.layer_view(G, dec_state, planes_cache=cache), dec)
    assert (cache.misses, cache.hits) == (1, 1)
    assert S.bypasses_planes_cache("backbone.synthesis.b32.conv1") and not S.bypasses_planes_cache("decoder")


def test_planes_view_is_the_planes_side_by_side(G):
    st = S.ViewerState(seed=6, **SMALL).copy(planes_show=True, planes_channel=5)
    with torch.no_grad():
        planes = G.planes(S.compute_ws(G, st), noise_mode="const")
    side = S.planes_side_by_side(planes)
    H, W = planes.shape[-2:]
    for k in range(3):
        torch.testing.assert_close(side[:, :, k * (W + D.PLANES_GAP):k * (W + D.PLANES_GAP) + W], planes[0, k])
    assert torch.isnan(side[:, :, W:W + D.PLANES_GAP]).all()
    rgb = S.planes_view(G, st)
    p = planes[0, :, 5].numpy()                             # [3, H, W]: one range over the three
    lo, hi = np.percentile(p.astype(np.float64), [1.0, 99.0])
    for k in range(3):
        x0 = k * (W + D.PLANES_GAP)
        np.testing.assert_array_equal(rgb[:, x0:x0 + W], by_hand(p[k], lo, hi))
    assert not rgb[:, W:W + D.PLANES_GAP].any()
    # Overlays only add marks: the frustum footprint changes some pixels, not the size.
    framed = S.planes_view(G, st.copy(planes_frustum=True))
    assert framed.shape == rgb.shape and 0 < (framed != rgb).any(-1).sum() < rgb.shape[0] * rgb.shape[1] / 2
    assert (framed[(framed != rgb).any(-1)] == 255).all()


def test_ray_inspector_through_the_worker(G):
    st = S.ViewerState(seed=3, neural_res=24, render_type="raw", depth_mult=2.0, importance_mult=0.5,
                       yaw=15.0).copy(ray_pixel=[0.52, 0.47])
    w = RenderWorker(threads=1)
    try:
        w.set_model(G)
        frames = []
        for _ in range(2):
            serial = w.submit(RenderRequest(st.copy(), RenderOptions(rays=True)))
            for _ in range(3000):
                f = w.poll()
                if f is not None and f.serial == serial:
                    break
                import time
                time.sleep(0.01)
            assert f is not None and f.error is None and f.inspect_error is None, (f and (f.error, f.inspect_error))
            frames.append(f)
    finally:
        w.stop()
    t = frames[0].trace
    # An independent render in this process: the pixel's depth and opacity.
    with torch.no_grad():
        out = S.render_state(G, st)
    R = 24
    row, col = int(0.47 * R), int(0.52 * R)
    assert (t["row"], t["col"], t["ray"]) == (row, col, row * R + col)
    kw = S.render_settings(G, st)
    assert len(t["depths_coarse"]) == kw["depth_resolution"] and len(t["depths_fine"]) == kw["depth_resolution_importance"]
    np.testing.assert_allclose(t["weights"].sum(), float(out["image_alpha"][0, 0, row, col]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["depth"], float(out["image_depth"][0, 0, row, col]), rtol=1e-5)
    np.testing.assert_allclose(t["opacity"], t["image_alpha"], rtol=1e-6)
    for key in ("weights", "depths", "transmittance", "contribution"):
        np.testing.assert_array_equal(frames[1].trace[key], t[key])      # deterministic: reproducible


def test_cli_render_layer_and_planes_decode_back(G, tmp_path, capsys):
    from PIL import Image
    ckpt = tmp_path / "tiny.safetensors"
    model.save(ckpt, G)
    base = ["images", "--network", str(ckpt), "--seeds", "3", "--nrr", "32", "--sample-mult", "0.25", "--quiet"]
    assert cli.main(base + ["--render", "layer:backbone.synthesis.b16.conv0:2", "--out", str(tmp_path / "l.png")]) == 0
    G2 = S.load_model(ckpt)
    st = S.ViewerState(seed=3, neural_res=32, depth_mult=0.25, importance_mult=0.25).copy(
        layer="backbone.synthesis.b16.conv0", layer_channel=2)
    x = hooked(G2, G2.backbone.synthesis.b16.conv0, st)[0, 2].numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png").convert("RGB")), by_hand(x))
    assert cli.main(base + ["--render", "planes", "--feature-channel", "1", "--out", str(tmp_path / "p.png")]) == 0
    got = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(got, S.planes_view(G2, st.copy(layer=None, planes_show=True, planes_channel=1)))
    # The overwrite rule (a file we did not write is kept) and one-line errors stay.
    (tmp_path / "mine.png").write_bytes(b"user data")
    assert cli.main(base + ["--render", "planes", "--out", str(tmp_path / "mine.png")]) != 0
    assert (tmp_path / "mine.png").read_bytes() == b"user data"
    assert cli.main(base + ["--render", "layer:nope.x", "--out", str(tmp_path / "n.png")]) != 0
    err = capsys.readouterr().err
    assert "layer:nope.x: no such layer" in err and len([l for l in err.splitlines() if "nope" in l]) == 1
    assert cli.main(base + ["--render", "layer:a b", "--out", str(tmp_path / "n.png")]) == 2
    for bad in ("layer:decoder:grid0", "layer:decoder:grid65", "layer:decoder:pcaa", "planes:grid4"):
        with pytest.raises(SystemExit) as exc:                           # argparse: usage error
            cli.main(base + ["--render", bad, "--out", str(tmp_path / "n.png")])
        assert exc.value.code == 2
    assert "'gridN' (N = 1..64)" in capsys.readouterr().err


def test_cli_render_pca_and_grid_views_decode_back(G, tmp_path):
    """--render layer:NAME:pca / :gridN and planes:pca give the viewer's views of those modes."""
    from PIL import Image
    ckpt = tmp_path / "tiny.safetensors"
    model.save(ckpt, G)
    base = ["images", "--network", str(ckpt), "--seeds", "3", "--nrr", "32", "--sample-mult", "0.25", "--quiet"]
    G2 = S.load_model(ckpt)
    st = S.ViewerState(seed=3, neural_res=32, depth_mult=0.25, importance_mult=0.25)
    layer = "backbone.synthesis.b16.conv0"
    cases = {"pca": st.copy(layer=layer, layer_mode="pca"), "grid4": st.copy(layer=layer, layer_mode="grid", layer_grid=4)}
    for view, expected_state in cases.items():
        out = tmp_path / f"{view}.png"
        assert cli.main(base + ["--render", f"layer:{layer}:{view}", "--out", str(out)]) == 0
        got = np.asarray(Image.open(out).convert("RGB"))
        want = S.layer_view(G2, expected_state)
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(*[np.asarray(Image.open(tmp_path / f"{v}.png").convert("RGB"))[:8, :8] for v in cases])
    out = tmp_path / "planes_pca.png"
    assert cli.main(base + ["--render", "planes:pca", "--out", str(out)]) == 0
    got = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(got, S.planes_view(G2, st.copy(planes_show=True, planes_mode="pca")))
    assert not np.array_equal(got, S.planes_view(G2, st.copy(planes_show=True)))


def test_export_planes_writes_pngs_and_the_raw_tensor(G, tmp_path):
    from app.export import export_planes, free_stem
    from model.output import OutputRefused
    st = S.ViewerState(seed=9)
    stem = free_stem(str(tmp_path / "planes"))
    paths = export_planes(G, stem, st)
    assert G.cfg.rendering.plane_axes == "clean"                         # the third plane is yz
    assert [p.name for p in paths] == [f"planes_000_{l}.png" for l in ("xy", "xz", "yz")] + ["planes_000.npy"]
    with torch.no_grad():
        planes = G.planes(S.compute_ws(G, st), noise_mode="const")
    np.testing.assert_array_equal(np.load(paths[-1]), planes[0].numpy())
    from PIL import Image
    view = S.planes_view(G, st.copy(planes_show=True))
    W = planes.shape[-1]
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1]).convert("RGB")), view[:, W + D.PLANES_GAP:2 * W + D.PLANES_GAP])
    assert free_stem(str(tmp_path / "planes")).endswith("planes_001")
    np.save(tmp_path / "mine.npy", np.zeros(3))
    with pytest.raises(OutputRefused):
        export_planes(G, tmp_path / "mine", st)
    assert np.load(tmp_path / "mine.npy").shape == (3,)


def test_inspection_state_round_trips_and_is_checked():
    st = S.ViewerState().copy(layer="decoder", layer_mode="grid", layer_grid=9, layer_sample=2,
                              planes_show=True, planes_mode="pca", planes_frustum=True, ray_pixel=[0.25, 0.75])
    back = S.ViewerState.from_json(st.to_json())
    assert back == st and back.layers.name == "decoder" and back.ray.pixel == [0.25, 0.75]
    old = json.loads(S.ViewerState().to_json())
    for sec in ("layers", "planes", "ray"):
        del old[sec]
    assert S.ViewerState.from_dict(old) == S.ViewerState()               # older files still load
    for bad, field in ((dict(layer="x/../y"), "layers.name"), (dict(layer_grid=0), "layers.grid"),
                       (dict(planes_mode="grid"), "planes.mode"), (dict(ray_pixel=[0.5, 1.5]), "ray.pixel"),
                       (dict(layer_range=[1.0, 0.0]), "layers.range")):
        with pytest.raises(S.StateError, match=re.escape(field)):
            S.ViewerState().copy(**bad).validate()


def test_shipped_models_are_the_checkpoints_with_a_card(tmp_path):
    from app.state.models import shipped_models
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "a.md").write_text("# Model card: a\n")
    (tmp_path / "b.safetensors").write_bytes(b"x")           # no card: not shipped
    assert shipped_models(tmp_path) == [("a", str(tmp_path / "a.safetensors"), "Model card: a")]
    (tmp_path / "c.safetensors").write_bytes(b"x")
    (tmp_path / "c.md").write_text("# c\n")
    assert [m[0] for m in shipped_models(tmp_path)] == ["a", "c"]      # read again on each call
    assert "portrait" in [m[0] for m in shipped_models()]


def test_model_info_carries_filled_defaults(fixture_dir, G):
    from app.viewer.context import ModelInfo
    official = model.load(fixture_dir / "tiny128.pkl")
    info = ModelInfo.of(official, "tiny128.pkl")
    assert info.filled_defaults == tuple(official.cfg.filled_defaults) and info.plane_axes == "official"
    assert ModelInfo.of(G, "tiny.safetensors").filled_defaults is None


def test_turntable_of_a_layer_keeps_the_first_frame_range(G, tmp_path):
    from PIL import Image
    ckpt = tmp_path / "tiny.safetensors"
    model.save(ckpt, G)
    out = tmp_path / "frames"
    assert cli.main(["turntable", "--network", str(ckpt), "--seeds", "2", "--nrr", "16", "--sample-mult", "0.25",
                     "--frames", "2", "--render", "layer:decoder:0", "--png-frames", "--out", str(out), "--quiet"]) == 0
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("*.png"))]
    assert len(frames) == 2 and frames[0].shape == (16, 16, 3) and (frames[0] != frames[1]).any()
    G2 = S.load_model(ckpt)
    from app.export import camera_path
    yaws, pitches = camera_path("360", 2)
    images = []
    for f in range(2):
        st = S.ViewerState(seed=2, neural_res=16, depth_mult=0.25, importance_mult=0.25,
                           yaw=float(yaws[f]), pitch=float(pitches[f])).copy(layer="decoder")
        images.append(S.capture_layer(G2, st)["image"][0].numpy())
    lo, hi = np.percentile(images[0].astype(np.float64), [1.0, 99.0])
    for f in range(2):                         # one range, measured on the first frame
        np.testing.assert_array_equal(frames[f], by_hand(images[f], lo, hi))


def test_latent_walk_of_the_planes_keeps_the_first_frame_range(G):
    """A walk's planes change every frame; their one-channel colours use the first frame's range
    (per-frame ranges made videos flicker), and the first frame is the viewer's view."""
    from app.export import StateRenderer
    st = S.ViewerState(seed=4).copy(planes_show=True, planes_channel=3)
    with torch.no_grad():
        ws = [S.compute_ws(G, st.copy(seed=s)) for s in (4, 11)]
        sides = [D.planes_side_by_side(G.planes(w, noise_mode="const"))[3] for w in ws]
    renderer = StateRenderer(G, cache_size=1)
    frames = [renderer.render([st], [w], cache=False)[0] for w in ws]
    first = S.robust_range(sides[0])
    np.testing.assert_array_equal(frames[0], D.colour_channel(sides[0]))
    np.testing.assert_array_equal(frames[1], D.colour_channel(sides[1], first))
    assert S.robust_range(sides[1]) != first
    assert not np.array_equal(frames[1], D.colour_channel(sides[1]))   # a per-frame range would differ
