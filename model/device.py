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
