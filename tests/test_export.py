"""Exports (app/export.py, app/cli.py) with the real tiny model: videos are decoded back and
compared with direct renders of the same poses, latent-walk keyframes equal the seeds' renders,
interrupted exports leave nothing behind, PNGs carry their metadata."""
import glob
import math
import os
import threading

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

import model
from app import cli
from app import export as E
from app import state as S
from model import camera


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(G, path): a random-weight tiny generator saved to .safetensors and loaded back."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model.save(path, model.build_generator(model.presets.generator_config("tiny")))
    G = model.load(path).eval()
    return G, path


# ------------------------------------------------------------------------------------------------
# direct renders, independent of app/state.py and app/export.py


_PLANES = {}


def direct_planes(G, seed, psi):
    """ws and planes of a seed: official z, frontal conditioning (model's average camera)."""
    key = (id(G), seed, psi)
    if key not in _PLANES:
        r = G.cfg.rendering
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
        c_cond = camera.orbit_label(math.pi / 2, math.pi / 2, r.avg_camera_radius, r.avg_camera_pivot, 18.837)
        with torch.no_grad():
            ws = G.mapping(z, c_cond, truncation_psi=psi)
            _PLANES[key] = (ws, G.planes(ws, noise_mode="const"))
    return _PLANES[key]


def direct_render(G, seed, yaw_deg, pitch_deg, psi=0.7, mult=1.0, key="image"):
    """uint8 HxWx3 of seed at (yaw, pitch) degrees from frontal: G.mapping -> G.planes ->
    G.render with the model's average camera, frontal conditioning, fov 18.837."""
    r = G.cfg.rendering
    c = camera.orbit_label(math.pi / 2 + math.radians(yaw_deg), math.pi / 2 + math.radians(pitch_deg),
                           r.avg_camera_radius, r.avg_camera_pivot, 18.837)
    ws, planes = direct_planes(G, seed, psi)
    with torch.no_grad():
        out = G.render(planes, ws, c, deterministic=True,
                       depth_resolution=int(round(r.depth_resolution * mult)),
                       depth_resolution_importance=int(round(r.depth_resolution_importance * mult)),
                       superresolution=key == "image")
    img = out[key]
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def decode(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3).copy() for f in reader]
    return meta, frames


def read_pngs(folder):
    return [np.asarray(Image.open(f).convert("RGB")) for f in sorted(glob.glob(os.path.join(folder, "frame_*.png")))]


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * math.log10(255 ** 2 / mse)


# ------------------------------------------------------------------------------------------------
# parsing


def test_parse_seeds_and_grid():
    assert E.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert E.parse_seeds("5-3, 9") == [5, 4, 3, 9]
    assert E.parse_seeds([2, 1]) == [2, 1]
    for bad in ("", "a", "1-", "-1", "1,,2", "4294967296"):
        with pytest.raises(E.ExportError):
            E.parse_seeds(bad)
    assert E.parse_grid("2x2") == (2, 2) and E.parse_grid("4,3") == (4, 3) and E.parse_grid(None) == (1, 1)
    with pytest.raises(E.ExportError):
        E.parse_grid("0x2")


def test_camera_paths_loop_and_ranges():
    yaw, pitch = E.camera_path("360", 8)
    assert yaw[0] == 0 and yaw[-1] == pytest.approx(315) and np.all(pitch == 0)
    yaw, pitch = E.camera_path("sweep", 9, yaw_range=30, pitch_range=5, loop=False)
    assert yaw.max() == pytest.approx(30) and yaw.min() == pytest.approx(-30) and np.abs(pitch).max() <= 5
    yaw, pitch = E.camera_path("orbit", 4)                      # the official ellipse (radians there)
    assert math.radians(yaw[1]) == pytest.approx(0.35) and math.radians(pitch[0]) == pytest.approx(0.25 - 0.05)
    with pytest.raises(E.ExportError):
        E.camera_path("spiral", 4)


def test_layout_grid_and_even_padding():
    cells = np.arange(3 * 2 * 4 * 3, dtype=np.uint8).reshape(3, 2, 4, 3)
    grid = E.layout_grid(cells, (2, 2))
    assert grid.shape == (4, 8, 3)
    assert np.array_equal(grid[:2, 4:], cells[1]) and np.array_equal(grid[2:, :4], cells[2])
    assert not grid[2:, 4:].any()                               # the missing cell is black
    odd = np.zeros((5, 7, 3), np.uint8)
    assert E.even_frame(odd).shape == (6, 8, 3)


# ------------------------------------------------------------------------------------------------
# turntable


