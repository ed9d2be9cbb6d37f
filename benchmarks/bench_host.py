"""How fast prediction could go with a network that costs nothing: the ceiling of a fast GPU.

    python benchmarks/bench_host.py [--device cpu|cuda] [--preset gpu] [--repeats 3]
        [--write docs/benchmarks.md]

On an H100 the `gpu` preset predicted 22-29 MP/s whatever the tile batch (session 20),
although the network alone runs several times faster there. This script replaces the
network's forward pass by one that returns zeros of the right shape and times
``predict`` on a 4096 x 4096 image (2D model) and a 32 x 1024 x 1024 stack (3D model),
without and with test-time augmentation. What is left is prediction's own work around
the network: normalising and padding the tiles, stacking them into batches, moving
them to the device and back, picking each pixel's class and writing it into the map.
Whatever this prints is an upper bound on prediction throughput on this machine, for
any GPU. Untrained weights; the classes are never looked at.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.config import ModelConfig, get_preset
from napari_unet.core.device import resolve_device
from napari_unet.core.inference import predict
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.unet import build_unet

sys.path.insert(0, str(Path(__file__).parent))
from _docs import device_suffix, publish  # noqa: E402
from bench_core import machine  # noqa: E402


def free_network_model(config: ModelConfig, device: torch.device) -> TrainedModel:
    """A model whose network returns zeros: only the work around it is left to time."""
    network = build_unet(config).to(device).eval()
    classes = config.num_classes

    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0], classes, *x.shape[2:]))

    network.forward = forward  # the module's own attributes (halo, classes) stay
    names = tuple(f"class {i}" for i in range(1, classes + 1))
    return TrainedModel(network, Normalization((0.0,), (255.0,)), names)


def measure(device: torch.device, preset_name: str, repeats: int) -> list[dict]:
    preset = get_preset(preset_name, device.type)
    rng = np.random.default_rng(0)
    cases = [("2D 4096 x 4096", replace_dims(preset.model, 2),
              rng.integers(0, 255, (4096, 4096), dtype=np.uint8), "YX"),
             ("3D 32 x 1024 x 1024", replace_dims(preset.model, 3),
              rng.integers(0, 255, (32, 1024, 1024), dtype=np.uint8), "ZYX")]
    rows = []
    for name, config, image, axes in cases:
        model = free_network_model(config, device)
        for tta in (False, True):
            if tta and config.spatial_dims == 3:
                continue  # the widget never augments a 3D model's prediction
            predict(model, image[:64] if axes == "ZYX" else image[:512, :512],
                    preset.tile, axes=axes, device=device)  # warm-up
            seconds = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                predict(model, image, preset.tile, axes=axes, device=device,
                        test_time_augmentation=tta)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
            best = min(seconds)
            rows.append({"image": name, "tta": tta, "preset": preset.name,
                         "tile": preset.tile.tile_size if config.spatial_dims == 2
                         else "x".join(map(str, preset.tile.tile_size_3d)),
                         "batch": preset.tile.batch_size,
                         "seconds": round(best, 2),
                         "median_s": round(statistics.median(seconds), 2),
                         "mp_s": round(image.size / 1e6 / best, 1)})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def replace_dims(config: ModelConfig, dims: int) -> ModelConfig:
    from dataclasses import replace

    return replace(config, spatial_dims=dims, num_classes=2, in_channels=1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="gpu",
                        help="whose tiles and halo (default gpu: the GPU's ceiling)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU (default 1: one core's worth of work)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = measure(device, args.preset, args.repeats)
    lines = [
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with "
        f"`python benchmarks/bench_host.py --device {device.type} --preset {args.preset} "
        f"--repeats {args.repeats}` (best of {args.repeats}; the network's forward pass "
        "returns zeros).",
        "",
        "| image | test-time augmentation | preset tiles, per pass | seconds | MP/s or Mvox/s |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['image']} | {'yes' if row['tta'] else 'no'} | {row['preset']}: "
                     f"{row['tile']}, {row['batch']} | {row['seconds']} | {row['mp_s']} |")
    publish("\n".join(lines), args.write, f"bench_host{device_suffix(device.type)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
