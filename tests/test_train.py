"""train.py end to end on the CPU: tiny runs, snapshots, exact resume, kill/resume, 2-process gloo,
failure modes, and the command line (official option names, --dry-run, torchrun line)."""
from __future__ import annotations

import glob
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import model
import train
from conftest import REPO
from training import options
from training.loop import InfiniteSampler

FAST = ["--threads=1", "--progress=false", "--workers=0"]


@pytest.fixture(scope="module")
def data32(tmp_path_factory):
    from training.synthetic import generate_dataset
    path = tmp_path_factory.mktemp("data") / "syn32.zip"
    generate_dataset(path, count=16, resolution=32, cameras="portrait", seed=0, progress=False)
    return str(path)


@pytest.fixture(autouse=True)
def restore_threads():
    before, grad = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_grad_enabled(True)      # whatever an earlier in-process test left behind
    yield
    torch.set_num_threads(before)
    torch.set_grad_enabled(grad)


def tiny(data, outdir, *extra):
    return ["--cfg=tiny", f"--data={data}", f"--outdir={outdir}", "--tick=0.008", "--snap=1", *FAST, *extra]


def run_dir_of(outdir):
    dirs = sorted(glob.glob(os.path.join(str(outdir), "0*")))
    assert dirs, f"no run directory in {outdir}"
    return dirs[-1]


def read_stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


def latest(run_dir):
    with open(os.path.join(run_dir, "latest")) as f:
        return os.path.join(run_dir, f.read().strip())


def state_of(snapshot):
    return json.loads(model.read_metadata(snapshot)["training_state"])


# ------------------------------------------------------------------------------------ runs
def test_tiny_run_completes_and_its_snapshot_renders(data32, tmp_path):
    assert train.main(tiny(data32, tmp_path, "--kimg=0.016", "--mirror=1", "--aug=ada", "--ada-kimg=0.5")) == 0
    run = run_dir_of(tmp_path)
    stats = read_stats(run)
    assert [round(s["Progress/kimg"]["mean"], 3) for s in stats] == [0.004, 0.012, 0.016]
    for s in stats:
        for key in ("Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/scores/fake"):
            assert math.isfinite(s[key]["mean"]), key
    assert "Loss/r1_penalty" in stats[0] and "Loss/G/density_reg" in stats[0]   # lazy regs ran at step 0
    assert stats[-1]["Progress/augment"]["mean"] >= 0
    for name in ("reals.png", "fakes000000.png", "fakes000000_raw.png", "fakes000000_depth.png", "log.txt",
                 "training_options.json"):
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    assert oct(os.stat(os.path.join(run, "fakes000000.png")).st_mode & 0o777) != "0o600"

    snap = latest(run)
    meta = model.read_metadata(snap)
    assert state_of(snap)["cur_nimg"] == 16 and json.loads(meta["training_options"])["cfg"] == "tiny"
    extra = model.load_extra_tensors(snap)
    assert any(k.startswith("optim.G.") for k in extra) and any(k.startswith("optim.D.") for k in extra)
    G = model.load(snap)                       # the viewer's loader: G_ema
    assert G.img_resolution == 32 and G.neural_rendering_resolution == 16
    c = model.camera.orbit_label([1.3, 1.57], [1.57, 1.4])
    with torch.no_grad():
        out = G(torch.randn(2, G.z_dim), c, noise_mode="const")
    assert out["image"].shape == (2, 3, 32, 32) and torch.isfinite(out["image"]).all()
    D = model.load(snap, net="D")
    assert torch.isfinite(D({"image": out["image"], "image_raw": out["image_raw"]}, c)).all()


def test_metrics_during_training(data32, tmp_path):
    assert train.main(tiny(data32, tmp_path, "--kimg=0.004", "--metrics=swd,mvc", "--metrics-images=8")) == 0
    run = run_dir_of(tmp_path)
    for name in ("swd", "mvc"):
        with open(os.path.join(run, f"metric-{name}.jsonl")) as f:
            record = json.loads(f.readline())
        assert record["snapshot"].endswith(".safetensors") and record["results"]


