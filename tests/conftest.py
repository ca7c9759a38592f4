"""Shared test fixtures: the official reference data in ../shared and small random models."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
OFFICIAL_FIXTURES = SHARED / "fixtures" / "eg3d_official"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def xvfb_server(displays: range, size: str):
    """A private Xvfb server on the first free display number in `displays`, as $DISPLAY.

    Xvfb is installed by .ci/run: its absence fails in CI and skips elsewhere."""
    exe = shutil.which("Xvfb")
    if exe is None:
        msg = "Xvfb is not installed (apt-get install xvfb xauth libgl1-mesa-dri libglx-mesa0 libgl1 libegl1)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    num = next((n for n in displays if not os.path.exists(f"/tmp/.X11-unix/X{n}")
                and not os.path.exists(f"/tmp/.X{n}-lock")), displays[-1])
    proc = subprocess.Popen([exe, f":{num}", "-screen", "0", size, "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(f"/tmp/.X11-unix/X{num}"):
            break
        if proc.poll() is not None:
            pytest.fail(f"Xvfb :{num} exited with {proc.returncode}")
        time.sleep(0.05)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{num}"
    try:
        yield f":{num}"
    finally:
        proc.terminate()
        proc.wait(10)
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


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


@contextlib.contextmanager
def single_thread():
    """One intra-op thread for modules of many tiny ops (faster than two, which mostly
    synchronise); autograd on in case an earlier in-process test left it off; both restored."""
    before, grad = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1)
    torch.set_grad_enabled(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.set_grad_enabled(grad)


@pytest.fixture()
def one_thread():
    with single_thread():
        yield


@pytest.fixture()
def tiny_generator():
    import model
    torch.manual_seed(0)
    return model.build_generator(model.presets.generator_config("tiny")).eval()
