"""Counted FLOPs (``torch.utils.flop_counter``) and the hardware's nominal peak."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# Dense (no sparsity) bf16/fp16 tensor-core peaks, from the vendors' data sheets.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,  # the lower variant when the name does not say which
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "T4": 65e12,
}


def training_step_flops(network: torch.nn.Module, batch: int, patch: int) -> float:
    """FLOPs of one forward + backward pass on a ``(batch, C, patch, patch[, patch])`` batch."""
    config = network.config
    shape = (batch, config.in_channels, *(patch,) * config.spatial_dims)
    device = next(network.parameters()).device
    x = torch.randn(shape, device=device)
    y = torch.zeros((batch, *shape[2:]), dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(network(x), y).backward()
    network.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def forward_flops(network: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass on an input of ``shape`` (batch and channels included)."""
    device = next(network.parameters()).device
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.randn(shape, device=device))
    return float(counter.get_total_flops())


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """The device's nominal peak FLOP/s and how it was worked out (``None`` if unknown).

    CPU: FP32, threads used x base clock x FLOPs per cycle per core (32 with two 256-bit
    FMA units, 64 with two 512-bit ones); turbo clocks are ignored. GPU: dense bf16
    tensor-core peak from a table.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16.items():
            if key in name:
                return peak, f"{name}, dense bf16 peak {peak / 1e12:.0f} TFLOP/s (data sheet)"
        return None, f"{name}: peak unknown"
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "CPU peak unknown"
    mhz = max(float(line.split(":")[1]) for line in info.splitlines()
              if line.startswith("cpu MHz"))
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    family = next((int(line.split(":")[1]) for line in info.splitlines()
                   if line.startswith("cpu family")), 0)
    amd = "AuthenticAMD" in info
    if " avx512f" in flags and not (amd and family < 26):
        per_cycle = 64  # two 512-bit FMA units (Intel server cores, AMD Zen 5)
    elif " fma" in flags and " avx2" in flags:
        per_cycle = 32  # two 256-bit FMA units (AMD Zen 2-4 run AVX-512 on these too)
    else:
        per_cycle = 8
    threads = torch.get_num_threads()
    peak = threads * mhz * 1e6 * per_cycle
    return peak, (f"FP32 nominal: {threads} cores x {mhz / 1000:.2f} GHz x {per_cycle} "
                  f"FLOP/cycle = {peak / 1e9:.0f} GFLOP/s")