def test_resume_continues_exactly(data32, tmp_path):
    """6 steps in one go == 3 steps + resume for 3: bit-identical networks, optimiser and augment state."""
    extra = ["--aug=fixed", "--p=0.5"]
    assert train.main(tiny(data32, tmp_path / "a", "--kimg=0.024", *extra)) == 0
    assert train.main(tiny(data32, tmp_path / "b", "--kimg=0.012", *extra)) == 0
    run_b = run_dir_of(tmp_path / "b")
    first = state_of(latest(run_b))
    assert first["cur_nimg"] == 12 and first["batch_idx"] == 3
    assert train.main(["--resume", run_b, "--kimg=0.024", *FAST]) == 0   # options come from the run
    a, b = latest(run_dir_of(tmp_path / "a")), latest(run_b)
    sa, sb = state_of(a), state_of(b)
    for key in ("cur_nimg", "batch_idx", "sampler_pos", "augment_p", "ada", "cur_tick"):
        assert sa[key] == sb[key], key
    assert sa["augment_p"] == 0.5
    na, nb = model.load_all(a), model.load_all(b)
    for name in ("G", "G_ema", "D"):
        for key, value in na[name].state_dict().items():
            assert torch.equal(value, nb[name].state_dict()[key]), f"{name}.{key}"
    ea, eb = model.load_extra_tensors(a), model.load_extra_tensors(b)
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    kimgs = [s["Progress/kimg"]["mean"] for s in read_stats(run_b)]
    assert kimgs == sorted(kimgs) and len(kimgs) == len(set(kimgs))       # one line per tick, in order


def test_loss_scaling_path_is_exact_and_resumes(data32, tmp_path, monkeypatch):
    """The GradScaler path (used where fp16 layers run on CUDA), forced on here on the CPU:
    power-of-two scaling is exact in fp32, so it must match the unscaled run bit for bit, also
    across a resume that restores the scaler state."""
    assert train.main(tiny(data32, tmp_path / "plain", "--kimg=0.012")) == 0
    from training.loop import Trainer
    monkeypatch.setattr(Trainer, "_uses_fp16", lambda self, name: True)
    assert train.main(tiny(data32, tmp_path / "scaled", "--kimg=0.008")) == 0
    run = run_dir_of(tmp_path / "scaled")
    assert set(state_of(latest(run))["scalers"]) == {"G", "D"}
    assert train.main(["--resume", run, "--kimg=0.012", *FAST]) == 0
    a, b = model.load_all(latest(run_dir_of(tmp_path / "plain"))), model.load_all(latest(run))
    for name in ("G", "D", "G_ema"):
        for key, value in a[name].state_dict().items():
            assert torch.equal(value, b[name].state_dict()[key]), f"{name}.{key}"