def test_turntable_mp4_decodes_and_matches_direct_renders(tiny, tmp_path):
    G, ckpt = tiny
    out = tmp_path / "t.mp4"
    frames = 4
    [written] = E.export_turntable(G, out, S.ViewerState(), seeds="0-1", grid="2x1", frames=frames,
                                   video=E.VideoOptions(fps=24), network=ckpt, bar=False)
    assert written == out and sorted(os.listdir(tmp_path)) == ["t.mp4"]
    meta, decoded = decode(out)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (2 * G.img_resolution, G.img_resolution) and meta["fps"] == 24
    assert len(decoded) == frames
    yaws, pitches = E.camera_path("360", frames)
    for f in range(frames):
        expect = np.concatenate([direct_render(G, s, yaws[f], pitches[f]) for s in (0, 1)], axis=1)
        assert psnr(decoded[f], expect) > 30, f"frame {f}: {psnr(decoded[f], expect):.1f} dB"


def test_turntable_png_sequence_is_exact_with_wobble_and_depth(tiny, tmp_path):
    G, _ = tiny
    out = tmp_path / "frames"
    st = S.ViewerState(yaw=10.0, depth_mult=2.0, importance_mult=2.0)
    E.export_turntable(G, out, st, seeds=[3], frames=4, path="sweep", yaw_range=40, pitch_range=8,
                       depth_side=True, video=E.VideoOptions(png_sequence=True), bar=False)
    assert sorted(os.listdir(tmp_path)) == ["frames"]
    pngs = read_pngs(out)
    assert len(pngs) == 4
    yaws, pitches = E.camera_path("sweep", 4, yaw_range=40, pitch_range=8)
    size = G.img_resolution
    for f, png in enumerate(pngs):
        assert png.shape == (size, 2 * size, 3)                   # image | depth side by side
        expect = direct_render(G, 3, 10.0 + yaws[f], pitches[f], mult=2.0)
        assert np.array_equal(png[:, :size], expect)
    # frame metadata: seeds, path and the state
    meta = E.read_png_metadata(os.path.join(out, "frame_00002.png"))
    assert meta["seeds"] == [3] and meta["path"] == "sweep" and meta["frame"] == 2
    # the depth panel uses one colour range for the whole video (frame 0's), not a per-frame one
    states = {f: E.posed_state(st.copy(seed=3), yaws[f], pitches[f]) for f in (0, 3)}
    renders = {f: S.render_state(G, s, superresolution=False) for f, s in states.items()}
    fixed = list(S.robust_range(renders[0]["image_depth"], renders[0]["image_alpha"]))
    for f in (0, 3):
        depth_state = states[f].copy(render_type="depth", depth_range=fixed)
        assert np.array_equal(pngs[f][:, size:], S.to_display_rgb(renders[f], depth_state, size=size))
    assert pngs[0][:, size:].std() > 0


def test_turntable_more_seeds_than_cells_makes_pages(tiny, tmp_path):
    G, _ = tiny
    paths = E.export_turntable(G, tmp_path / "t.mp4", S.ViewerState(render_type="raw"), seeds="0-2",
                               grid="2x1", frames=2, bar=False)
    assert [p.name for p in paths] == ["t_00_seed0000.mp4", "t_01_seed0002.mp4"]
    meta, frames = decode(paths[1])
    assert len(frames) == 2 and meta["size"] == (2 * G.neural_rendering_resolution, G.neural_rendering_resolution)


# ------------------------------------------------------------------------------------------------
# latent walk


def test_interpolation_keyframes_equal_seed_renders(tiny, tmp_path):
    G, _ = tiny
    out = tmp_path / "walk"
    seeds, w_frames = [0, 5], 2
    path = E.export_interpolation(G, out, S.ViewerState(), seeds=seeds, w_frames=w_frames, path="orbit",
                                  video=E.VideoOptions(png_sequence=True), bar=False)
    pngs = read_pngs(path)
    assert len(pngs) == len(seeds) * w_frames                  # looping: back to seed 0 after the last
    yaws, pitches = E.camera_path("orbit", len(pngs))
    for k, seed in enumerate(seeds):
        f = k * w_frames
        assert np.array_equal(pngs[f], direct_render(G, seed, yaws[f], pitches[f])), f"keyframe {k}"
    # in-between frames are neither endpoint
    mid = direct_render(G, 0, yaws[1], pitches[1])
    assert not np.array_equal(pngs[1], mid)


def test_interpolation_grid_mp4_and_non_looping(tiny, tmp_path):
    G, _ = tiny
    out = tmp_path / "walk.mp4"
    E.export_interpolation(G, out, S.ViewerState(render_type="raw"), seeds="0-3", grid="2x1", w_frames=1,
                           loop=False, path="static", bar=False)
    meta, frames = decode(out)
    assert meta["codec"] == "h264" and meta["fps"] == 60
    assert len(frames) == (2 - 1) * 1 + 1                      # 2 keyframes per cell, ends on the last
    nr = G.neural_rendering_resolution
    # cell 0 walks seeds 0 -> 1, cell 1 walks 2 -> 3 (the official assignment); last frame = keys 1, 3
    expect = np.concatenate([direct_render(G, s, 0, 0, key="image_raw") for s in (1, 3)], axis=1)
    assert meta["size"] == (2 * nr, nr) and psnr(frames[-1], expect) > 30


