"""One kind of background job for everything slow but the renders: opening a model, reading a
dataset's cameras, exporting a turntable or a mesh.

A `BackgroundTask` runs `fn(progress, cancel)` in a daemon thread; `progress(done, total)` feeds
the panel's bar, `cancel` is a `threading.Event` the job checks. The UI thread calls
`TaskBoard.poll()` once a frame, which hands each finished task to its `on_finish` (on the UI
thread, so handlers may touch the state and GL). One task per slot: a new model load replaces the
pending one; a second export waits for the first.
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional

from app.export import ExportCancelled

ProgressFn = Callable[[int, int], None]
TaskFn = Callable[[ProgressFn, threading.Event], Any]


class BackgroundTask:
    """A job with progress, cancel and an outcome: `result`, or `error` ('cancelled' when the job
    stopped on `cancel`)."""

    def __init__(self, name: str, fn: TaskFn, *, unit: str = "",
                 on_finish: Optional[Callable[["BackgroundTask"], None]] = None,
                 wake: Optional[Callable[[], None]] = None):
        self.name = name
        self.unit = unit
        self.done = 0
        self.total = 0
        self.result: Any = None
        self.error: Optional[str] = None
        self.finished = False
        self.reported = False
        self.cancel = threading.Event()
        self.started = time.perf_counter()
        self.seconds = 0.0
        self.on_finish = on_finish
        self._wake = wake
        self._thread = threading.Thread(target=self._run, args=(fn,), name=f"eg3d-{name}", daemon=True)
        self._thread.start()

    def _run(self, fn: TaskFn) -> None:
        try:
            self.result = fn(self._progress, self.cancel)
        except ExportCancelled:
            self.error = "cancelled"
        except FileNotFoundError as exc:
            self.error = f"file not found: {exc.filename or exc}"
        except BaseException as exc:  # noqa: BLE001 - any failure becomes a message in the UI
            self.error = "cancelled" if self.cancel.is_set() else f"{type(exc).__name__}: {exc}"
            if not self.cancel.is_set() and not isinstance(exc, (ValueError, OSError)):
                traceback.print_exc()              # a bug, not a bad file: keep the traceback
        self.seconds = time.perf_counter() - self.started
        self.finished = True
        if self._wake is not None:
            self._wake()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def running(self) -> bool:
        return not self.finished


class TaskBoard:
    """The viewer's tasks by slot ('model', 'dataset', 'export')."""

    def __init__(self, wake: Optional[Callable[[], None]] = None):
        self._wake = wake
        self.tasks: Dict[str, BackgroundTask] = {}

    def start(self, slot: str, name: str, fn: TaskFn, on_finish=None, unit: str = "") -> BackgroundTask:
        old = self.tasks.get(slot)
        if old is not None and old.running:
            old.cancel.set()               # its outcome is dropped: the slot has a newer task
            old.on_finish = None
        task = BackgroundTask(name, fn, unit=unit, on_finish=on_finish, wake=self._wake)
        self.tasks[slot] = task
        return task

    def get(self, slot: str) -> Optional[BackgroundTask]:
        return self.tasks.get(slot)

    def running(self, slot: str) -> bool:
        """The slot's task has not been handed to its handler yet."""
        task = self.tasks.get(slot)
        return task is not None and not task.reported

    @property
    def busy(self) -> bool:
        return any(not t.reported for t in self.tasks.values())

    def poll(self) -> None:
        """Hand finished tasks to their handlers (UI thread)."""
        for task in list(self.tasks.values()):
            if task.finished and not task.reported:
                task.reported = True
                if task.on_finish is not None:
                    task.on_finish(task)

    def cancel_all(self) -> None:
        for task in self.tasks.values():
            task.cancel.set()
