"""Metrics: FID / KID / SWD maths against direct references, the Inception loader, the
reprojection behind multi-view consistency, the pose-conditioning effect and the driver / CLI.

No pretrained weights exist here: the Inception network is randomly initialised (fixed seed) and
run at 75 px (the smallest input its strides allow) except for one 299 px forward.
"""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from torch import nn

import model
from model import camera
from training import inception as inc
from training import metrics

SMALL = 75


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def detector():
    return inc.random_inception(seed=0, input_size=SMALL)


def smooth_images(n: int, res: int, seed: int, brightness: float = 0.0) -> torch.Tensor:
    """Structured uint8 images: upsampled random low-res fields (not i.i.d. pixel noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand([n, 3, res // 4, res // 4], generator=g)
    img = torch.nn.functional.interpolate(low, size=(res, res), mode="bilinear", align_corners=False)
    return ((img + brightness).clamp(0, 1) * 255).round().to(torch.uint8)


def small_generator(cond_zero: bool = False, seed: int = 0):
    cfg = model.presets.generator_config("tiny")
    cfg.img_resolution, cfg.neural_rendering_resolution = 32, 16
    cfg.backbone.resolution = 32
    cfg.rendering.depth_resolution = cfg.rendering.depth_resolution_importance = 6
    cfg.c_gen_conditioning_zero = cond_zero
    torch.manual_seed(seed)
    return model.build_generator(cfg).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from training.synthetic import generate_dataset
    path = tmp_path_factory.mktemp("metrics") / "data.zip"
    generate_dataset(path, count=16, resolution=32, cameras="portrait", seed=0, progress=False, supersample=1)
    return path


# ------------------------------------------------------------------------------------------------
# Inception network and loader

def test_inception_299_forward_and_seeded_init(detector):
    images = smooth_images(2, 64, seed=1)
    try:
        detector.input_size = 299                    # one full-size forward
        x = detector.preprocess(images)
        with torch.no_grad():
            f = detector.features_from_normalised(x)
    finally:
        detector.input_size = SMALL
    assert f.shape == (2, inc.FEATURE_DIM) and torch.isfinite(f).all() and f.abs().max() > 1e-3
    assert (f >= 0).all()                           # post-ReLU average pool
    # the 'fid' variant's input: bilinear resize to 299, then (x - 128) / 128
    assert x.shape == (2, 3, 299, 299)
    ref = torch.nn.functional.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, (ref - 128) / 128)
    again = inc.random_inception(seed=0, input_size=SMALL)
    for (k, a), b in zip(detector.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


class _Holder(nn.Module):
    """A TorchScript-able / picklable container for named tensors (mimics foreign files)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _holder(sd):
    root = _Holder()
    for key, t in sd.items():
        *path, leaf = key.split(".")
        m = root
        for p in path:
            if not hasattr(m, p):
                m.add_module(p, _Holder())
            m = getattr(m, p)
        m.register_buffer(leaf, t.clone())
    return root


