"""The viewer state: JSON round trip, validation, and the pure render functions on a real model."""
import json

import numpy as np
import pytest
import torch

import model
from app import state as S


@pytest.fixture(scope="module")
def G(tmp_path_factory):
    torch.manual_seed(0)
    g = model.build_generator(model.presets.generator_config("tiny"))
    path = tmp_path_factory.mktemp("state") / "tiny.safetensors"
    model.save(path, g)
    return model.load(path)


def _busy_state():
    return S.ViewerState(seed=1234, seed_frac=0.25, trunc_psi=0.55, trunc_cutoff=7,
                         interp_enabled=True, interp_seed_a=3, interp_seed_b=99, interp_t=0.3125,
                         mix_enabled=True, mix_seed=42, mix_layers=[2, 3, 9], yaw=-23.4567,
                         pitch=12.5, radius=2.95, fov=14.1, pivot=[0.0, 0.05, 0.21],
                         cond_mode="custom", cond_yaw=7.77, cond_pitch=-3.3, render_type="feature",
                         feature_channel=17, neural_res=48, depth_mult=0.5, importance_mult=2.0,
                         noise_mode="none", deterministic=False, depth_range=[2.3, 3.2],
                         feature_range=[-0.5, 0.75])


V1_JSON = """{"cond_mode": "custom", "cond_pitch": -3.3, "cond_yaw": 7.77, "deterministic": false,
 "depth_mult": 0.5, "depth_range": [2.3, 3.2], "feature_channel": 17, "feature_range": [-0.5, 0.75],
 "fov": 14.1, "importance_mult": 2.0, "interp_enabled": true, "interp_seed_a": 3, "interp_seed_b": 99,
 "interp_t": 0.3125, "mix_enabled": true, "mix_layers": [2, 3, 9], "mix_seed": 42, "neural_res": 48,
 "noise_mode": "none", "pitch": 12.5, "pivot": [0.0, 0.05, 0.21], "radius": 2.95, "render_type": "feature",
 "seed": 1234, "seed_frac": 0.25, "trunc_cutoff": 7, "trunc_psi": 0.55, "version": 1, "yaw": -23.4567}"""


def _png_with_text(path, text):
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text(S.PNG_STATE_KEY, text)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, pnginfo=info)


def test_json_round_trip_is_exact_and_grouped():
    for s in (S.ViewerState(), _busy_state()):
        text = s.to_json()
        back = S.ViewerState.from_json(text)
        assert back == s
        assert back.to_json() == text
        data = json.loads(text)
        assert data["version"] == S.STATE_VERSION == 2
        assert set(data) == {"version", "latent", "camera", "conditioning", "render", "layers", "planes", "ray"}
    d = json.loads(_busy_state().to_json())
    assert d["latent"]["mix_layers"] == [2, 3, 9] and d["camera"]["yaw"] == -23.4567
    assert d["conditioning"] == {"mode": "custom", "yaw": 7.77, "pitch": -3.3}
    assert d["render"]["type"] == "feature"


def test_version_1_files_and_pngs_still_load(tmp_path):
    """A state file and a PNG written by the version-1 viewer (flat keys) load into the sections."""
    expect = _busy_state()
    assert S.ViewerState.from_json(V1_JSON) == expect
    (tmp_path / "old.json").write_text(V1_JSON)
    assert S.ViewerState.load(tmp_path / "old.json") == expect
    _png_with_text(tmp_path / "old.png", V1_JSON)
    assert S.ViewerState.load(tmp_path / "old.png") == expect
    assert S.ViewerState.from_json('{"version": 1, "seed": 5}') == S.ViewerState(seed=5)


def test_flat_names_route_to_sections():
    s = S.ViewerState(seed=3, yaw=10.0, cond_mode="camera", render_type="depth")
    assert (s.latent.seed, s.camera.yaw, s.conditioning.mode, s.render.type) == (3, 10.0, "camera", "depth")
    assert (s.seed, s.yaw, s.cond_mode, s.render_type) == (3, 10.0, "camera", "depth")   # read-only aliases
    with pytest.raises(AttributeError):
        s.yaw = 5.0
    t = s.copy(yaw=20.0, mix_layers=[1])
    assert t.camera.yaw == 20.0 and s.camera.yaw == 10.0 and t.latent.mix_layers == [1]
    t.latent.mix_layers.append(2)
    assert s.latent.mix_layers == []                     # deep copy
    with pytest.raises(TypeError, match="colour"):
        s.copy(colour=1)
    assert s.copy(camera=S.CameraSection(yaw=1.0)).camera == S.CameraSection(yaw=1.0)


