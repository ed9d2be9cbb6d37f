"""What predicting a large 2D image in blocks costs, against predicting it whole.

    python benchmarks/bench_blocks.py [--size 2048] [--device cpu] [--write docs/benchmarks.md]

The widget predicts a 2D model's large planes block by block: a paused run redraws its
overlay with test-time augmentation one block at a time (new strokes wait for one block
at most), and the pass after Stop fills the image from the view outwards. A block is one
tile's core (``core.inference.one_window_blocks``), so with its halo it is one window.
This script times, on one image, the whole-image prediction, blocks of the tile's size
(what session 17 used: four windows each), and blocks of one window, each without and
with test-time augmentation, and checks that the blocks put together equal the whole.
Untrained weights: speed does not depend on them. Since session 20, ``predict`` with
test-time augmentation itself goes by one-window blocks (memory), so from then on the
"whole image" row with augmentation measures that; the session 18 figures in the docs
are the one-piece prediction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.config import get_preset
from napari_unet.core.device import resolve_device
from napari_unet.core.inference import one_window_blocks, predict
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.unet import build_unet

sys.path.insert(0, str(Path(__file__).parent))
from _docs import device_suffix, publish  # noqa: E402
from bench_core import machine  # noqa: E402


def grid(size: int, side: int) -> list[tuple[slice, slice]]:
    """The blocks of a ``size`` x ``size`` image, ``side`` pixels square, in raster order."""
    return [(slice(y, min(y + side, size)), slice(x, min(x + side, size)))
            for y in range(0, size, side) for x in range(0, size, side)]


def time_blocks(model: TrainedModel, image: np.ndarray, tiles, side: int, tta: bool,
                whole: np.ndarray) -> dict:
    """Predict ``image`` block by block; total and per-block seconds, and agreement."""
    out = np.zeros_like(whole)
    seconds = []
    for block in grid(image.shape[0], side):
        t0 = time.perf_counter()
        out[block] = predict(model, image, tiles, region=block,
                             test_time_augmentation=tta).class_map
        seconds.append(time.perf_counter() - t0)
    return {"total": sum(seconds), "count": len(seconds),
            "median": statistics.median(seconds), "max": max(seconds),
            "equal": bool((out == whole).all())}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048, help="side of the square image")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = get_preset("auto", device.type)
    network = build_unet(preset.model).to(device)
    model = TrainedModel(network, Normalization(low=(0.0,), high=(255.0,)),
                         ("background", "object"), {})
    tiles = preset.tile
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size), np.uint8)
    predict(model, image[:64, :64], tiles)  # warm-up: one-off allocations out of the timing
    core, _ = one_window_blocks(model, tiles, image.shape)
    rows = ["| how the image is cut | plain: total | plain: one block (median, max) | "
            "test-time augmentation: total | test-time augmentation: one block (median, max) "
            "| blocks equal the whole |", "|---|---|---|---|---|---|"]
    cells: dict[str, list[str]] = {}
    equal: dict[str, bool] = {}
    for tta in (False, True):
        t0 = time.perf_counter()
        whole = predict(model, image, tiles, test_time_augmentation=tta).class_map
        seconds = time.perf_counter() - t0
        cells.setdefault("whole image, the tiler's own windows", []).extend(
            [f"{seconds:.1f} s", ""])
        for label, side in ((f"tile-sized blocks, {tiles.tile_size} px", tiles.tile_size),
                            (f"one-window blocks, {core} px", core)):
            r = time_blocks(model, image, tiles, side, tta, whole)
            label = f"{label} ({r['count']})"
            cells.setdefault(label, []).extend(
                [f"{r['total']:.1f} s", f"{r['median']:.2f} s, {r['max']:.2f} s"])
            equal[label] = equal.get(label, True) and r["equal"]
            print(label, "with" if tta else "without", "test-time augmentation:", r,
                  flush=True)
    for label, values in cells.items():
        same = "" if label not in equal else ("yes" if equal[label] else "**no**")
        rows.append(f"| {label} | {' | '.join(values)} | {same} |")
    text = "\n".join([
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with `python "
        f"benchmarks/bench_blocks.py --size {args.size} --device {args.device}` (preset "
        f"{preset.name}, a {args.size} x {args.size} image, untrained weights).", "", *rows])
    publish(text, args.write, "bench_blocks" + device_suffix(device.type))
    return 0 if all(equal.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
