"""Official snapshots in the shapes users actually hold, built from the shared fixtures' pickles:
with an AugmentPipe object, G_ema only, older rendering_kwargs, a neural rendering resolution
that differs from the constructor default, and torch 1.x module state."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import model
from model import pkl_import
from official_pickle import modules, persistent, read_raw, with_state, write_snapshot

# Torch-2 nn.Module bookkeeping a torch 1.x pickle does not have.
TORCH2_ONLY_STATE = ("_backward_pre_hooks", "_is_full_backward_hook", "_forward_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                     "_state_dict_pre_hooks", "_load_state_dict_post_hooks")


@pytest.fixture(scope="module")
def raw(fixture_dir):
    return {name: read_raw(fixture_dir / f"{name}.pkl") for name in ("tiny128", "small512")}


def _render(G, seed=0):
    torch.manual_seed(seed)
    z = torch.randn(1, G.z_dim)
    c = model.camera.orbit_label(1.7, 1.5, fov_degrees=18.837)
    with torch.no_grad():
        return G(z, c, noise_mode="const", deterministic=True)["image_raw"]


@pytest.fixture(scope="module")
def tiny_g(fixture_dir):
    return model.load(fixture_dir / "tiny128.pkl")


def test_roundtrip_writer_reproduces_the_fixture(raw, tmp_path, tiny_g):
    """The test writer itself: re-pickling the parsed fixture gives identical tensors, and leaves
    the interpreter as it was (no stand-in module or class stays behind)."""
    modules_before, sequential = set(sys.modules), torch.nn.Sequential
    path = write_snapshot(tmp_path / "copy.pkl", raw["tiny128"])
    assert set(sys.modules) == modules_before and torch.nn.modules.container.Sequential is sequential
    G = model.load(path)
    assert G.cfg == tiny_g.cfg
    for (k, a), (_, b) in zip(G.state_dict().items(), tiny_g.state_dict().items()):
        assert torch.equal(a, b), k


def test_augment_pipe_object_is_skipped_and_readable_as_data(raw, tmp_path, tiny_g):
    data = dict(raw["tiny128"])
    state = {"training": True, "_parameters": {}, "_modules": {},
             "_buffers": {"p": torch.tensor([0.123]), "Hz_geom": torch.randn(12)},
             "_init_kwargs": {"xflip": 1, "rotate90": 1, "xint": 1, "scale": 1, "rotate": 1,
                              "aniso": 1, "xfrac": 1, "brightness": 1, "contrast": 1, "lumaflip": 1,
                              "hue": 1, "saturation": 1}, "_init_args": ()}
    data["augment_pipe"] = persistent("AugmentPipe", state)
    path = write_snapshot(tmp_path / "ada.pkl", data)
    G = model.load(path)
    assert torch.equal(_render(G), _render(tiny_g))
    aug = pkl_import.read_snapshot(path)["augment_pipe"]
    assert aug.class_name == "AugmentPipe" and aug.init_kwargs["xflip"] == 1
    assert aug.state_dict["p"].item() == pytest.approx(0.123)
    out = subprocess.run([sys.executable, "-m", "model.inspect", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "AugmentPipe" in out.stdout and "p = 0.1230" in out.stdout


def test_g_ema_only(raw, tmp_path, tiny_g):
    """Redistributed files hold only G_ema; the official loader refuses them, we do not."""
    path = write_snapshot(tmp_path / "g_ema.pkl", {"G_ema": raw["tiny128"]["G_ema"]})
    assert torch.equal(_render(model.load(path)), _render(tiny_g))
    with pytest.raises(model.CheckpointError, match=r"g_ema\.pkl.*no network 'D'"):
        model.load(path, net="D")
    out = tmp_path / "g_ema.safetensors"
    res = subprocess.run([sys.executable, "-m", "model.convert", str(path), str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert torch.equal(_render(model.load(out)), _render(tiny_g))


# Keys the official code reads with .get(key, default), and the default it uses.
OPTIONAL_KEYS = {"gpc_reg_prob": None, "density_reg": 0, "density_reg_p_dist": 0.004, "reg_type": "l1",
                 "decoder_lr_mul": 1, "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0],
                 "white_back": False, "c_scale": 0}


def _without_keys(net_obj, keys):
    kwargs = dict(net_obj.state["_init_kwargs"])
    kwargs["rendering_kwargs"] = {k: v for k, v in kwargs["rendering_kwargs"].items() if k not in keys}
    return with_state(net_obj, {**net_obj.state, "_init_kwargs": kwargs,
                                "rendering_kwargs": kwargs["rendering_kwargs"]})


def test_older_rendering_kwargs_get_the_official_defaults(raw, tmp_path, capsys):
    path = write_snapshot(tmp_path / "old.pkl", {"G_ema": _without_keys(raw["small512"]["G_ema"], OPTIONAL_KEYS)})
    G = model.load(path, verbose=True)
    cfg = G.cfg
    assert cfg.c_scale == 0                                  # official: pose conditioning off
    assert cfg.regularization.gpc_reg_prob is None
    assert cfg.regularization.density_reg == 0 and cfg.regularization.reg_type == "l1"
    assert cfg.decoder.lr_multiplier == 1 and cfg.rendering.white_back is False
    assert cfg.rendering.avg_camera_radius == 2.7 and list(cfg.rendering.avg_camera_pivot) == [0, 0, 0]
    for key in OPTIONAL_KEYS:
        assert any(f"['{key}']" in note for note in cfg.filled_defaults), key
        assert key not in cfg.official_keys
    err = capsys.readouterr().err
    assert "old.pkl" in err and "c_scale'] = 0" in err and "avg_camera_pivot'] = [0, 0, 0]" in err
    # c_scale 0 means the label does not reach the mapping: any two cameras give the same ws.
    z = torch.randn(1, G.z_dim)
    a, b = (G.mapping(z, model.camera.orbit_label(y, 1.57)) for y in (1.2, 2.0))
    assert torch.equal(a, b)
    # The report survives conversion and is printed by convert and inspect.
    out = tmp_path / "old.safetensors"
    res = subprocess.run([sys.executable, "-m", "model.convert", str(path), str(out)], capture_output=True, text=True)
    assert res.returncode == 0 and "defaults filled in" in res.stdout and "c_scale" in res.stdout
    assert model.load(out).cfg.filled_defaults == cfg.filled_defaults
    res = subprocess.run([sys.executable, "-m", "model.inspect", str(out)], capture_output=True, text=True)
    assert "pose conditioning off (c_scale = 0" in res.stdout and "defaults filled in" in res.stdout


def test_neural_rendering_resolution_attribute_wins(raw, tmp_path):
    g = raw["small512"]["G_ema"]
    assert g.state["neural_rendering_resolution"] == 128      # the constructor default is 64
    assert model.load(write_snapshot(tmp_path / "a.pkl", {"G_ema": g})).neural_rendering_resolution == 128
    bare = with_state(g, {k: v for k, v in g.state.items() if k != "neural_rendering_resolution"})
    assert model.load(write_snapshot(tmp_path / "b.pkl", {"G_ema": bare})).neural_rendering_resolution == 64


def test_torch1_module_state(raw, tmp_path, tiny_g):
    """torch 1.x pickles lack the hook dictionaries that torch 2.x modules carry."""
    data = copy.deepcopy(raw["tiny128"])
    for net in ("G", "G_ema", "D"):
        for obj in modules(data[net]):
            for key in TORCH2_ONLY_STATE:
                obj.state.pop(key, None)
    path = write_snapshot(tmp_path / "torch1.pkl", data)
    assert "_forward_hooks_with_kwargs" not in pkl_import.restricted_load(path)["G_ema"].state
    assert torch.equal(_render(model.load(path)), _render(tiny_g))
    D = model.load(path, net="D")
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(),
                                                 model.load(write_snapshot(tmp_path / "d.pkl", raw["tiny128"]),
                                                            net="D").state_dict().values()))


@pytest.mark.parametrize("name", ["tiny128", "small512"])
def test_safetensors_roundtrip_is_exact(fixture_dir, tmp_path, name):
    """Our own safetensors of an imported model round-trip exactly, for each SR variant."""
    src = fixture_dir / f"{name}.pkl"
    out = tmp_path / f"{name}.safetensors"
    res = subprocess.run([sys.executable, "-m", "model.convert", str(src), str(out), "--nets", "G_ema,G,D"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for net in ("G_ema", "G", "D"):
        a, b = model.load(src, net=net), model.load(out, net=net)
        assert a.cfg == b.cfg
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sr_structure_comes_from_the_snapshot(raw, tmp_path):
    """8XDC has no module-level resample_filter; the 2X has one. A stray buffer is reported with
    the official class it belongs to."""
    assert "superresolution.resample_filter" not in model.load(
        write_snapshot(tmp_path / "s.pkl", {"G_ema": raw["small512"]["G_ema"]})).state_dict()
    assert "superresolution.resample_filter" in model.load(
        write_snapshot(tmp_path / "t.pkl", {"G_ema": raw["tiny128"]["G_ema"]})).state_dict()
    g = copy.deepcopy(raw["small512"]["G_ema"])
    block = g.state["_modules"]["superresolution"].state["_modules"]["block0"]
    del block.state["_buffers"]["resample_filter"]
    with pytest.raises(model.CheckpointError, match=r"bad\.pkl.*SynthesisBlock.*block0\.resample_filter"):
        model.load(write_snapshot(tmp_path / "bad.pkl", {"G_ema": g}))
