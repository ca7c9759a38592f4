"""Inversion on the shipped model: reconstruction and novel views against the true latent.

Targets are renders of held-out seeds (the projector never sees their latents) from a non-frontal
camera; ground-truth novel views are renders of the true latent at four other yaws. PSNR in dB.
Thresholds come from measurements on this 2-core CPU (printed by the `results` fixture, and in
docs/architecture.md) with a margin.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import model
from model import camera as cam
from model import inversion as inv
from model.inversion_losses import LossWeights, ReconstructionLoss, msssim_loss, psnr

from conftest import REPO, single_thread

SHIPPED = REPO / "checkpoints" / "portrait.safetensors"
SEED = 101                                    # held-out subject
INPUT_VIEW = (0.35, -0.12)                   # radians from frontal (yaw, pitch): non-frontal
NOVEL_YAWS = (-0.45, -0.15, 0.15, 0.6)
STEPS = 30
PTI_STEPS = 12
CAMERA_STEPS = 60
CAMERA_OFFSET = 0.1                          # radians off in yaw and in pitch


def label(G, yaw, pitch):
    r = G.cfg.rendering
    return cam.orbit_label(cam.FRONTAL + yaw, cam.FRONTAL + pitch, r.avg_camera_radius,
                           list(r.avg_camera_pivot), fov_degrees=r.avg_camera_fov)


def seed_ws(G, seed, psi=0.7):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    return G.mapping(z, inv.frontal_label(G), truncation_psi=psi)


def image(G, ws, c):
    with torch.no_grad():
        return inv.render(G, ws, c)["image"]


@pytest.fixture(scope="module", autouse=True)
def one_thread_module():
    """One torch thread for the whole module: these renders are many tiny ops."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def G():
    return model.load(SHIPPED)


@pytest.fixture(scope="module")
def scene(G):
    ws = seed_ws(G, SEED)
    c_in = label(G, *INPUT_VIEW)
    novel = [label(G, y, 0.0) for y in NOVEL_YAWS]
    return dict(ws=ws, c_in=c_in, target=image(G, ws, c_in), novel=novel,
                gt_novel=[image(G, ws, c) for c in novel])


def scores(G, ws, scene, c_in=None):
    c_in = scene["c_in"] if c_in is None else c_in
    return dict(input=psnr(image(G, ws, c_in), scene["target"]),
                novel=float(np.mean([psnr(image(G, ws, c), gt) for c, gt in zip(scene["novel"], scene["gt_novel"])])))


@pytest.fixture(scope="module")
def results(G, scene):
    torch.manual_seed(0)
    out = {}
    w_avg = inv.w_stats(G, 10000)[0].expand(1, G.num_ws, -1)
    out["w_avg"] = scores(G, w_avg, scene)
    out["random seed"] = scores(G, seed_ws(G, SEED + 7777), scene)
    p = inv.invert(G, scene["target"], scene["c_in"], space="w", steps=STEPS)
    out["w"] = scores(G, p.ws, scene)
    p = inv.invert(G, scene["target"], scene["c_in"], space="w+", steps=STEPS, pti_steps=PTI_STEPS)
    out["w+"] = scores(G, p.ws, scene)
    out["w+ PTI"] = scores(p.tuned_G, p.ws, scene)
    out["pti_projection"] = p
    wrong = label(G, INPUT_VIEW[0] + CAMERA_OFFSET, INPUT_VIEW[1] + CAMERA_OFFSET)
    p = inv.invert(G, scene["target"], wrong, space="w", steps=CAMERA_STEPS)
    out["w, camera wrong"] = scores(G, p.ws, scene, c_in=wrong)
    p = inv.invert(G, scene["target"], wrong, space="w", steps=CAMERA_STEPS, refine_camera=True)
    out["w, camera refined"] = scores(G, p.ws, scene, c_in=p.camera)
    yaw, pitch, _ = cam.yaw_pitch_radius(cam.split_label(p.camera)[0])
    out["camera_error"] = (abs(float(yaw) - cam.FRONTAL - INPUT_VIEW[0]),
                           abs(float(pitch) - cam.FRONTAL - INPUT_VIEW[1]))
    for name, s in out.items():
        if isinstance(s, dict):
            print(f"{name:18s} input {s['input']:6.2f} dB  novel {s['novel']:6.2f} dB")
    print("camera error after refinement (yaw, pitch) rad:", out["camera_error"])
    return out


