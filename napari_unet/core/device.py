"""Which device to run on, and how to use it well."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from napari_unet.core.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "mps"`` into an available :class:`torch.device`.

    ``"auto"`` prefers CUDA, then Apple MPS, then the CPU.

    Raises
    ------
    InputError
        If an explicitly requested accelerator is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' was requested but Apple MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """Human-readable device name, e.g. ``"cuda (NVIDIA H100)"`` or ``"cpu (2 threads)"``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """Return the reduced precision to autocast to, or ``None`` for plain fp32.

    Only CUDA gets one: bf16 where the GPU supports it, else fp16. On the CPU bf16
    convolutions are orders of magnitude slower than fp32 on common hardware.
    """
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``, or do nothing when ``dtype`` is ``None``."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def set_threads(num_threads: int | None) -> None:
    """Set torch's CPU thread count; ``None`` leaves torch's default alone."""
    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