def test_keyframe_interpolator_is_smooth_and_periodic():
    keys = np.random.RandomState(0).randn(4, 3, 2)
    cubic = E.KeyframeInterpolator(keys, "cubic", loop=True)
    assert np.array_equal(cubic([0, 1, 2, 3, 4]), keys[[0, 1, 2, 3, 0]])
    t = np.linspace(0, 4, 401)
    v = cubic(t).reshape(len(t), -1)
    assert np.allclose(v[0], v[-1])
    step = np.abs(np.diff(v, axis=0)).max()
    assert step < 0.2                                          # no jumps, including across the loop
    linear = E.KeyframeInterpolator(keys, "linear", loop=False)
    assert np.allclose(linear([0.5]), (keys[0] + keys[1]) / 2) and np.array_equal(linear([3]), keys[[3]])


# ------------------------------------------------------------------------------------------------
# interruption and cancellation


@pytest.mark.parametrize("png", [False, True])
def test_keyboard_interrupt_mid_export_leaves_nothing(tiny, tmp_path, png):
    G, _ = tiny
    out = tmp_path / ("frames" if png else "t.mp4")
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        E.export_turntable(G, out, S.ViewerState(render_type="raw"), seeds=[0], frames=8, progress=progress,
                           video=E.VideoOptions(png_sequence=png), bar=False)
    assert calls[0] == (0, 8) and calls[-1] == (3, 8)
    assert os.listdir(tmp_path) == []                          # no final file, no temporary litter


def test_cancel_event_keeps_previous_file(tiny, tmp_path):
    G, _ = tiny
    out = tmp_path / "walk.mp4"
    out.write_bytes(b"previous export")
    cancel = threading.Event()

    def progress(done, total):
        if done == 2:
            cancel.set()                                       # e.g. the viewer's Cancel button

    with pytest.raises(E.ExportCancelled):
        E.export_interpolation(G, out, S.ViewerState(render_type="raw"), seeds="0-1", w_frames=4,
                               progress=progress, cancel=cancel, bar=False, overwrite=True)
    assert os.listdir(tmp_path) == ["walk.mp4"] and out.read_bytes() == b"previous export"


def test_export_in_a_background_thread_reports_progress(tiny, tmp_path):
    G, _ = tiny
    seen, result = [], {}

    def work():
        result["paths"] = E.export_turntable(G, tmp_path / "bg.mp4", S.ViewerState(render_type="raw"),
                                             frames=3, progress=lambda d, t: seen.append(d), bar=False)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert seen == [0, 1, 2, 3] and result["paths"][0].exists()


