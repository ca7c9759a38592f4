"""The shipped generator in checkpoints/ is a trained model, not random weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import model
from training import metrics, synthetic
from training.dataset import ImageFolderDataset

from conftest import REPO

SHIPPED = REPO / "checkpoints" / "portrait.safetensors"
NUM = 64


@pytest.fixture(scope="module")
def fresh_data(tmp_path_factory):
    """A fresh sample of the training distribution (a seed the training set did not use)."""
    path = tmp_path_factory.mktemp("fresh") / "portrait64.zip"
    synthetic.generate_dataset(path, NUM, 64, cameras="portrait", seed=12345, pose_attribute_bias=0.8,
                               progress=False)
    return path


@pytest.fixture(scope="module")
def shipped():
    return model.load(SHIPPED)


def swd_to(G, data_path) -> float:
    dataset = ImageFolderDataset(data_path)
    real = metrics.iterate_dataset(dataset, range(NUM), 16)
    fake = metrics.GeneratorSampler(G, dataset.labels, "cpu", seed=0, batch_size=16).batches(NUM)
    return metrics.compute_swd(real, fake, dataset.resolution)["swd_avg"]


def test_shipped_checkpoint_loads_through_the_public_loader(shipped):
    assert isinstance(shipped, model.TriPlaneGenerator)
    assert shipped.img_resolution == 64 and shipped.c_dim == 25
    assert not shipped.cfg.c_gen_conditioning_zero           # trained with pose conditioning
    meta = model.read_metadata(SHIPPED)
    assert float(meta["kimg"]) > 0


def test_swd_to_fresh_data_is_far_below_a_random_initialisation(shipped, fresh_data):
    torch.manual_seed(0)
    init = model.build_generator(shipped.cfg).eval()
    trained, untrained = swd_to(shipped, fresh_data), swd_to(init, fresh_data)
    assert trained < 0.5 * untrained, (trained, untrained)


def foreground_fraction(G, labels: torch.Tensor) -> float:
    """Mean fraction of non-background (non-black) pixels of G's final images.

    Measured on the image rather than on image_alpha: like EG3D's FFHQ models, ours models the
    black background with opaque dark density, so its accumulated opacity is ~1 everywhere.
    """
    with torch.no_grad():
        out = G(torch.randn(len(labels), G.z_dim, generator=torch.Generator().manual_seed(1)), labels,
                noise_mode="const")
    luminance = (out["image"].clamp(-1, 1) + 1).mean(dim=1) / 2
    return (luminance > 0.08).float().mean().item()


def test_foreground_coverage_is_in_the_datasets_range(shipped, fresh_data):
    gt = synthetic.load_ground_truth(fresh_data)
    coverage = np.array([synthetic.load_gt_arrays(fresh_data, r)[1].astype(bool).mean() for r in gt["images"]])
    low, high = np.percentile(coverage, 5), np.percentile(coverage, 95)
    labels = torch.from_numpy(ImageFolderDataset(fresh_data).labels[:32])
    assert low <= foreground_fraction(shipped, labels) <= high
    torch.manual_seed(0)
    init = model.build_generator(shipped.cfg).eval()
    assert not low <= foreground_fraction(init, labels) <= high     # the check can fail