def test_w_projection_beats_the_baselines(results):
    w, avg, rnd = results["w"], results["w_avg"], results["random seed"]
    assert w["input"] >= 25.0
    assert w["novel"] >= avg["novel"] + 6.0          # issue minimum: + 3 dB; measured + 11.0
    assert w["novel"] >= rnd["novel"] + 6.0
    assert avg["novel"] < 20.0 and rnd["novel"] < 20.0


def test_w_plus_fits_the_input_better_and_keeps_the_novel_views(results):
    # measured: +2.9 dB (input) / +0.1 dB (novel) on the 152.5 kimg file, +1.7 / +1.9 on the
    # 149.6 kimg one, +5.0 / +4.1 on the 30.9 kimg one: w+ fits the input view better and does not
    # lose the novel views (within 0.5 dB)
    assert results["w+"]["input"] >= results["w"]["input"] + 1.0
    assert results["w+"]["novel"] >= results["w"]["novel"] - 0.5


def test_pivotal_tuning_raises_the_input_view_without_hurting_novel_views(results):
    pti, wp = results["w+ PTI"], results["w+"]
    assert pti["input"] >= wp["input"] + 2.0
    assert pti["novel"] >= wp["novel"] - 1.0
    p = results["pti_projection"]
    assert p.tuned_G is not None and p.history["phase"].count("pti") == PTI_STEPS
    assert p.history["phase"].count("latent") == STEPS


def test_camera_refinement_recovers_the_pose(results):
    err_yaw, err_pitch = results["camera_error"]
    # at least halves the 0.1 rad error in both axes; measured 0.041 / 0.013 rad on the 152.5 kimg
    # file in CAMERA_STEPS = 60 (0.059 / 0.007 in 40 steps; 0.036 / 0.041 in 40 on the 149.6 kimg
    # file, 0.009 / 0.022 on the 30.9 kimg one)
    assert err_yaw <= CAMERA_OFFSET / 2 and err_pitch <= CAMERA_OFFSET / 2
    # measured +3.8 dB on the 152.5 kimg file (+2.4 on the 149.6 kimg one, +4.4 on the 30.9 kimg one)
    assert results["w, camera refined"]["novel"] >= results["w, camera wrong"]["novel"] + 1.5


def test_camera_rig_reproduces_the_label_and_is_differentiable(G):
    c = label(G, 0.2, -0.1)
    c[0, 16 + 2] = 0.52                                # off-centre principal point is kept
    rig = inv.CameraRig(c, G.cfg.rendering.avg_camera_pivot)
    assert torch.allclose(rig(), c, atol=1e-5)
    rig.angles.data[:] = torch.tensor([0.05, -0.02])
    moved = rig()
    yaw, pitch, _ = cam.yaw_pitch_radius(cam.split_label(moved)[0])
    assert float(yaw.detach()) == pytest.approx(cam.FRONTAL + 0.25, abs=1e-4)
    assert float(pitch.detach()) == pytest.approx(cam.FRONTAL - 0.12, abs=1e-4)
    moved.sum().backward()
    assert rig.angles.grad is not None and rig.angles.grad.abs().sum() > 0


def test_callback_stop_keeps_the_best_result(G, scene):
    seen = []

    def stop_after_five(info):
        seen.append(info["total"])
        return len(seen) >= 5

    p = inv.invert(G, scene["target"], scene["c_in"], steps=50, callback=stop_after_five)
    assert p.interrupted and len(p.history["loss"]) == 5
    # the kept latent is the lowest-loss one seen, not the last noisy step
    assert psnr(image(G, p.ws, scene["c_in"]), scene["target"]) >= max(p.history["psnr"]) - 1.0