def test_render_path_fast_trains_on_the_fast_ray_marcher(data32, tmp_path, monkeypatch):
    """--render-path fast: G's renders under autograd take the fast path (counted), the first
    step's weights stay within float rounding of the reference step's, and a run continued with
    a different --render-path records it."""
    from model.fast_render import FastRenderer
    calls = []
    field = FastRenderer.field

    def counted(self, planes, *args, **kwargs):
        calls.append(torch.is_grad_enabled() and planes.requires_grad)
        return field(self, planes, *args, **kwargs)

    monkeypatch.setattr(FastRenderer, "field", counted)
    assert train.main(tiny(data32, tmp_path / "ref", "--kimg=0.008")) == 0
    assert not any(calls), "the reference run differentiated through the fast path"
    assert train.main(tiny(data32, tmp_path / "fast", "--kimg=0.008", "--render-path=fast")) == 0
    assert any(calls), "--render-path fast never differentiated through the fast path"
    a, b = model.load_all(latest(run_dir_of(tmp_path / "ref"))), model.load_all(latest(run_dir_of(tmp_path / "fast")))
    glr = options.resolve(options.parse_args(tiny(data32, tmp_path / "ref", "--kimg=0.008"))).G_opt.lr
    moved = 0.0
    for key, value in a["G"].state_dict().items():
        diff = (value - b["G"].state_dict()[key]).abs()
        # Adam's first step is lr * g / (|g| + eps): float rounding of a near-zero gradient can move
        # a weight by up to 2 lr, so a few elements per tensor may differ (measured: at most 7 of
        # 4,608, by at most 5.6e-4); the rest must agree to float rounding.
        assert (diff > 1e-4).float().mean() < 5e-3, key      # a scalar must be within 1e-4
        assert diff.max() <= 2 * glr + 1e-6, key                      # one Adam step moves <= lr
        moved = max(moved, diff.max().item())
    assert moved > 0, "the two paths gave bit-identical weights: was the fast path used?"
    run = run_dir_of(tmp_path / "ref")
    assert train.main(["--resume", run, "--kimg=0.016", "--render-path=fast", *FAST]) == 0
    with open(os.path.join(run, "training_options.json")) as f:
        assert json.load(f)["render_path"] == "fast"
    assert options.parse_args(["--render-path=fast"])["render_path"] == "fast"
    with pytest.raises(options.OptionsError, match="render-path"):
        options.resolve(options.parse_args(["--cfg=tiny", f"--data={data32}", "--render-path=fastest"]))


def _wait_for(predicate, proc, timeout=240):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training exited early with {proc.returncode}:\n{out[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the training process")
        time.sleep(0.1)


def test_sigint_stops_cleanly_and_sigkill_resumes(data32, tmp_path):
    cmd = [sys.executable, str(REPO / "train.py"), *tiny(data32, tmp_path, "--kimg=2")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    # Ctrl-C: the step finishes, a snapshot is written, exit code 130 (as for any interrupted command).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _wait_for(lambda: glob.glob(str(tmp_path / "0*" / "latest")), proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Stop requested" in out
    run = run_dir_of(tmp_path)
    stopped_at = state_of(latest(run))["cur_nimg"]
    assert 0 < stopped_at < 2000

    # Continue in a new process and SIGKILL it after it has written a newer snapshot.
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--resume", run, *FAST], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    _wait_for(lambda: state_of(latest(run))["cur_nimg"] > stopped_at + 4, proc)
    time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=60)
    killed_at = state_of(latest(run))["cur_nimg"]

    # Nothing is corrupted: every snapshot loads, and the run resumes from the last one.
    for path in glob.glob(os.path.join(run, "*.safetensors")):
        model.load_all(path)
    target = (killed_at + 8) / 1000
    assert train.main(["--resume", run, f"--kimg={target}", *FAST]) == 0
    final = state_of(latest(run))
    assert final["cur_nimg"] == killed_at + 8
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]
    kimgs = [s["Progress/kimg"]["mean"] for s in read_stats(run)]      # every line parses
    assert kimgs == sorted(kimgs) and kimgs[-1] == pytest.approx(target)


@pytest.mark.parametrize("launcher", ["spawn", "torchrun"])
def test_two_process_gloo_keeps_parameters_identical(data32, tmp_path, launcher):
    args = tiny(data32, tmp_path, "--gpus=2", "--batch=8", "--kimg=0.024", "--tick=0.016")
    if launcher == "spawn":                  # train.py starts the processes itself
        cmd = [sys.executable, str(REPO / "train.py"), *args]
    else:                                    # the line `--launcher=torchrun` prints
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "train.py"), *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    run = run_dir_of(tmp_path)
    log = open(os.path.join(run, "log.txt")).read()
    # Checked bit for bit on every snapshot (the loop raises otherwise).
    assert log.count("parameters identical across 2 processes") >= 2
    assert state_of(latest(run))["cur_nimg"] == 24 and state_of(latest(run))["world_size"] == 2
    assert len(json.loads(model.read_metadata(latest(run))["rank_states"])) == 2