def test_video_writer_failure_and_odd_sizes(tmp_path):
    with E.VideoWriter(tmp_path / "odd.mp4", fps=10) as w:
        for i in range(3):
            w.write(np.full((33, 45, 3), 40 * i, np.uint8))
    meta, frames = decode(tmp_path / "odd.mp4")
    assert meta["size"] == (46, 34) and len(frames) == 3
    with pytest.raises(RuntimeError):
        with E.VideoWriter(tmp_path / "bad.mp4", fps=10, preset="no-such-preset") as w:
            for _ in range(50):
                w.write(np.zeros((16, 16, 3), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["odd.mp4"]


# ------------------------------------------------------------------------------------------------
# images


def test_images_grid_and_per_seed_metadata(tiny, tmp_path):
    G, ckpt = tiny
    [grid_png] = E.export_images(G, tmp_path / "grid.png", S.ViewerState(), seeds="0-2", grid="2x2",
                                 network=ckpt, bar=False)
    img = np.asarray(Image.open(grid_png).convert("RGB"))
    s = G.img_resolution
    assert img.shape == (2 * s, 2 * s, 3)
    assert np.array_equal(img[s:, :s], direct_render(G, 2, 0, 0)) and not img[s:, s:].any()
    meta = E.read_png_metadata(grid_png)
    assert meta["seeds"] == [0, 1, 2] and meta["psi"] == 0.7
    assert meta["network_sha256"] == E.file_digest(ckpt) and len(meta["network_sha256"]) == 64

    views = [(23.0, -11.5), (0.0, -11.5), (-23.0, -11.5)]     # the official gen_samples views
    paths = E.export_images(G, tmp_path / "samples", S.ViewerState(trunc_psi=1.0), seeds=[4],
                            views=views, split_views=True, bar=False)
    assert [p.name for p in paths] == ["seed0004_view0.png", "seed0004_view1.png", "seed0004_view2.png"]
    for (yaw, pitch), p in zip(views, paths):
        assert np.array_equal(np.asarray(Image.open(p).convert("RGB")), direct_render(G, 4, yaw, pitch, psi=1.0))
        cam = E.read_png_metadata(p)["cameras"][0]
        assert cam["yaw"] == yaw and len(cam["label"]) == 25
        # each single-view PNG carries the viewer state that reproduces it
        st = S.ViewerState.load(p)
        assert (st.seed, st.yaw, st.pitch, st.trunc_psi) == (4, yaw, pitch, 1.0)


# ------------------------------------------------------------------------------------------------
# command line


def test_cli_turntable_example(tiny, tmp_path, capsys):
    _, ckpt = tiny
    out = tmp_path / "t.mp4"
    # the documented example, with fewer frames to keep the test short
    code = cli.main(["turntable", "--network", str(ckpt), "--seeds", "0-3", "--grid", "2x2", "--frames", "3",
                     "--fps", "30", "--out", str(out), "--quiet", "--render", "raw", "--sample-mult", "1"])
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    meta, frames = decode(out)
    nr = G_nr = tiny[0].neural_rendering_resolution
    assert len(frames) == 3 and meta["size"] == (2 * nr, 2 * G_nr) and meta["fps"] == 30


def test_cli_state_file_reproduces_the_view(tiny, tmp_path):
    G, ckpt = tiny
    state = S.ViewerState(seed=7, yaw=15.0, pitch=-5.0, trunc_psi=0.5, render_type="final")
    state.save(tmp_path / "view.json")
    out = tmp_path / "view.png"
    assert cli.main(["images", "--network", str(ckpt), "--state", str(tmp_path / "view.json"),
                     "--out", str(out), "--quiet"]) == 0
    png = np.asarray(Image.open(out).convert("RGB"))
    viewer = S.to_display_rgb(S.render_state(G, state), state)  # what the viewer shows
    assert np.array_equal(png, viewer)
    assert np.array_equal(png, direct_render(G, 7, 15.0, -5.0, psi=0.5))
    # flags override the state's fields
    assert cli.main(["images", "--network", str(ckpt), "--state", str(out), "--trunc", "1",
                     "--out", str(tmp_path / "psi1.png"), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "psi1.png").convert("RGB")),
                          direct_render(G, 7, 15.0, -5.0, psi=1.0))


def test_cli_errors_are_clear(tiny, tmp_path, capsys, monkeypatch):
    _, ckpt = tiny
    import app
    monkeypatch.setattr(app, "DEFAULT_MODEL_PATH", tmp_path / "missing.safetensors")
    assert cli.main(["images", "--seeds", "0", "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and "--network" in err
    assert cli.main(["images", "--network", str(ckpt), "--seeds", "x", "--out", str(tmp_path / "a.png")]) == 2
    assert "cannot parse seed" in capsys.readouterr().err
    assert cli.main(["turntable", "--network", str(ckpt), "--out", str(tmp_path / "t.avi"), "--frames", "1"]) == 2
    assert ".mp4" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_cli_accepts_official_pkl(fixture_dir, tmp_path):
    """--network takes an official snapshot too (through model.load)."""
    pkl = fixture_dir / "tiny128.pkl"
    out = tmp_path / "pkl.png"
    assert cli.main(["images", "--network", str(pkl), "--seeds", "0", "--render", "raw", "--out", str(out),
                     "--quiet"]) == 0
    G = model.load(pkl)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (G.neural_rendering_resolution, G.neural_rendering_resolution, 3)
    assert E.read_png_metadata(out)["network_sha256"] == E.file_digest(pkl)


def test_feature_turntable_uses_one_range_for_the_whole_video(tiny, tmp_path):
    """The feature render type is coloured with one range, measured on the first frame, so a
    turntable of a feature channel does not flicker."""
    G, _ = tiny
    st = S.ViewerState(render_type="feature", feature_channel=5, neural_res=16, depth_mult=0.5,
                       importance_mult=0.5)
    out = tmp_path / "feat"
    E.export_turntable(G, out, st, frames=3, path="sweep", yaw_range=40,
                       video=E.VideoOptions(png_sequence=True), bar=False)
    pngs = read_pngs(out)
    yaws, pitches = E.camera_path("sweep", 3, yaw_range=40)
    renders = [S.render_state(G, E.posed_state(st, yaws[f], pitches[f])) for f in range(3)]
    fixed = list(S.robust_range(S.feature_channel(renders[0], st)))
    for f in range(3):
        assert np.array_equal(pngs[f], S.to_display_rgb(renders[f], st.copy(feature_range=fixed)))
    assert not np.array_equal(pngs[1], S.to_display_rgb(renders[1], st))    # a per-frame range differs
