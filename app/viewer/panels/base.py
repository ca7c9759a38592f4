"""The panel contract: `title`, `available(model)`, `draw(ctx)`, and the one state section a
panel writes (`section`; None = none). Everything else goes through `ctx.actions`."""
from __future__ import annotations

from typing import Optional

from imgui_bundle import imgui

ERROR_COLOUR = (1.0, 0.4, 0.4, 1.0)
WARN_COLOUR = (1.0, 0.8, 0.3, 1.0)


class Panel:
    title: str = ""
    section: Optional[str] = None       # 'latent' | 'camera' | 'conditioning' | 'render' | None
    default_open: bool = False

    def available(self, model) -> bool:
        """Whether the panel is shown for this model (None = no model open)."""
        return True

    def draw(self, ctx) -> None:
        raise NotImplementedError


def needs_latent(model) -> bool:
    """For the latent panels: a generator (or no model yet), not a fitted scene."""
    return model is None or bool(model.has_latent)


def help_marker(text: str) -> None:
    imgui.same_line()
    imgui.text_disabled("(?)")
    if imgui.is_item_hovered():
        imgui.set_tooltip(text)


def text_error(text: str) -> None:
    imgui.text_colored(imgui.ImVec4(*ERROR_COLOUR), text)


READY = object()      # export_gate's "go ahead"


def export_gate(ctx, form):
    """Before an export panel starts its task: `READY` when it may start; otherwise what its
    `start` returns — the export already running, or None after reporting why not (no model, a
    bad form field or view state)."""
    if ctx.model is None:
        ctx.actions.fail("no model loaded")
        return None
    running = ctx.tasks.get("export")
    if running is not None and running.running:
        return running
    try:
        form.validate()
        ctx.state.validate()
    except ValueError as exc:
        ctx.actions.fail(str(exc))
        return None
    return READY


def task_progress(task) -> None:
    """A running task's bar and cancel button."""
    label = f"{task.name}: {task.done}/{task.total} {task.unit}" if task.total else f"{task.name}..."
    imgui.progress_bar(task.fraction if task.total else -1.0 * imgui.get_time(), imgui.ImVec2(-1, 0), label)
    if imgui.button(f"cancel {task.name}"):
        task.cancel.set()
