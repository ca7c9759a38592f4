"""Devices: naming one from the command line / UI, and finding the one a module lives on."""
from __future__ import annotations

from typing import Optional

import torch


class DeviceError(ValueError):
    """A device name that does not exist here; the message names it and what to use instead."""


def resolve_device(name: str = "auto", index: Optional[int] = None) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N' -> torch.device.

    `index` picks the CUDA device for a bare 'cuda'/'auto' (a DDP rank), modulo the count.
    Raises DeviceError for an unknown name or when CUDA is asked for but absent.
    """
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available (use cpu)")
    if dev.index is None and index is not None:
        return torch.device("cuda", int(index) % torch.cuda.device_count())
    return dev


def module_device(module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module without tensors."""
    for tensors in (getattr(module, "parameters", None), getattr(module, "buffers", None)):
        if tensors is None:
            continue
        for t in tensors():
            return t.device
    return torch.device("cpu")


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2 ** 31 - 1      # bytes of free heap top kept rather than returned (mallopt takes an int)


def reuse_host_memory() -> bool:
    """Serve large CPU tensors from memory freed by the last frame instead of fresh pages.

    glibc maps every block above 32 MB (a 512² x 128 feature map is 134 MB) with its own mmap
    and unmaps it on free, so the next frame's tensor of the same size page-faults through all
    of its pages again: ~25 ms per 134 MB, about 1 s of a 512² super-resolution pass. Here big
    blocks come from the heap and freed memory stays there for the next frame (the process
    keeps its peak working set: +0.5 GB at ffhq512). Process-wide, so only for processes that
    exist to render (the viewer's render and inversion workers, a command-line export), whose
    frames repeat the same sizes, never for one that merely imports us. glibc (Linux) only;
    returns whether it applied.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    except (OSError, AttributeError):
        return False
