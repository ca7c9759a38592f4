"""The Invert panel headless (no window, no GL) and the projected-latent state it leads to.

Like tests/test_panels.py: the pointer clicks every row of the panel, here with a projected
latent (so its save rows show) and a live strip; it may change only its own form, everything
else goes through the recorded actions. Then the form's checks, and the latent section's
reference to a projection file (path + SHA-256): validation, old files, the ws it resolves to.
"""
import dataclasses
import json

import numpy as np
import pytest
import torch

import model
from app import state as S
from app.viewer.panels.invert import InvertForm, InvertPanel
from model import inversion as inv
from model import projection as proj

from test_panels import Recorder, draw_frame, fake_context, gui, sections  # noqa: F401  (fixture)

ROW_STEP = 9
COLUMNS = (20, 70, 120, 170, 220, 270, 330)


@pytest.fixture(scope="module", autouse=True)
def one_thread_module():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return model.build_generator(model.presets.generator_config("tiny")).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def saved(G, tmp_path_factory):
    """A two-step projection of a render of G, and G's file."""
    d = tmp_path_factory.mktemp("invert_panel")
    net = d / "tiny.safetensors"
    model.save(net, G)
    c = inv.frontal_label(G)
    with torch.no_grad():
        target = inv.render(G, G.mapping(torch.randn(1, G.z_dim), c), c)["image"]
    with torch.enable_grad():
        p = inv.invert(G, target, c, steps=2, config=inv.InversionConfig(w_avg_samples=100))
    path = proj.save_projection(d / "p.safetensors", p, network=net)
    image = d / "photo.png"
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    return dict(net=str(net), projection=str(path), image=str(image), ws=p.ws)


def projected_context(G, rec, saved):
    ctx = fake_context(G, rec)
    ctx.state.latent = S.LatentSection(projection=saved["projection"],
                                       projection_sha256=proj.file_sha256(saved["projection"]), trunc_psi=1.0)
    return ctx


def test_invert_panel_writes_only_its_form(gui, G, saved):  # noqa: F811
    panel = InvertPanel()
    rec = Recorder()
    ctx = projected_context(G, rec, saved)
    panel.form.image = saved["image"]
    panel.live.step({"phase": "latent", "psnr": 12.0, "loss": 0.3},
                    [np.zeros((128, 128, 3), np.uint8)] * 3)           # a strip arrived
    before, form0 = sections(ctx.state), dataclasses.replace(panel.form)
    height, changed_form = draw_frame(panel, ctx), False
    assert height > 150, "the save rows are missing"
    assert [c[1][0] for c in rec.calls if c[0] == "texture"] == ["invert.target", "invert.current",
                                                                  "invert.difference"]
    for y in range(4, int(height), ROW_STEP):
        for x in COLUMNS:
            for pos, down in (((x, y), None), ((x, y), True), ((x, y), False)):
                gui.add_mouse_pos_event(*pos)
                if down is not None:
                    gui.add_mouse_button_event(0, down)
                draw_frame(panel, ctx)
            assert sections(ctx.state) == before, f"the Invert panel wrote the view state at ({x}, {y})"
            changed_form = changed_form or panel.form != form0
    names = {c[0] for c in rec.calls}
    assert changed_form and names <= {"texture", "start_task", "fail", "message"}, names
    assert "start_task" in names                   # the invert or save buttons were reached


def test_form_checks_name_the_field(tmp_path, G, saved, monkeypatch):
    rec = Recorder()
    ctx = fake_context(G, rec)
    panel = InvertPanel()
    for change, word in ((dict(image=""), "choose an image"), (dict(image=str(tmp_path / "no.png")), "no such file"),
                         (dict(camera="dataset", dataset_label="x.json:a.png"), "dataset.json:NAME"),
                         (dict(steps=0), "steps")):
        panel.form = dataclasses.replace(InvertForm(image=saved["image"]), **change)
        assert panel.start(ctx) is None and word in rec.calls[-1][1][0], (change, rec.calls[-1])
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    panel.form = InvertForm(image=saved["image"], camera="auto")
    assert panel.start(ctx) is None and "requirements-faces.txt" in rec.calls[-1][1][0]
    monkeypatch.undo()
    ctx.info = dataclasses.replace(ctx.info, path=saved["net"])
    panel.form = InvertForm(image=saved["image"], camera="current", steps=3)
    ctx.settings.out_dir = str(tmp_path)
    panel.start(ctx)
    assert rec.calls[-1][0] == "start_task" and rec.calls[-1][1][:2] == ("invert", "inversion")
    job = panel.job(ctx, "x.safetensors")
    assert job.view["yaw"] == ctx.state.camera.yaw and job.network == saved["net"] and job.steps == 3


def test_latent_section_references_a_projection(G, saved):
    sha = proj.file_sha256(saved["projection"])
    st = S.ViewerState(projection=saved["projection"], projection_sha256=sha, trunc_psi=1.0)
    assert S.ViewerState.from_json(st.to_json()) == st
    ws = S.compute_ws(G, st)
    assert torch.equal(ws, saved["ws"])                                 # psi 1: the projection itself
    half = S.compute_ws(G, st.copy(trunc_psi=0.5))
    w_avg = G.backbone.mapping.w_avg
    assert torch.allclose(half, w_avg.lerp(saved["ws"], 0.5), atol=1e-6)
    mixed = S.compute_ws(G, st.copy(mix_enabled=True, mix_seed=3, mix_layers=[0, 1]))
    seed3 = S.compute_ws(G, S.ViewerState(seed=3, trunc_psi=1.0))
    assert torch.equal(mixed[:, :2], seed3[:, :2]) and torch.equal(mixed[:, 2:], saved["ws"][:, 2:])
    assert S.projection_ref(saved["projection"]) == (saved["projection"], sha)
    assert S.projection_ref(saved["net"]) is None
    # the render worker's ws cache keys on the latent section: a projection is not a seed
    assert st.latent.key() != S.ViewerState(trunc_psi=1.0).latent.key()
    # bad references are one line naming the field
    for bad, word in ((dict(projection_sha256="0" * 63), "64 lowercase hex"),
                      (dict(projection_sha256=None), "go together"),
                      (dict(projection=5), "latent.projection")):
        with pytest.raises(S.StateError, match=word):
            S.ViewerState.from_dict(dict(json.loads(st.to_json()), latent=dict(st.to_dict()["latent"], **bad)))
    with pytest.raises(S.StateError, match="has changed"):
        S.compute_ws(G, st.copy(projection_sha256="0" * 64))
    with pytest.raises(S.StateError, match="no such file"):
        S.compute_ws(G, st.copy(projection=saved["projection"] + ".gone"))
    # a state saved before projections existed still loads (no projection)
    old = st.to_dict()
    for key in ("projection", "projection_sha256"):
        del old["latent"][key]
    assert S.ViewerState.from_dict(old).latent.projection is None
    assert S.ViewerState.from_dict({"version": 1, "seed": 4}).latent.projection is None