def test_latent_key_covers_every_field():
    """The ws cache key changes with every latent field (a new field can never serve stale ws)."""
    import dataclasses
    base = S.LatentSection()
    changed = dict(seed=1, seed_frac=0.5, trunc_psi=0.5, trunc_cutoff=3, interp_enabled=True, interp_seed_a=4,
                   interp_seed_b=5, interp_t=0.5, mix_enabled=True, mix_seed=9, mix_layers=[1],
                   projection="p.safetensors", projection_sha256="0" * 64)
    assert set(changed) == {f.name for f in dataclasses.fields(S.LatentSection)}
    keys = {base.key()}
    for name, value in changed.items():
        k = dataclasses.replace(base, **{name: value}).key()
        assert k not in keys, name
        keys.add(k)
    hash(base.key())


def test_unknown_key_and_bad_values_are_named():
    with pytest.raises(S.StateError, match="'sed'"):
        S.ViewerState.from_json('{"sed": 3}')
    with pytest.raises(S.StateError, match="'sed'.*latent"):
        S.ViewerState.from_json('{"latent": {"sed": 3}}')
    with pytest.raises(S.StateError, match="render_type"):
        S.ViewerState.from_json('{"render_type": "normals"}')
    with pytest.raises(S.StateError, match="render.type"):
        S.ViewerState.from_json('{"render": {"type": "normals"}}')
    with pytest.raises(S.StateError, match="seed"):
        S.ViewerState.from_json('{"seed": "abc"}')
    with pytest.raises(S.StateError, match="seed"):
        S.ViewerState.from_json('{"seed": -1}')
    with pytest.raises(S.StateError, match="not valid JSON"):
        S.ViewerState.from_json("{")
    with pytest.raises(S.StateError, match="trunc_psi"):
        S.ViewerState.from_json('{"trunc_psi": true}')
    with pytest.raises(S.StateError, match="version 7"):
        S.ViewerState.from_json('{"version": 7}')
    assert issubclass(S.StateError, ValueError)


BAD_NUMBERS = [
    ("latent", "trunc_psi", "NaN"), ("latent", "trunc_psi", "1e308"), ("latent", "seed", "1e308"),
    ("latent", "seed_frac", "1.0"), ("latent", "interp_t", "5"), ("latent", "interp_t", "-0.1"),
    ("latent", "trunc_cutoff", "-1"), ("latent", "mix_layers", "[-1]"), ("latent", "mix_layers", "[1e308]"),
    ("camera", "yaw", "Infinity"), ("camera", "yaw", "1e308"), ("camera", "pitch", "-Infinity"),
    ("camera", "radius", "0"), ("camera", "radius", "1e308"), ("camera", "fov", "200"), ("camera", "fov", "NaN"),
    ("camera", "pivot", "[0, NaN, 0]"), ("camera", "pivot", "[0, 0]"), ("conditioning", "yaw", "NaN"),
    ("conditioning", "pitch", "1e308"), ("render", "depth_mult", "0"), ("render", "depth_mult", "Infinity"),
    ("render", "importance_mult", "1e308"), ("render", "neural_res", "3"), ("render", "neural_res", "1e308"),
    ("render", "feature_channel", "1e9"), ("render", "depth_range", "[3, 2]"), ("render", "depth_range", "[0, Infinity]"),
    ("render", "feature_range", "[NaN, 1]"),
]


@pytest.mark.parametrize("section,name,value", BAD_NUMBERS, ids=[f"{s}.{n}={v}" for s, n, v in BAD_NUMBERS])
def test_non_finite_and_absurd_numbers_are_refused_naming_the_field(section, name, value, tmp_path):
    """At the boundary: state JSON and PNG metadata; the error names the field (and the file)."""
    text = f'{{"version": 2, "{section}": {{"{name}": {value}}}}}'
    with pytest.raises(S.StateError, match=f"{section}.{name}="):
        S.ViewerState.from_json(text)
    _png_with_text(tmp_path / "bad.png", text)
    with pytest.raises(S.StateError, match=f"bad.png: .*{section}.{name}="):
        S.ViewerState.load(tmp_path / "bad.png")