def test_sampler_gives_each_rank_different_data_and_resumes_the_stream():
    size = 10
    streams = [InfiniteSampler(size, rank=r, world_size=3, seed=1) for r in range(3)]
    taken = [[x for _, x in zip(range(size), iter(s))] for s in streams]
    # Within the first 3 * size draws of the global stream each rank sees a disjoint share.
    first_epoch = [x for r in range(3) for x in taken[r][: (size - r + 2) // 3]]
    assert sorted(first_epoch) == list(range(size))
    resumed = [x for _, x in zip(range(4), iter(InfiniteSampler(size, rank=1, world_size=3, seed=1, start=6)))]
    assert resumed == taken[1][6:10]


def test_nonfinite_loss_stops_and_keeps_the_last_good_snapshot(data32, tmp_path, monkeypatch, capsys):
    from training import loss as loss_module
    original = loss_module.EG3DLoss.run_D
    calls = {"n": 0}

    def poisoned(self, img, c, sigma, update_emas=False):
        calls["n"] += 1
        out = original(self, img, c, sigma, update_emas)
        return out * float("nan") if calls["n"] > 12 else out

    monkeypatch.setattr(loss_module.EG3DLoss, "run_D", poisoned)
    assert train.main(tiny(data32, tmp_path, "--kimg=0.1")) == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "last good snapshot" in err
    run = run_dir_of(tmp_path)
    good = latest(run)
    assert state_of(good)["cur_nimg"] < 100
    for net in model.load_all(good).values():
        assert all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point())


def test_finetune_from_an_official_pickle(fixture_dir, tmp_path):
    from training.synthetic import generate_dataset
    data = tmp_path / "syn128.zip"
    generate_dataset(data, count=4, resolution=128, progress=False, supersample=1)
    pkl = str(fixture_dir / "tiny128.pkl")
    args = ["--cfg=ffhq", f"--data={data}", f"--outdir={tmp_path}", f"--resume={pkl}", "--cbase=1024", "--cmax=64",
            "--gen_pose_cond=True", "--batch=4", "--gamma=1", "--kimg=0.004", "--neural_rendering_resolution_initial=16",
            "--grid=2x2", "--snap=1", *FAST]
    assert train.main(args) == 0
    run = run_dir_of(tmp_path)
    snap = latest(run)
    st = state_of(snap)
    assert st["cur_nimg"] == 4                                         # counters start at 0
    config = json.loads(model.read_metadata(snap)["training_config"])
    assert config["loss"]["blur_init_sigma"] == 0 and config["ema_rampup"] is None     # official fine-tune rules
    official_G = model.load(pkl, net="G")
    ours = model.load(snap, net="G")
    diff = max(float((a - b).abs().max()) for a, b in zip(official_G.parameters(), ours.parameters()))
    assert diff < 0.05                                                 # one small step away from the pickle


def test_finetune_mode_from_our_snapshot_starts_a_new_run(data32, tmp_path):
    assert train.main(tiny(data32, tmp_path / "a", "--kimg=0.008")) == 0
    snap = latest(run_dir_of(tmp_path / "a"))
    assert train.main(tiny(data32, tmp_path / "b", f"--resume={snap}", "--resume-mode=finetune", "--kimg=0.004")) == 0
    new = latest(run_dir_of(tmp_path / "b"))
    assert state_of(new)["cur_nimg"] == 4
    config = json.loads(model.read_metadata(new)["training_config"])
    assert config["loss"]["blur_init_sigma"] == 0 and config["loss"]["gpc_reg_fade_kimg"] == 0
    assert config["ema_rampup"] is None and config["options"]["finetuned_from"] == snap


# ------------------------------------------------------------------------------------ failures
def test_out_of_memory_names_batch_gpu(data32, tmp_path, monkeypatch, capsys):
    from training.loop import Trainer

    def oom(self, *args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "step", oom)
    assert train.main(tiny(data32, tmp_path, "--kimg=0.1", "--batch=8")) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "--batch-gpu=4" in err


def test_dataset_and_snapshot_mismatches_fail_early(data32, tmp_path, capsys):
    from training.synthetic import generate_dataset
    assert train.main(tiny(data32, tmp_path / "r", "--kimg=0.004")) == 0
    run = run_dir_of(tmp_path / "r")
    other = tmp_path / "syn16.zip"
    generate_dataset(other, count=4, resolution=16, progress=False, supersample=1)
    assert train.main(["--resume", run, f"--data={other}", *FAST]) == 2
    assert "32 px images but the dataset has 16 px" in capsys.readouterr().err

    folder = tmp_path / "bad"
    folder.mkdir()
    import PIL.Image
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "a.png")
    (folder / "dataset.json").write_text(json.dumps({"labels": [["a.png", [0.0] * 24]]}))
    assert train.main(tiny(str(folder), tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "24" in err
    assert not os.path.exists(tmp_path / "x")                          # nothing created


# ------------------------------------------------------------------------------------ CLI
def _dataset_at(tmp_path, resolution, count=2):
    import PIL.Image
    folder = tmp_path / f"d{resolution}"
    folder.mkdir()
    label = model.camera.orbit_label(1.57, 1.57)[0].tolist()
    labels = []
    for i in range(count):
        PIL.Image.fromarray(np.full((resolution, resolution, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
        labels.append([f"{i}.png", label])
    (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    return str(folder)


def test_official_readme_commands_resolve(tmp_path, capsys):
    d512, d128 = _dataset_at(tmp_path, 512), _dataset_at(tmp_path, 128)
    ffhq = ["--outdir=~/training-runs", "--cfg=ffhq", f"--data={d512}", "--gpus=8", "--batch=32", "--gamma=1",
            "--gen_pose_cond=True", "--dry-run"]
    assert train.main(ffhq) == 0
    out = capsys.readouterr().out
    assert "Dry run" in out and "SuperresolutionHybrid8XDC" in out
    cfg = options.resolve(options.parse_args(ffhq + ["--device=cuda"]))
    assert cfg.G.superres.module == "SuperresolutionHybrid8XDC" and cfg.G.c_gen_conditioning_zero is False
    assert cfg.loss.gpc_reg_prob == 0.5 and cfg.loss.blur_init_sigma == 10 and cfg.loss.blur_fade_kimg == 200
    assert cfg.G_opt.lr == 0.0025 and cfg.D_opt.lr == 0.002 and tuple(cfg.G_opt.betas) == (0, 0.99)
    assert cfg.G_reg_interval == 4 and cfg.D_reg_interval == 16 and cfg.ema_kimg == 10
    assert cfg.batch_gpu == 4 and cfg.loss.neural_rendering_resolution_initial == 64
    assert cfg.D.num_fp16_res == 4 and cfg.D.conv_clamp == 256 and cfg.G.superres.num_fp16_res == 4
    assert cfg.grid == (4, 2) or torch.cuda.is_available()           # CPU-sized without CUDA (see below)
    assert options.TrainingConfig.from_dict(json.loads(cfg.to_json())) == cfg       # the JSON form round-trips

    shapenet = options.resolve(options.parse_args(["--outdir=runs", "--cfg=shapenet", f"--data={d128}", "--gpus=8",
                                                   "--batch=32", "--gamma=0.3"]))
    assert shapenet.G.superres.module == "SuperresolutionHybrid2X" and shapenet.G.rendering.white_back
    assert shapenet.loss.gpc_reg_prob is None and shapenet.G.c_gen_conditioning_zero is True

    afhq = options.resolve(options.parse_args([
        "--outdir=runs", "--cfg=afhq", f"--data={d512}", "--gpus=8", "--batch=32", "--gamma=5", "--aug=ada",
        "--neural_rendering_resolution_final=128", "--gen_pose_cond=True", "--gpc_reg_prob=0.8"]))
    assert afhq.augment == options.AugmentConfig(spec="bgc", p=0.0, target=0.6, ada_interval=4, ada_kimg=500)
    assert afhq.loss.neural_rendering_resolution_final == 128 and afhq.loss.gpc_reg_prob == 0.8
    assert afhq.G.rendering.avg_camera_pivot == [0, 0, -0.06]

    small = options.resolve(options.parse_args(["--cfg=ffhq", f"--data={d512}", "--batch=4", "--gamma=5",
                                                "--batch-gpu=4", "--cbase=16384", "--map-depth=4", "--c-scale=2",
                                                "--density_reg=0", "--style_mixing_prob=0.9", "--mirror=yes"]))
    assert small.loss.blur_fade_kimg == 25                           # 200 * batch / 32, as official
    assert small.G.backbone.channel_base == small.D.channel_base == 16384
    assert small.G.mapping.num_layers == 4 and small.G.c_scale == 2 and small.G_reg_interval is None
    assert small.mirror and small.loss.style_mixing_prob == 0.9 and small.ema_kimg == 1.25
    consistent = options.resolve(options.parse_args(["--cfg=ffhq", f"--data={d512}", "--density_reg=0",
                                                     "--view-consistency=2"]))
    assert consistent.G_reg_interval == 4 and consistent.loss.view_consistency == 2
    assert consistent.loss.view_consistency_yaw == 0.1


def test_bad_command_lines_are_errors(tmp_path, capsys):
    d = _dataset_at(tmp_path, 32)
    base = ["--cfg=tiny", f"--data={d}", "--dry-run"]
    for bad, message in ((["--bogus=1"], "unrecognized"), (["--gam=1"], "unrecognized"),
                         (["--aug=sometimes"], "--aug"), (["--mirror=maybe"], "boolean"),
                         (["--batch=6", "--gpus=4"], "multiple"), (["--batch-gpu=2"], "mbstd"),
                         (["--reg_type=monotonic-fixed"], "only 'l1'"), (["--cond=false"], "conditional"),
                         (["--glr=nan"], "finite"), (["--metrics=fid50k_full"], "--inception"),
                         (["--metrics=fid50k_full", "--inception=/nonexistent.pt"], "no such file"),
                         (["--metrics=bogus"], "unknown metric"), (["--kimg=nan"], "--kimg: must be a finite"),
                         (["--tick=inf"], "--tick: must be a finite"), (["--p=nan"], "--p: must be a finite"),
                         (["--grid=100x100"], "at most 1024"), (["--image-snap=-1"], "--image-snap")):
        code = train.main(base + bad)
        err = capsys.readouterr().err
        assert code == 2, bad
        assert message in err, (bad, err)
    assert train.main(["--data=x", "--dry-run"]) == 2 and "--cfg is required" in capsys.readouterr().err


def test_gpus_prints_the_torchrun_line(tmp_path, capsys):
    assert train.main(["--cfg=tiny", "--data=x.zip", "--gpus=4", "--launcher=torchrun", "--batch=16"]) == 0
    out = capsys.readouterr().out
    assert "torchrun --standalone --nproc_per_node=4" in out and "--batch=16" in out and "--launcher" not in out


def test_help_lists_the_official_options(capsys):
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--outdir", "--cfg", "--data", "--gpus", "--batch", "--batch-gpu", "--gamma", "--kimg", "--tick",
                 "--snap", "--seed", "--cbase", "--cmax", "--map-depth", "--mirror", "--aug", "--resume", "--glr",
                 "--dlr", "--metrics", "--gen_pose_cond", "--gpc_reg_prob", "--c-scale",
                 "--neural_rendering_resolution_initial", "--neural_rendering_resolution_final",
                 "--neural_rendering_resolution_fade_kimg", "--blur_fade_kimg", "--density_reg",
                 "--density_reg_every", "--density_reg_p_dist", "--sr_num_fp16_res", "--style_mixing_prob",
                 "--dry-run"):
        assert flag in out, flag


# ------------------------------------------------------------------------------------ issue 16 / 12
def test_sample_grid_is_sized_to_the_device_and_can_be_skipped(data32, tmp_path, monkeypatch):
    from training import run_dir
    d128 = _dataset_at(tmp_path, 128)
    base = ["--cfg=ffhq", f"--data={d128}", "--batch=4", "--gamma=1"]
    monkeypatch.setattr(run_dir, "uses_cuda", lambda device: False)
    assert options.resolve(options.parse_args(base)).grid == (4, 2)           # CPU: small by default
    assert options.resolve(options.parse_args(base + ["--grid=3x5"])).grid == (3, 5)
    monkeypatch.setattr(run_dir, "uses_cuda", lambda device: device != "cpu")
    assert options.resolve(options.parse_args(base)).grid == (32, 32)         # GPU: the official 7680x4320 rule
    assert options.resolve(options.parse_args(base + ["--device=cpu"])).grid == (4, 2)
    monkeypatch.undo()

    assert train.main(tiny(data32, tmp_path / "off", "--kimg=0.008", "--image-snap=0")) == 0
    run = run_dir_of(tmp_path / "off")
    assert not glob.glob(os.path.join(run, "fakes*.png")) and not os.path.exists(os.path.join(run, "reals.png"))
    assert os.path.exists(latest(run))
    assert train.main(tiny(data32, tmp_path / "on", "--kimg=0.008", "--grid=3x1")) == 0
    import PIL.Image
    with PIL.Image.open(os.path.join(run_dir_of(tmp_path / "on"), "fakes000000.png")) as im:
        assert im.size == (3 * 32, 1 * 32)


def test_grid_rendering_shows_progress(monkeypatch):
    """On a terminal the grid render draws a bar ("sample grid  n/N img"); off a terminal it stays quiet."""
    import io
    from training.loop import render_grid

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    torch.manual_seed(0)
    G = model.build_generator(model.presets.generator_config("tiny")).eval()
    z = torch.randn(6, G.z_dim)
    c = model.camera.orbit_label([1.57] * 6, [1.57] * 6)
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    images, raws, depths = render_grid(G, z, c, 4, torch.device("cpu"), 0, progress=True)
    shown = term.getvalue()
    assert "sample grid" in shown and "4/6" in shown and "6/6" in shown
    assert images.shape == (6, 3, G.img_resolution, G.img_resolution) and depths.shape[1] == 1
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    render_grid(G, z, c, 4, torch.device("cpu"), 0, progress=False)
    assert quiet.getvalue() == ""


def test_stats_record_the_schedules_the_monitor_plots(data32, tmp_path):
    assert train.main(tiny(data32, tmp_path, "--kimg=0.008", "--gen_pose_cond=true", "--gpc_reg_prob=0.5",
                           "--gpc_reg_fade_kimg=0.016")) == 0
    stats = read_stats(run_dir_of(tmp_path))
    from training.loss import blur_sigma, swap_probability
    for s in stats:
        nimg = s["Progress/kimg"]["mean"] * 1000
        assert s["Progress/blur_sigma"]["mean"] == pytest.approx(blur_sigma(nimg, 2.0, 20.0 * 4 / 32))
        assert s["Progress/gpc_swap_prob"]["mean"] == pytest.approx(swap_probability(nimg, 0.5, 0.016))
    assert stats[-1]["Progress/gpc_swap_prob"]["mean"] > 0


def test_help_defaults_are_derived_from_the_option_fields():
    import dataclasses
    from training import config
    text = options.build_parser().format_help()
    flat = "".join(text.split())                  # argparse wraps lines, also at hyphens
    for f in dataclasses.fields(config.TrainOptions):
        if f.metadata.get("group") and f.metadata.get("shown") is None and f.name not in ("dry_run", "debug"):
            assert "".join(config.option_help(f).split()) in flat, f.name
    assert "--pFLOATaugmentationprobabilityfor--aug=fixed[default:0.2]" in flat
    assert "--dlrFLOATDlearningrate[default:0.002]" in flat


def _outdir_entries(outdir):
    return sorted(os.listdir(outdir)) if os.path.isdir(outdir) else []


def test_user_errors_are_one_line_with_exit_codes(data32, tmp_path, capsys):
    # --cfg=bogus: usage error, exit 2, one line naming the option.
    assert train.main(["--cfg=bogus", f"--data={data32}", f"--outdir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--cfg" in err[0] and "bogus" in err[0]

    # An --outdir below a file cannot be created: refused before anything runs.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train.main(tiny(data32, blocker / "runs", "--kimg=0.004")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0] and "not a folder" in err[0]

    # Not a checkpoint: a file of random bytes.
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert train.main(tiny(data32, tmp_path / "j", f"--resume={junk}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(junk) in err[0]
    assert _outdir_entries(tmp_path / "j") == []

    # --debug shows the traceback as well as the line.
    assert train.main(["--cfg=bogus", f"--data={data32}", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_malicious_or_mismatched_resume_leaves_no_run_folder(data32, tmp_path, capsys):
    import pickle
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Evil()}))
    out = tmp_path / "runs"
    assert train.main(tiny(data32, out, "--kimg=0.004")) == 0                    # run 00000
    before = _outdir_entries(out)
    code = train.main(tiny(data32, out, f"--resume={evil}", "--kimg=0.004"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and str(evil) in err[0]
    assert "allow-list" in err[0]
    assert not marker.exists()                                                   # nothing in the pickle ran
    assert _outdir_entries(out) == before                                        # no empty 00001-... folder

    # Fine-tuning our snapshot into an architecture it does not fit: a runtime error, nothing left behind.
    snap = latest(run_dir_of(out))
    assert train.main(tiny(data32, out, f"--resume={snap}", "--resume-mode=finetune", "--cbase=8192",
                           "--kimg=0.004")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must match the snapshot" in err[0]
    assert _outdir_entries(out) == before
    assert train.main(tiny(data32, out, "--kimg=0.004")) == 0                    # the number did not move on
    assert _outdir_entries(out) == before + [before[0].replace("00000", "00001")]


def test_resume_falls_back_from_a_truncated_latest_snapshot(data32, tmp_path, capsys):
    assert train.main(tiny(data32, tmp_path, "--kimg=0.008")) == 0
    run = run_dir_of(tmp_path)
    good = latest(run)
    data = open(good, "rb").read()
    cut = os.path.join(run, "network-snapshot-000001.safetensors")      # a newer snapshot cut by a full disk
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(run, "latest"), "w") as f:
        f.write(os.path.basename(cut) + "\n")
    capsys.readouterr()
    assert train.main(["--resume", run, "--kimg=0.012", *FAST]) == 0
    captured = capsys.readouterr()
    assert "Note: the latest snapshot network-snapshot-000001.safetensors is unreadable" in captured.out
    assert "resuming from the newest intact one, network-snapshot-000000.safetensors" in captured.out
    assert state_of(latest(run))["cur_nimg"] == 12
    # Named directly, the cut file is an error that points at the intact one.
    assert train.main(["--resume", cut, "--kimg=0.016", *FAST]) == 2
    err = capsys.readouterr().err
    assert "network-snapshot-000000.safetensors" in err and cut in err


def test_help_piped_into_head_ends_quietly():
    proc = subprocess.run(f"{shlex.quote(sys.executable)} {shlex.quote(str(REPO / 'train.py'))} --help | head -2",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("usage: train.py") and proc.stderr == ""
