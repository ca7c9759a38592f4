"""The shipped generators in checkpoints/ are trained models that reach their model cards' quality.

Each model is checked against a fresh sample of its training distribution (a seed the training
set did not use): SWD below the bound its card states for this small sample (measured value plus
a margin), far below a random initialisation's, and foreground coverage in the dataset's range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import model
from training import metrics, synthetic
from training.dataset import ImageFolderDataset

from conftest import REPO

NUM = 64                      # images per SWD sample: small, so the test takes seconds


@dataclass(frozen=True)
class Shipped:
    file: str
    cameras: str              # training.synthetic camera distribution of the training data
    bias: float               # its pose-attribute bias
    pose_conditioned: bool
    background: float         # background grey level in [0, 1] (black portraits, white 360 objects)
    box_warp: float           # tri-plane box side (official FFHQ-like 1, ShapeNet-like 1.6)
    preset: str               # model.presets architecture it was trained with (--cfg)
    swd_bound: float          # SWD x1e3 bound on NUM fresh images (model card: measured + margin)


SHIPPED = {
    "portrait": Shipped("portrait.safetensors", "portrait", 0.8, True, 0.0, 1.0, "tiny", swd_bound=45.0),
    "objects360": Shipped("objects360.safetensors", "360", 0.0, False, 1.0, 1.6, "tiny360", swd_bound=45.0),
}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def case(request, tmp_path_factory):
    spec = SHIPPED[request.param]
    data = tmp_path_factory.mktemp("fresh") / f"{request.param}.zip"
    synthetic.generate_dataset(data, NUM, 64, cameras=spec.cameras, seed=12345, pose_attribute_bias=spec.bias,
                               progress=False)
    path = REPO / "checkpoints" / spec.file
    return spec, path, model.load(path), data


def swd_to(G, data_path) -> float:
    """SWD x1e3 (mean of the levels) between NUM generated and NUM fresh dataset images."""
    dataset = ImageFolderDataset(data_path)
    real = metrics.iterate_dataset(dataset, range(NUM), 16)
    fake = metrics.GeneratorSampler(G, dataset.labels, "cpu", seed=0, batch_size=16).batches(NUM)
    return metrics.compute_swd(real, fake, dataset.resolution)["swd_avg"]      # already x1e3


def random_init(G):
    torch.manual_seed(0)
    return model.build_generator(G.cfg).eval()


def test_shipped_checkpoint_loads_through_the_public_loader(case):
    spec, path, G, _ = case
    assert isinstance(G, model.TriPlaneGenerator)
    assert G.img_resolution == 64 and G.c_dim == 25
    assert G.cfg.c_gen_conditioning_zero == (not spec.pose_conditioned)
    assert G.cfg.rendering.white_back == (spec.background == 1.0)
    assert G.cfg.rendering.box_warp == spec.box_warp
    assert G.cfg.rendering == model.presets.generator_config(spec.preset).rendering    # the preset is what shipped
    meta = model.read_metadata(path)
    assert float(meta["kimg"]) > 0
    assert (REPO / meta["model_card"]).exists()


def test_swd_to_fresh_data_meets_the_model_cards_bound(case):
    spec, _, G, data = case
    trained, untrained = swd_to(G, data), swd_to(random_init(G), data)
    assert trained < spec.swd_bound, (trained, spec.swd_bound)
    assert untrained > 2 * spec.swd_bound, untrained        # the bound separates trained from untrained


def foreground_fraction(G, labels: torch.Tensor, background: float) -> float:
    """Mean fraction of G's final-image pixels that differ from the background grey level.

    Measured on the image rather than on image_alpha: like EG3D's FFHQ models, the portrait
    model renders the black background with opaque dark density.
    """
    with torch.no_grad():
        out = G(torch.randn(len(labels), G.z_dim, generator=torch.Generator().manual_seed(1)), labels,
                noise_mode="const")
    rgb = (out["image"].clamp(-1, 1) + 1) / 2
    return ((rgb - background).abs().amax(dim=1) > 0.08).float().mean().item()


def test_foreground_coverage_is_in_the_datasets_range(case):
    spec, _, G, data = case
    gt = synthetic.load_ground_truth(data)
    coverage = np.array([synthetic.load_gt_arrays(data, r)[1].astype(bool).mean() for r in gt["images"]])
    low, high = np.percentile(coverage, 5), np.percentile(coverage, 95)
    labels = torch.from_numpy(ImageFolderDataset(data).labels[:32])
    assert low <= foreground_fraction(G, labels, spec.background) <= high
    assert not low <= foreground_fraction(random_init(G), labels, spec.background) <= high   # it can fail


RUN_STATE = REPO / "checkpoints" / "training" / "portrait-run.safetensors"   # see checkpoints/portrait.md


def test_the_committed_portrait_run_continues_from_its_state(tmp_path):
    """The portrait run in progress is committed with its whole training state (G, G_ema, D,
    both optimisers, the data stream, its options), because a session's run folders do not
    outlive it. One more step from it must continue that run, not start a new one."""
    import json
    import train
    from training import options
    spec = SHIPPED["portrait"]
    data = tmp_path / "portrait.zip"
    synthetic.generate_dataset(data, 16, 64, cameras=spec.cameras, seed=12345, pose_attribute_bias=spec.bias,
                               progress=False)
    meta = model.read_metadata(RUN_STATE)
    state, opts = json.loads(meta["training_state"]), json.loads(meta["training_options"])
    assert opts["cfg"] == spec.preset and opts["gen_pose_cond"] is True
    args = ["--resume", str(RUN_STATE), "--data", str(data), "--outdir", str(tmp_path / "runs"),
            "--kimg", f"{(state['cur_nimg'] + 8) / 1000:.3f}", "--tick", "0.008", "--snap", "1",
            "--threads", "1", "--workers", "0", "--progress", "false", "--metrics", "none"]
    cfg = options.resolve(options.parse_args(args))
    assert cfg.resume.mode == "continue" and cfg.options.gamma == opts["gamma"] and cfg.batch_size == 8
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    try:
        assert train.main(args) == 0
    finally:                                     # train.main sets them for this process
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
    (run,) = (tmp_path / "runs").glob("0*")
    latest = run / (run / "latest").read_text().strip()
    after = json.loads(model.read_metadata(latest)["training_state"])
    assert after["cur_nimg"] == state["cur_nimg"] + 8                     # one step of 8 further on
    before_G, after_G = model.load(RUN_STATE, net="G"), model.load(latest, net="G")
    steps = [(after_G.state_dict()[k] - v).abs().max().item() for k, v in before_G.state_dict().items()
             if v.is_floating_point()]
    assert max(steps) > 0                                                 # it trained ...
    assert max(steps) < 0.1           # ... one Adam step from those weights (measured 0.015; a fresh init: 3.0)