def test_a_bad_state_is_never_written(tmp_path):
    """A state made bad in code (a viewer field, a script) refuses to serialise: no JSON, no PNG text."""
    s = S.ViewerState()
    s.latent.interp_t = 5.0
    with pytest.raises(S.StateError, match="latent.interp_t"):
        s.save(tmp_path / "v.json")
    assert not (tmp_path / "v.json").exists()
    s = S.ViewerState()
    s.camera.yaw = float("nan")
    with pytest.raises(S.StateError, match="camera.yaw"):
        S.png_state_text(s)
    s = S.ViewerState()
    s.latent.seed = 2.5
    with pytest.raises(S.StateError, match="latent.seed"):
        s.validate()


def test_file_and_png_round_trip(tmp_path):
    from app.export import save_png
    s = _busy_state()
    s.save(tmp_path / "v.json")
    assert S.ViewerState.load(tmp_path / "v.json") == s
    save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "v.png", extra_text=S.png_state_text(s))
    assert S.ViewerState.load(tmp_path / "v.png") == s
    save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "plain.png")
    assert S.state_from_png_safe(tmp_path / "plain.png") is None
    assert S.state_from_png_safe(tmp_path / "v.json") is None
    with pytest.raises(S.StateError, match="plain.png: PNG has no viewer state"):
        S.ViewerState.load(tmp_path / "plain.png")
    (tmp_path / "fake.png").write_bytes(b"not a png at all")
    with pytest.raises(S.StateError, match="fake.png"):
        S.ViewerState.load(tmp_path / "fake.png")
    with pytest.raises(S.StateError, match="missing.json"):
        S.ViewerState.load(tmp_path / "missing.json")


def test_labels(G):
    s = S.ViewerState(yaw=20.0, pitch=-10.0, cond_mode="frontal")
    cam = S.camera_label(s, G)
    cond = S.conditioning_label(s, G)
    assert cam.shape == (1, 25) and cond.shape == (1, 25)
    frontal = model.camera.orbit_label(model.camera.FRONTAL, model.camera.FRONTAL,
                                       G.cfg.rendering.avg_camera_radius,
                                       G.cfg.rendering.avg_camera_pivot)
    assert torch.allclose(cond, frontal)
    assert not torch.allclose(cam, frontal)
    assert torch.equal(S.conditioning_label(s.copy(cond_mode="camera"), G), cam)
    custom = S.conditioning_label(s.copy(cond_mode="custom", cond_yaw=20.0, cond_pitch=-10.0), G)
    assert torch.allclose(custom, cam)        # same pose, same default fov / radius / pivot
    yaw, pitch, radius = model.camera.yaw_pitch_radius(cam[:, :16].reshape(-1, 4, 4))
    assert abs(float(yaw) - (model.camera.FRONTAL + np.radians(20))) < 1e-4
    assert abs(float(pitch) - (model.camera.FRONTAL - np.radians(10))) < 1e-4


def test_compute_ws_matches_official_recipe(G):
    s = S.ViewerState(seed=5, trunc_psi=0.6)
    c = S.conditioning_label(s, G)
    z = torch.from_numpy(np.random.RandomState(5).randn(1, G.z_dim)).float()
    expect = G.mapping(z, c, truncation_psi=0.6)
    assert torch.allclose(S.compute_ws(G, s), expect)
    # fractional seed and A->B interpolate in w
    w6 = S.compute_ws(G, s.copy(seed=6))
    half = S.compute_ws(G, s.copy(seed_frac=0.5))
    assert torch.allclose(half, (expect + w6) / 2, atol=1e-6)
    ab = S.compute_ws(G, s.copy(interp_enabled=True, interp_seed_a=5, interp_seed_b=6, interp_t=0.5))
    assert torch.allclose(ab, half, atol=1e-6)
    # style mixing replaces exactly the chosen layers
    mixed = S.compute_ws(G, s.copy(mix_enabled=True, mix_seed=6, mix_layers=[1, 4]))
    assert torch.allclose(mixed[:, [1, 4]], w6[:, [1, 4]])
    keep = [i for i in range(G.num_ws) if i not in (1, 4)]
    assert torch.allclose(mixed[:, keep], expect[:, keep])


