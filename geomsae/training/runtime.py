"""Where and how torch runs: the device (checked before anything is built), autocast, deterministic algorithms."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def autocast(mode: str, device: torch.device) -> Any:
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device == {name!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'auto')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device == {name!r} but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device == {name!r} but there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device == {name!r} but MPS is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device == {name!r}: only 'cpu', 'cuda' and 'mps' devices are supported")
    return dev


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes free now on ``device``: Linux MemAvailable for the CPU, the CUDA driver's free memory for a GPU;
    None where it cannot be read (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def training_bytes(d_in: int, d_sae: int, batch_size: int, members: int = 1) -> int:
    """A lower bound on the memory that training ``members`` SAEs of (d_in, d_sae) at ``batch_size`` takes (float32):
    encoder and decoder weights with their gradients and two Adam moments (4 × 2·d_in·d_sae), and the step's
    (batch, d_sae) pre-activations, codes and their gradients (4 × batch·d_sae), per member."""
    return 4 * members * (4 * 2 * d_in * d_sae + 4 * batch_size * d_sae)


def check_fits(d_in: int, d_sae: int, batch_size: int, device: torch.device | str, members: int = 1,
               available: int | None = None) -> None:
    """ValueError, before anything is allocated, when :func:`training_bytes` exceeds the memory free on ``device``
    (the allocator would fail later with a traceback, or the machine swap)."""
    need = training_bytes(d_in, d_sae, batch_size, members)
    free = available_memory(device) if available is None else available
    if free is not None and need > free:
        raise ValueError(f"training {members} SAE(s) of d_in {d_in} × d_sae {d_sae} at batch_size {batch_size} needs "
                         f"at least {need / 1e9:.1f} GB, and {free / 1e9:.1f} GB are free on {device}: lower d_sae "
                         "or batch_size")
