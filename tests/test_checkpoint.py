"""Our safetensors format, the single loader, and the pkl -> safetensors converter."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import model
from model import presets
from model.checkpoint import CheckpointError

from conftest import REPO


def test_round_trip_is_exact(tmp_path, tiny_generator):
    G = tiny_generator
    G.backbone.mapping.w_avg.normal_()
    torch.manual_seed(1)
    D = model.build_discriminator(presets.discriminator_config("tiny"))
    path = tmp_path / "nets.safetensors"
    model.save(path, {"G_ema": G, "D": D}, metadata={"kimg": "12.5"},
               extra_tensors={"opt.G.step": torch.tensor([3.0])})
    G2, D2 = model.load(path), model.load(path, net="D")
    assert G2.cfg == G.cfg and D2.cfg == D.cfg
    for a, b in [(G, G2), (D, D2)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert model.read_metadata(path)["kimg"] == "12.5"
    assert torch.equal(model.load_extra_tensors(path)["opt.G.step"], torch.tensor([3.0]))
    assert not G2.training and not any(p.requires_grad for p in G2.parameters())
    assert sorted(model.load_all(path)) == ["D", "G_ema"]


def test_fp16_storage_halves_the_file_and_loads_as_float32(tmp_path, tiny_generator):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    model.save(full, tiny_generator)
    model.save(half, tiny_generator, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    G = model.load(half)
    for k, v in G.state_dict().items():
        assert v.dtype == tiny_generator.state_dict()[k].dtype
        torch.testing.assert_close(v, tiny_generator.state_dict()[k], atol=2e-3, rtol=1e-3)


def test_renders_the_same_after_reload(tmp_path, tiny_generator):
    path = tmp_path / "g.safetensors"
    model.save(path, tiny_generator)
    G = model.load(path)
    z, c = torch.randn(1, G.z_dim), model.camera.orbit_label(math.pi / 2, math.pi / 2)
    with torch.no_grad():
        a = tiny_generator(z, c, noise_mode="const", deterministic=True)["image"]
        b = G(z, c, noise_mode="const", deterministic=True)["image"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"hello, not a checkpoint at all", "unrecognised"),
    (b"\x80\x04\x95 truncated pickle", "corrupt"),
])
def test_bad_files_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "tiny.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        model.load(path)
    assert str(path.name) in str(info.value)
    assert message in str(info.value)


def test_truncated_safetensors_and_foreign_safetensors(tmp_path, tiny_generator):
    from safetensors.torch import save_file
    good = tmp_path / "good.safetensors"
    model.save(good, tiny_generator)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        model.load(cut)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an EG3D checkpoint"):
        model.load(foreign)
    with pytest.raises(CheckpointError, match="no such file"):
        model.load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="no network 'D'"):
        model.load(good, net="D")


def test_interrupted_save_leaves_no_file(tmp_path, tiny_generator, monkeypatch):
    import safetensors.torch

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "g.safetensors", tiny_generator)
    assert list(tmp_path.iterdir()) == []


def test_converter_cli(tmp_path, fixture_dir):
    out = tmp_path / "tiny128.safetensors"
    result = subprocess.run([sys.executable, "-m", "model.convert", str(fixture_dir / "tiny128.pkl"),
                             str(out), "--nets", "G_ema,D"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    from_pkl = model.load(fixture_dir / "tiny128.pkl")
    converted = model.load(out)
    assert converted.cfg == from_pkl.cfg
    for k, v in from_pkl.state_dict().items():
        assert torch.equal(v, converted.state_dict()[k]), k
    assert model.load(out, net="D").cfg == model.load(fixture_dir / "tiny128.pkl", net="D").cfg
    help_text = subprocess.run([sys.executable, "-m", "model.convert", "--help"],
                               capture_output=True, text=True, cwd=REPO).stdout
    assert "--fp16" in help_text and "restricted" in help_text


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path, tiny_generator):
    """The 8-byte length prefix can begin with 0x80, the pickle PROTO opcode."""
    path = tmp_path / "g.safetensors"
    for pad in range(0, 2048, 8):
        model.save(path, tiny_generator, metadata={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("could not produce a header length starting with 0x80")
    G = model.load(path)
    assert G.cfg == tiny_generator.cfg