def test_render_state_and_display(G):
    cache = S.PlanesCache()
    s = S.ViewerState(seed=2)
    t = {}
    out = S.render_state(G, s, cache, timings=t)
    assert out["image"].shape == (1, 3, G.img_resolution, G.img_resolution)
    assert set(t) >= {"mapping", "planes", "render", "superres"} and t["superres"] > 0
    out2 = S.render_state(G, s.copy(yaw=30.0), cache)
    assert cache.hits == 1 and cache.misses == 1
    assert not torch.equal(out["image"], out2["image"])
    again = S.render_state(G, s, None)
    assert torch.equal(out["image"], again["image"])       # deterministic by default
    for kind in S.RENDER_TYPES:
        st = s.copy(render_type=kind, feature_channel=5)
        o = S.render_state(G, st, cache)
        rgb = S.to_display_rgb(o, st)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.std() > 0.5, kind
        if kind != "final":
            assert "image" not in o                          # no super-resolution when not shown
            assert rgb.shape[:2] == (G.neural_rendering_resolution,) * 2
    big = S.to_display_rgb(out, s, size=100)
    assert big.shape == (100, 100, 3)
    # render settings follow the multipliers
    kw = S.render_settings(G, s.copy(depth_mult=2.0, importance_mult=0.5, neural_res=16))
    r = G.cfg.rendering
    assert kw["depth_resolution"] == 2 * r.depth_resolution
    assert kw["depth_resolution_importance"] == round(0.5 * r.depth_resolution_importance)
    assert kw["neural_rendering_resolution"] == 16


def test_fov_defaults_to_the_models_avg_camera_fov(tmp_path):
    """state.fov None = the model's avg_camera_fov (a ShapeNet-style focal here), in the render
    camera, the conditioning pose and the exports; an explicit fov still wins."""
    from app import export as E
    torch.manual_seed(0)
    cfg = model.presets.generator_config("tiny")
    cfg.rendering.avg_camera_fov = 49.13
    path = tmp_path / "wide.safetensors"
    model.save(path, model.build_generator(cfg))
    G = S.load_model(path)
    assert G.cfg.rendering.avg_camera_fov == 49.13                    # stored in the header
    s = S.ViewerState()
    assert s.fov is None and S.ViewerState.from_json(s.to_json()).fov is None
    wide = model.camera.fov_to_intrinsics(49.13)
    for label in (S.camera_label(s, G), S.conditioning_label(s, G)):
        assert torch.allclose(label[0, 16:].reshape(3, 3), wide)
    assert S.resolved_camera(s, G)["fov"] == 49.13
    narrow = S.camera_label(s.copy(fov=18.837), G)
    assert torch.allclose(narrow[0, 16:].reshape(3, 3), model.camera.fov_to_intrinsics(18.837))
    # the exports render the same camera
    out = E.export_images(G, tmp_path / "stills", s.copy(render_type="raw", neural_res=16), bar=False)[0]
    meta = E.read_png_metadata(out)
    assert meta["cameras"][0]["fov"] == 49.13
    assert np.allclose(np.asarray(meta["cameras"][0]["label"][16:]).reshape(3, 3), wide.numpy(), atol=1e-6)


def test_robust_range_is_shared_and_weighted():
    d = np.linspace(2.0, 3.0, 1000).astype(np.float32)
    a = np.zeros_like(d)
    a[:500] = 1.0
    lo, hi = S.robust_range(d, a)                                    # opaque half only
    assert 2.0 <= lo < 2.02 and 2.48 < hi <= 2.5
    lo_t, hi_t = S.robust_range([torch.from_numpy(d[:500]), torch.from_numpy(d[500:])])   # pooled, no weights
    assert lo_t == pytest.approx(np.percentile(d, 1)) and hi_t == pytest.approx(np.percentile(d, 99))
    assert S.robust_range(np.full(10, 5.0)) == (5.0, 5.0 + 1e-6)
    assert S.robust_range(np.array([np.nan])) == (0.0, 1.0)
