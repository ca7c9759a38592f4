"""Output files: the one atomic writer and the overwrite rule every command that writes follows.

- `AtomicOutput` / `atomic_write`: the output is made under a hidden temporary name in the
  destination folder (`.NAME.XXXXXXXX.tmp`) and renamed over the final name only when complete;
  any failure or Ctrl-C removes the temporary file or folder, and a failure to clean up never
  hides the real error. OS errors (read-only folder, full disk, ...) and safetensors' write errors
  become `WriteFailed`, one line naming the path.
- `check_replace`: a writer may replace only what it recognisably wrote itself, or an empty
  folder; anything else is refused (`OutputRefused`) unless the user asked to overwrite, and an
  output that is, or contains, one of the command's inputs is refused even then.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

PathLike = Union[str, os.PathLike]
SIGNATURE = b"eg3d toolkit"         # every file our exports write carries it near its start
SIGNATURE_BYTES = 1 << 20          # how far from either end of a file `has_signature` looks


class OutputError(Exception):
    """A problem with an output path; the message names the path."""


class OutputRefused(OutputError, ValueError):
    """The destination holds something this tool did not write (or an input): a usage error."""


class WriteFailed(OutputError, OSError):
    """Writing failed (read-only folder, disk full, ...): a runtime error."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _is_write_error(exc: BaseException) -> bool:
    """OS errors and the safetensors writer's own error type (a full disk shows up as one)."""
    return isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError"


def _discard(path: Optional[str]) -> None:
    """Remove a temporary file or folder; never raises (the caller is already failing)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)


class AtomicOutput:
    """A temporary file (or folder, directory=True) next to `path`, renamed onto it by `commit`.

    Use as a context manager (commit on a clean exit, abort on any exception) or call
    `commit()` / `abort()` yourself (writers that stream frames). An existing folder at `path`
    is replaced only by a folder (moved aside, then deleted once the new one is in place); the
    caller decides beforehand, with `check_replace`, whether it may be replaced at all.
    """

    def __init__(self, path: PathLike, directory: bool = False):
        self.path = Path(path)
        self.directory = directory
        if self.path.is_dir() and not directory:
            raise OutputRefused(f"{self.path}: is a folder; give a file name")
        if self.path.exists() and not self.path.is_dir() and directory:
            raise OutputRefused(f"{self.path}: exists and is not a folder")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            prefix, suffix = f".{self.path.name}.", ".tmp"
            if directory:
                self.tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
            else:
                fd, self.tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
                os.close(fd)
        except OSError as exc:        # nothing was created, so there is nothing to clean up
            raise WriteFailed(f"{self.path}: cannot write in {parent} ({_reason(exc)})") from None
        self.done = False

    def commit(self) -> Path:
        if self.done:
            return self.path
        old = None
        try:
            os.chmod(self.tmp, (0o777 if self.directory else 0o666) & ~_umask())   # mkstemp: 0600
            if self.directory and self.path.is_dir():
                old = tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old.tmp", dir=self.path.parent)
                os.rmdir(old)
                os.replace(self.path, old)
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            if old is not None and not self.path.exists():
                with contextlib.suppress(OSError):
                    os.replace(old, self.path)           # put the previous output back
                old = None
            self.abort()
            if _is_write_error(exc):
                raise WriteFailed(f"{self.path}: could not write ({_reason(exc)})") from None
            raise
        self.done = True
        _discard(old)
        return self.path

    def abort(self) -> None:
        """Delete the temporary output (safe to call more than once)."""
        self.done = True
        _discard(self.tmp)

    def __enter__(self) -> "AtomicOutput":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
            return False
        self.abort()
        if exc is not None and _is_write_error(exc) and not isinstance(exc, OutputError):
            raise WriteFailed(f"{self.path}: could not write ({_reason(exc)})") from None
        return False


def atomic_write(path: PathLike, write_fn: Callable[[str], object], directory: bool = False) -> Path:
    """Call write_fn(temp_path) and rename the result onto path; no partial file ever appears."""
    with AtomicOutput(path, directory=directory) as out:
        write_fn(out.tmp)
    return out.path


# ------------------------------------------------------------------------------------------------
# The overwrite rule


def _inside(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def has_signature(path: PathLike, marker: bytes, limit: int = SIGNATURE_BYTES) -> bool:
    """Whether a regular file holds `marker` within its first or last `limit` bytes (our writers put
    a signature near the start of everything they write: PNG text, PLY/OBJ comments, MRC labels;
    a video's metadata may sit at its end)."""
    try:
        with open(path, "rb") as f:
            if marker in f.read(limit):
                return True
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            return marker in f.read(limit)
    except OSError:
        return False


def check_replace(path: PathLike, overwrite: bool, recognise: Callable[[Path], bool],
                  protect: Iterable[PathLike] = (), what: str = "output") -> None:
    """Raise OutputRefused unless writing `path` is allowed: it does not exist, is an empty folder,
    is something `recognise` says this tool wrote, or `overwrite` is set. A path that is or
    contains one of `protect` (the command's inputs) is refused even with overwrite."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    for source in protect:
        if source is not None and os.path.exists(source) and _inside(Path(source), path):
            raise OutputRefused(f"{path}: the {what} would replace the input {source}; choose another destination")
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    if overwrite or recognise(path):
        return
    kind = "folder" if path.is_dir() else "file"
    raise OutputRefused(f"{path}: a {kind} that this tool did not write is already there; pass --overwrite "
                        f"to replace it, or choose another {what} path")
