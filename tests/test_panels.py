"""Each side panel, alone, in a headless Dear ImGui frame against a fake `ViewerContext`.

The pointer clicks and drags over every row of the panel (sliders, checkboxes, combos, buttons).
A panel may change only its own section of the view state; everything else goes through the
context's actions, which are recorded here instead of run. The numbers it leaves must validate.
No window, no GL: this runs without Xvfb.
"""
import dataclasses

import pytest
import torch

import model
from app import state as S
from app.viewer.context import Actions, ModelInfo, ViewerContext, ViewerSettings
from app.viewer.panels import PerfPanel, make_panels
from app.viewer.tasks import TaskBoard

imgui_bundle = pytest.importorskip("imgui_bundle")
from imgui_bundle import imgui, implot  # noqa: E402

PANEL_SIZE = (380, 1400)
ROW_STEP = 11
COLUMNS = (30, 110, 190, 270, 300, 345)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return model.build_generator(model.presets.generator_config("tiny")).eval().requires_grad_(False)


@pytest.fixture()
def gui():
    imgui.create_context()
    implot.create_context()
    io = imgui.get_io()
    io.set_ini_filename(None)
    io.display_size = imgui.ImVec2(*PANEL_SIZE)
    io.backend_flags |= imgui.BackendFlags_.renderer_has_textures
    io.delta_time = 1 / 60
    yield io
    implot.destroy_context()
    imgui.destroy_context()


class Recorder:
    def __init__(self):
        self.calls = []

    def actions(self) -> Actions:
        def make(name):
            def record(*args, **kwargs):
                self.calls.append((name, args, kwargs))
                return "" if name == "get_clipboard" else None
            return record
        return Actions(**{name: make(name) for name in Actions.names()})


def fake_context(G, recorder):
    state = S.ViewerState(seed=5, yaw=10.0, cond_mode="custom", mix_enabled=True, mix_layers=[1, 2],
                          interp_enabled=True, layer="decoder")
    ctx = ViewerContext(state=state, settings=ViewerSettings(split_ab=True, sensitivity=True),
                        actions=recorder.actions(), tasks=TaskBoard())
    ctx.model, ctx.info = G, ModelInfo.of(G, "tiny.safetensors")
    ctx.sensitivity = {"yaw": 1.0, "pitch": 2.0, "camera": 3.0, "delta_deg": 10.0}
    ctx.frame = inspection_frame(G, state)
    return ctx


_FRAMES = {}


def inspection_frame(G, state):
    """A frame as the render process sends it with the inspection panels open: the layer table
    and a ray trace (computed once per module)."""
    from app.renderer_worker import Frame, RenderOptions
    if id(G) not in _FRAMES:
        from model.introspect import list_layers
        small = state.copy(neural_res=16, depth_mult=0.25, importance_mult=0.25, ray_pixel=[0.5, 0.5])
        with torch.no_grad():
            ws = S.compute_ws(G, small)
            table = [(i.name, i.stage, i.shape, i.dtype)
                     for i in list_layers(G, ws, S.camera_label(small, G), **S.render_settings(G, small))]
            _FRAMES[id(G)] = (table, S.trace_ray(G, small))
    table, trace = _FRAMES[id(G)]
    return Frame(serial=1, state=state.copy(ray_pixel=[0.5, 0.5]), options=RenderOptions(layers=True, rays=True),
                 layer_table=table, trace=trace)


def draw_frame(panel, ctx):
    imgui.new_frame()
    imgui.set_next_window_pos(imgui.ImVec2(0, 0))
    imgui.set_next_window_size(imgui.ImVec2(*PANEL_SIZE))
    imgui.begin("panel", None, imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize)
    imgui.push_item_width(-130)
    panel.draw(ctx)
    imgui.pop_item_width()
    height = imgui.get_cursor_pos_y()
    imgui.end()
    imgui.render()
    return height


def sections(state):
    return {name: dataclasses.replace(getattr(state, name)) for name in S.ViewerState.SECTIONS}