def test_keyboard_interrupt_returns_best_so_far(G, scene):
    calls = []

    def interrupt(info):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    p = inv.invert(G, scene["target"], scene["c_in"], steps=50, callback=interrupt)
    assert p.interrupted and p.ws.shape == (1, G.num_ws, G.w_dim)
    assert len(p.history["loss"]) == 4


def test_loss_terms_and_report():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    loss = ReconstructionLoss(x, 64, 32, LossWeights(discriminator=0.1, lpips=1.0))
    assert loss.describe() == "pixel 1 + raw 0.5 + msssim 0.2"     # no D, no VGG given
    out = dict(image=x.clone(), image_raw=torch.nn.functional.interpolate(x, size=32, mode="bilinear",
                                                                          antialias=True, align_corners=False))
    terms = loss(out)
    assert float(terms["total"]) == pytest.approx(0.0, abs=1e-5)
    assert float(msssim_loss(x, -x)) > 0.5
    for size in (16, 40, 64, 256):                    # window and scales adapt to the size
        y = torch.rand(1, 3, size, size) * 2 - 1
        assert float(msssim_loss(y, y)) == pytest.approx(0.0, abs=1e-4)


def test_discriminator_features_enter_the_loss():
    D = model.build_discriminator(model.presets.discriminator_config("tiny"))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    loss = ReconstructionLoss(x, 64, 32, D=D)
    assert "discriminator features" in loss.describe()
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    terms = loss(dict(image=y, image_raw=y[:, :, ::2, ::2]))
    assert float(terms["discriminator"].detach()) > 0


def test_bad_inputs_get_clear_errors(G):
    with pytest.raises(ValueError, match="image must be"):
        inv.invert(G, torch.zeros(3, 64, 64), steps=1)
    with pytest.raises(ValueError, match="camera must be"):
        inv.invert(G, torch.zeros(1, 3, 64, 64), torch.zeros(1, 16), steps=1)
    with pytest.raises(ValueError, match="space"):
        inv.invert(G, torch.zeros(1, 3, 64, 64), space="z", steps=1)
    with pytest.raises(ValueError, match="render_path"):
        inv.invert(G, torch.zeros(1, 3, 64, 64), steps=1, config=inv.InversionConfig(render_path="quick"))


def test_fast_ray_marcher_follows_the_reference_trajectory(G, scene):
    """The default (fast) ray marcher's gradients match the reference's within 1e-3, so a few
    steps of w+ projection with camera refinement and PTI land at the same latent and camera."""
    runs = {}
    for path in ("reference", "fast"):
        with single_thread():
            runs[path] = inv.invert(G, scene["target"], scene["c_in"], space="w+", steps=6, pti_steps=2,
                                    refine_camera=True, config=inv.InversionConfig(render_path=path,
                                                                                   camera_warmup=0.0))
    ref, fast = runs["reference"], runs["fast"]
    assert (ref.ws - fast.ws).abs().max() < 1e-3 * ref.ws.abs().max()
    assert (ref.camera - fast.camera).abs().max() < 1e-4
    assert not torch.equal(ref.camera, scene["c_in"])             # the camera did move
    assert fast.history["psnr"] == pytest.approx(ref.history["psnr"], abs=1e-2)


# ------------------------------------------------------------------------------------------------
# projection files, loading as a network, command line


@pytest.fixture(scope="module")
def saved(G, scene, tmp_path_factory):
    from model import projection
    p = inv.invert(G, scene["target"], scene["c_in"], space="w+", steps=4, pti_steps=2, refine_camera=True)
    path = tmp_path_factory.mktemp("proj") / "p.safetensors"
    projection.save_projection(path, p, network=SHIPPED)
    return p, path