def test_inception_loader_layouts(tmp_path, detector):
    images = smooth_images(2, 32, seed=5)
    with torch.no_grad():
        want = detector(images)
    ours = detector.state_dict()

    # 1. pytorch-fid layout (torchvision names, 1008 classes) -> the 'fid' variant; a BN scale
    #    absent from the file (as in the TF graph) is 1
    p = tmp_path / "pt_inception.pth"
    fid_layout = {k: v for k, v in ours.items() if not k.endswith("bn.weight")}
    torch.save(dict(fid_layout, **{"Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0)}), p)
    net = inc.load_inception(p, input_size=SMALL)
    assert net.variant == "fid"
    torch.testing.assert_close(net(images), want, rtol=0, atol=0)

    # 2. NVIDIA TorchScript layout (layers.*, BN without scale), as a TorchScript archive,
    #    as a pickle embedding that archive, and as a plain pickled module (restricted unpickler)
    inverse = {v: k for k, v in inc.nvidia_key_map().items()}
    nv = {inverse[k]: v for k, v in ours.items() if k in inverse}
    assert len(nv) == len(inverse) and not any(k.endswith("bn.weight") for k in inverse.values())
    ts = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_holder(nv)).save(str(ts))
    net = inc.load_inception(ts, input_size=SMALL)
    torch.testing.assert_close(net(images), want, rtol=0, atol=0)
    pkl = tmp_path / "embedded.pkl"
    pkl.write_bytes(pickle.dumps({"detector": ts.read_bytes()}))
    torch.testing.assert_close(inc.load_inception(pkl, input_size=SMALL)(images), want, rtol=0, atol=0)
    pkl2 = tmp_path / "module.pkl"
    pkl2.write_bytes(pickle.dumps(_holder(nv)))
    torch.testing.assert_close(inc.load_inception(pkl2, input_size=SMALL)(images), want, rtol=0, atol=0)

    # 3. torchvision ImageNet weights (1000 classes, AuxLogits) -> the 'torchvision' variant
    tv = {k: v for k, v in ours.items() if not k.startswith("fc.")}
    tv.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
               "AuxLogits.fc.weight": torch.zeros(1000, 768)})
    p = tmp_path / "inception_v3_google.pth"
    torch.save(tv, p)
    net = inc.load_inception(p, input_size=SMALL)
    assert net.variant == "torchvision" and not net.Mixed_7b.branch_pool.bn.weight.requires_grad
    assert net.Mixed_7c.pool == "avg" and not net.Mixed_5b.tf_pool
    forced = inc.load_inception(p, input_size=SMALL, variant="fid")     # classifier dropped
    torch.testing.assert_close(forced(images), want, rtol=0, atol=0)

    # errors name the file and the problem
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(inc.InceptionLoadError, match="bad.pth"):
        inc.load_inception(bad)
    partial = dict(ours)
    partial.pop("Mixed_6b.branch1x1.conv.weight")
    torch.save(partial, bad)
    with pytest.raises(inc.InceptionLoadError, match="missing"):
        inc.load_inception(bad)
    with pytest.raises(inc.InceptionLoadError, match="no such file"):
        inc.load_inception(tmp_path / "absent.pt")


# ------------------------------------------------------------------------------------------------
# FID / KID maths

