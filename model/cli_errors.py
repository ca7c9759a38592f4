"""How every command line tool reports a failure: one line `error: ...` and an exit code.

Exit codes: 2 for a usage error (bad option, bad or missing input file, an output that may not
be replaced: the ValueError family and FileNotFoundError), 1 for a runtime failure (writing
failed, ffmpeg failed, out of memory, anything unexpected), 130 for Ctrl-C. `--debug` re-raises
so the traceback shows.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Optional

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130
_USAGE_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, (ValueError, _USAGE_OS_ERRORS)):
        return USAGE
    return RUNTIME


def message(exc: BaseException) -> str:
    """One line: the project's errors already name the file or option; others get their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (ValueError, OSError, RuntimeError, MemoryError)):
        if isinstance(exc, MemoryError):
            return f"out of memory ({text}); try a smaller size or resolution"
        return text
    return f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)"


def run_guarded(body: Callable[[], int], debug: bool = False,
                interrupted: str = "interrupted; nothing was written") -> int:
    """Run a command's body; turn any exception into `error: ...` on stderr and an exit code."""
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{interrupted}", file=sys.stderr)
        return INTERRUPTED
    except SystemExit:
        raise
    except Exception as exc:                 # noqa: BLE001 - the boundary that reports everything
        if debug:
            raise
        print(f"error: {message(exc)}", file=sys.stderr)
        return exit_code(exc)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: `error: argument --trunc: ... (see PROG --help)`."""

    def error(self, message: str):
        self.exit(USAGE, f"error: {message} (see {self.prog} --help)\n")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


# ------------------------------------------------------------------------------------------------
# argparse types that refuse non-finite and out-of-range numbers at the boundary


def finite_float(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False):
    """An argparse type: a finite float in [lo, hi] ((lo, hi] with lo_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        _check_range(value, lo, hi, lo_open)
        return value
    return parse


def bounded_int(lo: Optional[int] = None, hi: Optional[int] = None):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        _check_range(value, lo, hi, False)
        return value
    return parse


def _check_range(value, lo, hi, lo_open) -> None:
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise argparse.ArgumentTypeError(f"must be <= {hi:g}, got {value:g}")