def test_projection_file_round_trip(G, saved):
    from model import projection
    p, path = saved
    loaded = model.load_projection(path)
    assert torch.equal(loaded.ws, p.ws) and torch.equal(loaded.camera, p.camera)
    assert torch.equal(loaded.target, p.target) and torch.equal(loaded.initial_camera, p.initial_camera)
    assert loaded.history["phase"] == p.history["phase"]
    assert loaded.history["loss"] == pytest.approx(p.history["loss"])
    assert loaded.tuned and loaded.metadata["losses"] == p.losses and loaded.metadata["space"] == "w+"
    assert loaded.metadata["network_sha256"] == projection.file_sha256(SHIPPED)
    for (k, a), b in zip(p.tuned_G.state_dict().items(), loaded.G.state_dict().values()):
        assert torch.equal(a, b), k
    # model.load opens it as a network: the tuned generator
    G2 = model.load(path)
    assert isinstance(G2, model.TriPlaneGenerator)
    assert torch.equal(image(G2, p.ws, p.camera), image(p.tuned_G, p.ws, p.camera))
    with pytest.raises(model.CheckpointError, match="only a generator"):
        model.load(path, net="D")


def test_projection_without_pti_uses_the_recorded_network(G, scene, tmp_path):
    from model import projection
    p = inv.invert(G, scene["target"], scene["c_in"], steps=2)
    src = tmp_path / "net.safetensors"
    model.save(src, G)
    path = projection.save_projection(tmp_path / "p.safetensors", p, network=src)
    loaded = model.load_projection(path)
    assert not loaded.tuned and torch.equal(image(loaded.G, loaded.ws, p.camera), image(G, p.ws, p.camera))
    wrapped = loaded.as_generator()
    ws = wrapped.mapping(torch.randn(3, G.z_dim), p.camera.expand(3, -1))
    assert ws.shape == (3, G.num_ws, G.w_dim) and torch.equal(ws[2:], p.ws)
    src.write_bytes(src.read_bytes()[:-4] + b"\0\0\0\0")          # the network changed
    with pytest.raises(model.CheckpointError, match="SHA-256"):
        model.load_projection(path)
    src.unlink()
    with pytest.raises(model.CheckpointError, match="missing"):
        model.load_projection(path)
    assert torch.equal(model.load_projection(path, network=SHIPPED).ws, p.ws)   # --network NET --latent P


