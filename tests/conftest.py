"""Shared test fixtures: the official reference data in ../shared and small random models."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
OFFICIAL_FIXTURES = SHARED / "fixtures" / "eg3d_official"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def official_fixture_dir() -> Path:
    """The official reference fixtures; skipped only in a user's clone without ../shared.

    In CI (CI=true) ../shared is always present, so its absence is a failure, not a skip.
    """
    if not (OFFICIAL_FIXTURES / "tiny128.pkl").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI run without the reference fixtures at {OFFICIAL_FIXTURES}")
        pytest.skip(f"official reference fixtures not found at {OFFICIAL_FIXTURES} (../shared is absent)")
    return OFFICIAL_FIXTURES


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return official_fixture_dir()


@pytest.fixture()
def one_thread():
    """One intra-op thread for modules of many tiny ops (faster than two, which mostly
    synchronise); also restores autograd in case an earlier in-process test left it off."""
    before, grad = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1)
    torch.set_grad_enabled(True)
    yield
    torch.set_num_threads(before)
    torch.set_grad_enabled(grad)


@pytest.fixture()
def tiny_generator():
    import model
    torch.manual_seed(0)
    return model.build_generator(model.presets.generator_config("tiny")).eval()