def direct_fid(fa: np.ndarray, fb: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm of the d x d product (official metric code)."""
    fa, fb = fa.astype(np.float64), fb.astype(np.float64)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    s_a, s_b = np.cov(fa, rowvar=False, bias=True), np.cov(fb, rowvar=False, bias=True)
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    return float(np.real(np.square(mu_a - mu_b).sum() + np.trace(s_a + s_b - 2 * covmean)))


def direct_fid_gram(fa: np.ndarray, fb: np.ndarray) -> float:
    """The same quantity for few samples in 2048-d without a 2048 x 2048 sqrtm: with
    X = (f - mean) / sqrt(n), S_a S_b = Xa^T (Xa Xb^T) Xb has the non-zero eigenvalues of C C^T,
    C = Xb Xa^T, so tr sqrtm(S_a S_b) = tr sqrtm(C C^T) (scipy sqrtm of an n_b x n_b matrix)."""
    fa, fb = fa.astype(np.float64), fb.astype(np.float64)
    xa = (fa - fa.mean(0)) / math.sqrt(len(fa))
    xb = (fb - fb.mean(0)) / math.sqrt(len(fb))
    c = xb @ xa.T
    covmean_trace = np.real(np.trace(scipy.linalg.sqrtm(c @ c.T)))
    return float(np.square(fa.mean(0) - fb.mean(0)).sum() + np.square(xa).sum() + np.square(xb).sum()
                 - 2 * covmean_trace)


def direct_kid(real: np.ndarray, gen: np.ndarray, num_subsets: int, subset: int, seed: int) -> float:
    """Explicit unbiased MMD^2 per subset: mean_{i!=j} k(x_i,x_j) + mean_{i!=j} k(y_i,y_j) - 2 mean k(x_i,y_j)."""
    d = real.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(len(gen), subset, replace=False)].astype(np.float64)
        y = real[rng.choice(len(real), subset, replace=False)].astype(np.float64)
        xx = sum(k(x[i], x[j]) for i in range(subset) for j in range(subset) if i != j)
        yy = sum(k(y[i], y[j]) for i in range(subset) for j in range(subset) if i != j)
        xy = sum(k(x[i], y[j]) for i in range(subset) for j in range(subset))
        total += (xx + yy) / (subset * (subset - 1)) - 2 * xy / subset ** 2
    return total / num_subsets


def test_frechet_distance_matches_scipy_sqrtm_low_dim():
    rng = np.random.RandomState(0)
    a = rng.randn(400, 12) @ rng.randn(12, 12)
    b = rng.randn(300, 12) @ rng.randn(12, 12) + 0.5
    stats = []
    for x in (a, b):
        s = metrics.FeatureStats(capture_all=False)
        for chunk in np.array_split(x, 7):        # streaming accumulation
            s.append(chunk)
        stats.append(s.get_mean_cov())
    got = metrics.frechet_distance(*stats[0], *stats[1])
    assert got == pytest.approx(direct_fid(a.astype(np.float32), b.astype(np.float32)), rel=1e-6)
    assert metrics.frechet_distance(*stats[0], *stats[0]) == pytest.approx(0.0, abs=1e-7)


def test_fid_kid_on_inception_features(detector):
    real, fake = smooth_images(24, 32, seed=1), smooth_images(24, 32, seed=2, brightness=0.15)
    with torch.no_grad():
        fr, ff = detector(real).numpy(), detector(fake).numpy()
    sr, sf = metrics.FeatureStats(), metrics.FeatureStats()
    sr.append(fr[:11]); sr.append(fr[11:])
    sf.append(ff)
    mu_r, sig_r = sr.get_mean_cov()
    fid = metrics.fid_from_features(sf.get_all(), mu_r, sig_r)        # n < d: the n x n route
    assert fid == pytest.approx(direct_fid_gram(ff, fr), rel=1e-6)
    assert fid > 1e-3
    assert metrics.fid_from_features(fr, mu_r, sig_r) == pytest.approx(0.0, abs=1e-6 * fid)
    # the d x d route on a 256-d slice of the same features (rank-deficient covariances) against
    # scipy's sqrtm of the product, and against the n x n route
    a, b = ff[:, :256], fr[:, :256]
    sa, sb = metrics.FeatureStats(), metrics.FeatureStats()
    sa.append(a); sb.append(b)
    dxd = metrics.frechet_distance(*sa.get_mean_cov(), *sb.get_mean_cov())
    assert dxd == pytest.approx(direct_fid(a, b), rel=1e-5)
    assert dxd == pytest.approx(metrics.fid_from_features(a, *sb.get_mean_cov()), rel=1e-6)
    assert metrics.frechet_distance(*sb.get_mean_cov(), *sb.get_mean_cov()) == pytest.approx(0.0, abs=1e-6 * dxd)
    # FID against a brightened copy of the real set grows with the brightening
    fids = []
    for shift in (0.05, 0.15, 0.3):
        with torch.no_grad():
            fs = detector(smooth_images(24, 32, seed=1, brightness=shift)).numpy()
        fids.append(metrics.fid_from_features(fs, mu_r, sig_r))
    assert fids[0] < fids[1] < fids[2]

    kid = metrics.kernel_inception_distance(sr.get_all(), sf.get_all(), num_subsets=4, max_subset_size=12, seed=7)
    assert kid == pytest.approx(direct_kid(fr, ff, 4, 12, 7), rel=1e-6)
    assert kid > 0
    same = metrics.kernel_inception_distance(fr, fr, num_subsets=10, max_subset_size=20, seed=0)
    assert abs(same) < 0.1 * kid


# ------------------------------------------------------------------------------------------------
# SWD: a literal port of ProGAN's numpy code as the slow reference

_G5 = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0


def ref_pyramid(minibatch: np.ndarray, num_levels: int):
    def down(mb):
        return scipy.ndimage.convolve(mb, _G5[None, None], mode="mirror")[:, :, ::2, ::2]

    def up(mb):
        s = mb.shape
        res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), mb.dtype)
        res[:, :, ::2, ::2] = mb
        return scipy.ndimage.convolve(res, _G5[None, None] * 4.0, mode="mirror")

    pyramid = [np.float32(minibatch)]
    for _ in range(1, num_levels):
        pyramid.append(down(pyramid[-1]))
        pyramid[-2] -= up(pyramid[-1])
    return pyramid


def ref_descriptors(level: np.ndarray, rng, nhood: int, per_image: int) -> np.ndarray:
    s, h = level.shape, nhood // 2
    n = per_image * s[0]
    xs, ys = [], []
    for _ in range(s[0]):                             # per image: x then y (see SWDDescriptors)
        xs.append(rng.randint(h, s[3] - h, size=per_image))
        ys.append(rng.randint(h, s[2] - h, size=per_image))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    out = np.empty((n, s[1], nhood, nhood), np.float32)
    for i in range(n):
        out[i] = level[i // per_image, :, ys[i] - h:ys[i] + h + 1, xs[i] - h:xs[i] + h + 1]
    return out


def ref_finalize(parts):
    desc = np.concatenate(parts, axis=0).astype(np.float64)
    desc -= desc.mean(axis=(0, 2, 3), keepdims=True)
    desc /= desc.std(axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def ref_sliced_wasserstein(a, b, rng, repeats, dirs_per_repeat):
    results = []
    for _ in range(repeats):
        dirs = rng.randn(a.shape[1], dirs_per_repeat)
        dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
        dists = []
        for j in range(dirs_per_repeat):            # one direction at a time
            pa, pb = np.sort(a @ dirs[:, j]), np.sort(b @ dirs[:, j])
            dists.append(np.mean(np.abs(pa - pb)))
        results.append(np.mean(dists))
    return float(np.mean(results))


def ref_swd(real_batches, fake_batches, res, seed, per_image, repeats, dirs):
    levels = len(metrics.swd_resolutions(res))
    sets = []
    for batches in (real_batches, fake_batches):
        rngs = [np.random.RandomState([seed, lod]) for lod in range(levels)]
        parts = [[] for _ in range(levels)]
        for mb in batches:
            for lod, level in enumerate(ref_pyramid(mb.numpy(), levels)):
                parts[lod].append(ref_descriptors(level, rngs[lod], 7, per_image))
        sets.append([ref_finalize(p) for p in parts])
    rng = np.random.RandomState(seed + 1)
    return [ref_sliced_wasserstein(r, f, rng, repeats, dirs) * 1e3 for r, f in zip(*sets)]


def test_laplacian_pyramid_matches_cv2_style_reference():
    x = smooth_images(3, 32, seed=4)
    ours = metrics.laplacian_pyramid(x, 3)
    ref = ref_pyramid(x.numpy(), 3)
    assert [tuple(t.shape[-2:]) for t in ours] == [(32, 32), (16, 16), (8, 8)]
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-3)


def test_swd_matches_slow_reference():
    real = [smooth_images(3, 32, seed=10), smooth_images(2, 32, seed=11)]
    fake = [smooth_images(3, 32, seed=12, brightness=0.1), smooth_images(2, 32, seed=13, brightness=0.1)]
    got = metrics.compute_swd(real, fake, 32, seed=3, nhoods_per_image=16, dir_repeats=2, dirs_per_repeat=8)
    want = ref_swd(real, fake, 32, 3, 16, 2, 8)
    assert list(got) == ["swd32", "swd16", "swd_avg"]
    np.testing.assert_allclose([got["swd32"], got["swd16"]], want, rtol=1e-4)
    assert got["swd_avg"] == pytest.approx(np.mean(want), rel=1e-4)


def test_swd_zero_for_identical_sets_and_monotonic():
    x = smooth_images(24, 32, seed=20)
    batches = [x[:10], x[10:]]
    kw = dict(seed=0, nhoods_per_image=32, dir_repeats=2, dirs_per_repeat=32)
    assert metrics.compute_swd(batches, [x], 32, **kw)["swd_avg"] == 0.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    by_noise = [metrics.compute_swd([x], [(x.float() + s * noise).clamp(0, 255).round().to(torch.uint8)], 32,
                                    **kw)["swd_avg"] for s in (4, 12, 32, 64)]
    assert all(a < b for a, b in zip(by_noise, by_noise[1:])), by_noise
    by_blur = []
    for sigma in (0.5, 1.0, 2.0):
        blurred = scipy.ndimage.gaussian_filter(x.numpy().astype(np.float32), sigma=(0, 0, sigma, sigma))
        by_blur.append(metrics.compute_swd([x], [torch.from_numpy(blurred.round().astype(np.uint8))], 32, **kw)["swd32"])
    assert all(a < b for a, b in zip(by_blur, by_blur[1:])), by_blur
    assert by_noise[0] > 0 and by_blur[0] > 0


# ------------------------------------------------------------------------------------------------
# Multi-view consistency: reprojection

def _textured_plane(label: torch.Tensor, res: int, phase: float = 0.0, half: float = 0.4):
    """Analytic render of the plane z = 0 with a smooth texture on a square of side 2 * half."""
    cam2world, intrinsics = camera.split_label(label)
    o, d = camera.generate_rays(cam2world, intrinsics, res)
    t = -o[..., 2] / d[..., 2]
    p = o + t[..., None] * d
    x, y = p[..., 0], p[..., 1]
    rgb = torch.stack([torch.sin(7 * x + 1 + phase), torch.cos(5 * y + phase), torch.sin(4 * x + 6 * y + 2 * phase)], -1)
    rgb = 0.8 * rgb                                   # in [-1, 1]
    alpha = ((x.abs() < half) & (y.abs() < half)).float()
    shape = (label.shape[0], 1, res, res)
    return rgb.transpose(1, 2).reshape(label.shape[0], 3, res, res), t.reshape(shape), alpha.reshape(shape)


def test_project_inverts_unproject():
    label = camera.orbit_label([1.3, 1.9], [1.4, 1.7], 2.7, (0, 0, 0.2))
    depth = 2.0 + torch.rand(2, 1, 8, 8)
    points, origin = metrics.unproject(depth, label)
    uv, z = metrics.project(points, label)
    centres = (torch.arange(8) + 0.5) / 8
    row, col = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([col, row], -1).reshape(1, 64, 2).expand(2, -1, -1), atol=1e-5, rtol=0)
    assert (z > 0).all()
    torch.testing.assert_close((points - origin).norm(dim=-1), depth.reshape(2, -1), atol=1e-5, rtol=0)


def test_reprojection_textured_plane():
    a = camera.orbit_label(math.pi / 2, math.pi / 2, 2.7, (0, 0, 0))
    b = camera.orbit_label(math.pi / 2 + 0.15, math.pi / 2 + 0.05, 2.7, (0, 0, 0))
    img_a, dep_a, al_a = _textured_plane(a, 64)
    img_b, dep_b, al_b = _textured_plane(b, 64)
    good = metrics.reprojection_error(img_a, dep_a, al_a, a, img_b, dep_b, al_b, b)
    err_good = float(good["error_sum"] / good["valid"])
    frac = float(good["valid"] / good["total"])
    assert err_good < 2e-3 and frac > 0.3
    other, _, _ = _textured_plane(b, 64, phase=1.5)         # inconsistent appearance
    bad = metrics.reprojection_error(img_a, dep_a, al_a, a, other, dep_b, al_b, b)
    assert float(bad["error_sum"] / bad["valid"]) > 50 * err_good
    wrong = metrics.reprojection_error(img_a, dep_a * 1.05, al_a, a, img_b, dep_b, al_b, b)  # wrong geometry
    assert float(wrong["valid"]) < 0.02 * float(good["valid"])
    # final image at twice the depth resolution: depth/alpha are resized to the image
    img_a2, _, _ = _textured_plane(a, 128)
    img_b2, _, _ = _textured_plane(b, 128)
    hi = metrics.reprojection_error(img_a2, dep_a, al_a, a, img_b2, dep_b, al_b, b)
    assert float(hi["total"]) == 128 * 128 and float(hi["error_sum"] / hi["valid"]) < 5e-3


def test_reprojection_synthetic_ground_truth():
    from training import synthetic
    res, pivot = 48, synthetic.CAMERA_DISTRIBUTIONS["portrait"].pivot

    def views(index):
        s = synthetic.make_sample(index, res, "portrait", seed=0, supersample=1)
        label = torch.from_numpy(s.label)[None]
        cam2world, intrinsics = camera.split_label(label)
        yaw, pitch, radius = camera.yaw_pitch_radius(cam2world)
        cam_b = camera.look_at_pose(yaw + 0.1, pitch, radius, pivot)
        img_b, dep_b, m_b = synthetic.render(s.object, cam_b, intrinsics, res, (0, 0, 0), 1)
        t = lambda im: torch.from_numpy(im).permute(2, 0, 1)[None].float() / 127.5 - 1
        m = lambda a: torch.from_numpy(a)[None, None].float()
        return (t(s.image), m(s.depth), m(s.mask), label), (t(img_b), m(dep_b), m(m_b), camera.make_label(cam_b, intrinsics))

    (ia, da, ma, la), (ib, db, mb, lb) = views(2)
    good = metrics.reprojection_error(ia, da, ma, la, ib, db, mb, lb)
    err_good = float(good["error_sum"] / good["valid"])
    assert float(good["valid"]) > 0.5 * float(good["foreground"]) and err_good < 0.03
    perm = torch.randperm(res * res, generator=torch.Generator().manual_seed(0))
    shuffled = ib.reshape(1, 3, -1)[:, :, perm].reshape(ib.shape)
    bad = metrics.reprojection_error(ia, da, ma, la, shuffled, db, mb, lb)
    assert float(bad["error_sum"] / bad["valid"]) > 3 * err_good


# ------------------------------------------------------------------------------------------------
# Generator metrics: mvc and the pose-conditioning effect

def test_pose_effect_exactly_zero_without_conditioning():
    labels = camera.orbit_label([1.4, 1.7, 1.5], [1.5, 1.6, 1.57], 2.7).numpy()
    kw = dict(num=3, batch_size=3, progress=False)
    predictor = lambda images: images.mean(dim=(1, 2, 3))
    off = metrics.compute_pose_effect(small_generator(cond_zero=True), labels, attribute_predictor=predictor, **kw)
    assert off["pose_cond_change"] == 0.0 and off["pose_cond_change_raw"] == 0.0
    assert off["pose_attr_cond_change"] == 0.0 and off["pose_ratio"] == 0.0
    assert off["pose_cam_change"] > 0 and off["pose_attr_cam_change"] > 0
    on = metrics.compute_pose_effect(small_generator(cond_zero=False), labels, **kw)
    assert on["pose_cond_change"] > 0 and on["pose_cam_change"] > 0
    assert on["pose_ratio"] == pytest.approx(on["pose_cond_change"] / on["pose_cam_change"])


def test_mvc_runs_on_generator():
    G = small_generator()
    labels = camera.orbit_label([1.4, 1.7], [1.5, 1.6], 2.7).numpy()
    r = metrics.compute_mvc(G, labels, num=2, batch_size=2, progress=False, alpha_threshold=0.0)
    assert set(r) == {"mvc", "mvc_raw", "mvc_lowpass", "mvc_valid", "mvc_valid_raw"}
    for k, v in r.items():
        assert 0.0 <= v <= 1.0, (k, v)
    assert r["mvc_valid_raw"] > 0


def test_mvc_lowpass_ignores_detail_finer_than_the_raw_render():
    """A final image = the raw render upsampled, plus a screen-fixed checkerboard at the final
    resolution's Nyquist frequency (detail that does not follow the object): mvc rises with the
    pattern, mvc_lowpass (the raw render's band) does not."""
    labels = camera.orbit_label([1.4, 1.7, 1.5, 1.6], [1.5, 1.6, 1.55, 1.5], 2.7).numpy()

    def run(amplitude: float):
        G = small_generator()
        render = G.render

        def upsampled(*args, **kwargs):
            out = render(*args, **kwargs)
            size = out["image"].shape[-1]
            yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            checker = ((yy + xx) % 2 * 2 - 1).float() * amplitude
            out["image"] = torch.nn.functional.interpolate(out["image_raw"], size=size, mode="bilinear",
                                                           align_corners=False) + checker
            return out
        G.render = upsampled
        return metrics.compute_mvc(G, labels, num=4, batch_size=2, progress=False, alpha_threshold=0.0)

    clean, patterned = run(0.0), run(0.3)
    assert patterned["mvc"] > clean["mvc"] + 0.02
    assert patterned["mvc_lowpass"] == pytest.approx(clean["mvc_lowpass"], abs=1e-4)
    assert patterned["mvc_raw"] == clean["mvc_raw"]


# ------------------------------------------------------------------------------------------------
# The driver and the CLI

def test_parse_metric():
    s = metrics.parse_metric("fid50k_full")
    assert (s.kind, s.num_gen, s.max_real) == ("fid", 50000, None)
    assert metrics.parse_metric("kid50k_full").max_real == metrics.KID_MAX_REAL
    assert metrics.parse_metric("fid10k").max_real == 10000
    assert metrics.parse_metric("swd").num_gen == 16384
    assert metrics.parse_metric("fid50k_full", num_images=100).num_gen == 100
    with pytest.raises(ValueError):
        metrics.parse_metric("is50k")


def test_compute_metrics_reference_matches_direct(tiny_dataset, detector):
    from training.dataset import ImageFolderDataset
    out = metrics.compute_metrics(None, tiny_dataset, ["fid1k_full", "kid1k_full", "swd", "mvc", "pose_effect"],
                                  num_images=8, detector=detector, progress=False, reference_only=True, batch_size=4)
    ds = ImageFolderDataset(tiny_dataset)
    perm = np.random.RandomState(0).permutation(len(ds))
    imgs = lambda idx: torch.from_numpy(np.stack([ds[int(i)][0] for i in idx]))
    with torch.no_grad():
        fa, fb = detector(imgs(perm[:8])).numpy(), detector(imgs(perm[8:16])).numpy()
    assert out["fid1k_full"]["results"]["fid1k_full"] == pytest.approx(direct_fid_gram(fb, fa), rel=1e-6)
    assert out["kid1k_full"]["results"]["kid1k_full"] == pytest.approx(
        metrics.kernel_inception_distance(fa, fb, seed=0), rel=1e-9)
    swd = out["swd"]["results"]
    assert set(swd) == {"swd32", "swd16", "swd_avg"} and swd["swd_avg"] > 0
    mvc = out["mvc"]["results"]                       # ground-truth floor of the synthetic data
    assert mvc["mvc"] < 0.05 and mvc["mvc_valid"] > 0.05
    assert out["pose_effect"]["results"] == {} and "skipped" in out["pose_effect"]
    assert out["fid1k_full"]["num_real"] == 8 and out["fid1k_full"]["num_gen"] == 8
    json.dumps(out)


def test_compute_metrics_generator_and_cli(tiny_dataset, detector, tmp_path, capsys):
    G = small_generator()
    out = metrics.compute_metrics(G, tiny_dataset, ["fid1k_full", "swd"], num_images=4, detector=detector,
                                  progress=False, batch_size=4)
    assert out["fid1k_full"]["results"]["fid1k_full"] > 0
    assert out["fid1k_full"]["num_real"] == 16 and out["fid1k_full"]["num_gen"] == 4
    assert set(metrics.flatten(out)) == {"fid1k_full", "swd32", "swd16", "swd_avg"}
    # the CLI, with a generator checkpoint (no FID: keeps the test fast)
    ckpt = tmp_path / "G.safetensors"
    model.save(ckpt, G)
    rc = metrics.main(["--network", str(ckpt), "--data", str(tiny_dataset), "--metrics", "swd,pose_effect",
                       "--num", "2", "--batch", "2", "--no-progress", "--device", "cpu"])
    assert rc == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    assert [l["metric"] for l in lines] == ["swd", "pose_effect"]
    assert lines[1]["results"]["pose_cam_change"] > 0
    with pytest.raises(SystemExit):
        metrics.main(["--network", str(ckpt), "--data", str(tiny_dataset), "--metrics", "fid50k_full"])