@pytest.mark.parametrize("index", range(len(make_panels())),
                         ids=[type(p).__name__ for p in make_panels()])
def test_panel_writes_only_its_own_section(gui, G, index):
    panel = make_panels(["/models/a.safetensors"])[index]
    rec = Recorder()
    ctx = fake_context(G, rec)
    if panel.section is not None:
        ctx.state.render.type = "depth" if panel.section == "render" else "final"
    before = sections(ctx.state)
    form0 = dataclasses.replace(panel.form) if hasattr(panel, "form") else None
    settings0 = dataclasses.replace(ctx.settings)
    height = draw_frame(panel, ctx)
    assert height > 40, "the panel drew nothing"
    reached = False                    # some click changed the panel's section, form or settings, or acted
    for y in range(4, int(height), ROW_STEP):
        for x in COLUMNS:
            for pos, down in (((x, y), None), ((x, y), True), ((x, y), False),                 # a click
                              ((x, y), True), ((x + 25, y + 2), None), ((x + 25, y + 2), False)):   # a drag
                gui.add_mouse_pos_event(*pos)
                if down is not None:
                    gui.add_mouse_button_event(0, down)
                draw_frame(panel, ctx)
            after = sections(ctx.state)
            for name in S.ViewerState.SECTIONS:
                if name != panel.section:
                    assert after[name] == before[name], f"{panel.title} wrote {name} at ({x}, {y})"
            reached = reached or bool(rec.calls) or ctx.settings != settings0 or (
                form0 is not None and panel.form != form0) or (
                panel.section is not None and after[panel.section] != before[panel.section])
            ctx.state.validate()                       # what a panel leaves is always a valid state
    if isinstance(panel, PerfPanel):
        assert not reached, "the performance panel only shows numbers"
    else:
        assert reached, f"the clicks never reached a widget of {panel.title}"
    if panel.section is not None:
        assert sections(ctx.state)[panel.section] != before[panel.section], f"{panel.title} never wrote its section"


def test_panel_availability_follows_the_model(G):
    """Latent, mixing and conditioning panels are for models with a latent, not fitted scenes."""
    class Scene:
        has_latent = False
    titles = {p.title for p in make_panels() if p.available(Scene())}
    assert "Latent" not in titles and "Style mixing" not in titles and "Conditioning pose" not in titles
    assert {"Camera", "Render", "Mesh export", "Turntable export", "Model"} <= titles
    assert all(p.available(G) and p.available(None) for p in make_panels())
    assert {p.section for p in make_panels()} == {None, "latent", "camera", "conditioning", "render", "layers",
                                                  "planes", "ray"}
    assert "Layers" not in titles and "Tri-planes" not in titles and "Ray inspector" not in titles


def test_export_panels_validate_their_forms_and_start_one_task(gui, G):
    """A bad form field is refused with its name; a good one starts the 'export' task."""
    panels = {type(p).__name__: p for p in make_panels()}
    rec = Recorder()
    ctx = fake_context(G, rec)
    tt = panels["TurntablePanel"]
    tt.form.pitch = float("nan")
    assert tt.start(ctx) is None
    assert rec.calls[-1][0] == "fail" and "pitch" in rec.calls[-1][1][0]
    tt.form.pitch = 5.0
    tt.start(ctx, "/tmp/x.mp4")
    assert rec.calls[-1][0] == "start_task" and rec.calls[-1][1][:2] == ("export", "turntable")
    mesh = panels["MeshPanel"]
    mesh.form.level = float("inf")
    assert mesh.start(ctx) is None and "level" in rec.calls[-1][1][0]
    mesh.form.level, mesh.form.ply = None, False
    assert mesh.start(ctx) is None and "format" in rec.calls[-1][1][0]
    mesh.form.ply = True
    ctx.state.latent.interp_t = 7.0                   # a bad state is refused too, naming the field
    assert mesh.start(ctx) is None and "latent.interp_t" in rec.calls[-1][1][0]