def test_turntable_of_a_projection_matches_direct_renders(saved, tmp_path):
    from app import cli
    from app.state import pose_label
    p, path = saved
    out = tmp_path / "frames"
    assert cli.main(["turntable", "--network", str(path), "--frames", "2", "--path", "static", "--yaw", "20",
                     "--pitch", "-7", "--sample-mult", "1", "--png-frames", "--quiet", "--out", str(out)]) == 0
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 2
    direct = inv.render(p.tuned_G, p.ws, pose_label(p.tuned_G, 20, -7))["image"]
    expected = (direct[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    for f in frames:
        got = np.asarray(PIL_open(f))
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # --latent with --network: the same pixels through the images export
    still = tmp_path / "still.png"
    assert cli.main(["images", "--network", str(SHIPPED), "--latent", str(path), "--yaws", "20", "--pitches", "-7",
                     "--quiet", "--out", str(still)]) == 0
    assert np.abs(np.asarray(PIL_open(still)).astype(int) - expected.astype(int)).max() <= 1
    assert cli.main(["images", "--latent", str(path), "--seeds", "3", "--quiet", "--out", str(still)]) == 2


def PIL_open(path):
    import PIL.Image
    with PIL.Image.open(path) as im:
        return im.convert("RGB")


def test_invert_command_line(G, scene, tmp_path, capsys):
    import PIL.Image
    from app import cli
    img = tmp_path / "photo.png"
    rgb = (scene["target"][0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    PIL.Image.fromarray(rgb).save(img)
    yaw, pitch = (math.degrees(v) for v in INPUT_VIEW)
    argv = ["invert", str(img), "--network", str(SHIPPED), "--camera", f"{yaw},{pitch}", "--steps", "3",
            "--quiet"]
    assert cli.main(argv) == 0
    out = tmp_path / "photo_projection.safetensors"
    loaded = model.load_projection(out)
    assert torch.allclose(loaded.camera, scene["c_in"], atol=1e-5) and not loaded.tuned
    assert "losses: pixel 1 + raw 0.5 + msssim 0.2" in capsys.readouterr().err
    assert cli.main(argv) == 2                                    # never overwrites without --out
    assert "exists" in capsys.readouterr().err
    cam_file = tmp_path / "dataset.json"
    cam_file.write_text(__import__("json").dumps({"labels": [["photo.png", scene["c_in"][0].tolist()]]}))
    assert cli.main(["invert", str(img), "--camera", f"{cam_file}:photo.png", "--steps", "1", "--quiet",
                     "--out", str(out)]) == 0
    assert torch.allclose(model.load_projection(out).camera, scene["c_in"], atol=1e-6)
    assert cli.main(["invert", str(tmp_path / "none.png"), "--quiet"]) == 2
    assert "none.png: no such file" in capsys.readouterr().err
    assert cli.main(["invert", str(img), "--camera", "sideways", "--quiet", "--out", str(out)]) == 2


# ------------------------------------------------------------------------------------------------
# LPIPS-VGG from local files, read as data


def _random_lpips(seed=0):
    from model.lpips import LPIPS
    torch.manual_seed(seed)
    net = LPIPS()
    with torch.no_grad():
        for conv in net.convs:
            conv.weight.normal_(0, (2 / (9 * conv.in_channels)) ** 0.5)
            conv.bias.normal_(0, 0.01)
        for w in net.lin:
            w.uniform_(0, 1)
    return net.eval()


TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def test_lpips_from_a_torchvision_state_dict(tmp_path):
    from model.lpips import load_lpips
    ref = _random_lpips()
    sd = {}
    for i, conv in zip(TORCHVISION_CONV_INDEX, ref.convs):
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = conv.weight, conv.bias
    sd["classifier.6.weight"], sd["classifier.6.bias"] = torch.zeros(10, 40), torch.zeros(10)
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    net = load_lpips(tmp_path / "vgg16-397923af.pth")
    assert "unit channel weights" in net.source
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        for w in ref.lin:
            w.fill_(1.0)
        assert torch.allclose(net(x, y), ref(x, y), rtol=1e-5)
        assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)


class _ScriptedVGG(torch.nn.Module):
    """A TorchScript archive with other names than ours: stands in for NVIDIA's vgg16.pt."""

    def __init__(self, ref):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Conv2d(c.in_channels, c.out_channels, 3, padding=1)
                                           for c in ref.convs])
        self.lpips = torch.nn.ParameterList([torch.nn.Parameter(w.detach().reshape(1, -1, 1, 1).clone())
                                             for w in ref.lin])
        with torch.no_grad():
            for a, b in zip(self.layers, ref.convs):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_lpips_from_torchscript_without_running_it(tmp_path, monkeypatch):
    from model.lpips import load_lpips
    ref = _random_lpips(1)
    path = tmp_path / "vgg16.pt"
    torch.jit.save(torch.jit.script(_ScriptedVGG(ref)), str(path))

    def refuse(*a, **k):
        raise AssertionError("torch.jit.load must not be used")
    monkeypatch.setattr(torch.jit, "load", refuse)
    net = load_lpips(path)
    assert "vgg16.pt" in net.source and "unit" not in net.source
    x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x, y), ref(x, y), rtol=1e-5)
    # and it enters the inversion loss
    loss = ReconstructionLoss(x, 64, 32, lpips=net)
    assert "lpips-vgg (vgg16.pt)" in loss.describe()


def test_lpips_never_executes_pickled_code(tmp_path):
    import os
    import pickle
    import zipfile
    from model.lpips import LPIPSLoadError, load_lpips
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    plain = tmp_path / "evil.pth"
    plain.write_bytes(pickle.dumps({"features.0.weight": Evil()}))
    with pytest.raises(LPIPSLoadError, match="evil.pth"):
        load_lpips(plain)
    archive = tmp_path / "evil.pt"                    # a "TorchScript" archive whose data.pkl calls os.system
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil()))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
        z.writestr("evil/code/__torch__.py", "")
    with pytest.raises(LPIPSLoadError, match="conv layers"):
        load_lpips(archive)
    assert not marker.exists()
