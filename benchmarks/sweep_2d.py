"""The 2D model's first hundreds of steps on DSB2018, step-matched (a diagnosis sweep)

    python benchmarks/sweep_2d.py [--seeds 0 1 2] [--objects 3 10 20]
        [--checkpoints 50 100 300 600] [--grad-clip-norm 1.0|none] [--threads 1]

Not in ``run_all.sh`` (about 14 minutes per setting on one CPU thread). On the strokes of
``bench_effort.py``'s 2D dataset (``N`` objects painted in the left half, scored on the
right half) it trains the CPU preset open-ended, as the widget does, and prints the
foreground IoU of the model the overlay would show (the weight average) at fixed step
counts. Steps, not seconds, so a busy machine changes the time, not the result: two
settings can run side by side, one thread each.

It is how the early collapse was found and measured: some seeds predicted only
background for the first ~100 steps (an empty overlay where the user expects the first
result), with the loss climbing back above ln 2 after warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.config import get_preset
from napari_unet.core.inference import predict
from napari_unet.core.training import TrainingRun

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "sample_data"))
from _options import add_grad_clip_option, train_overrides  # noqa: E402
from bench_effort import load  # noqa: E402


def run_one(data, objects: int, seed: int, checkpoints: list[int], train: dict) -> list[float]:
    """IoU on the evaluation half after each checkpoint's number of steps."""
    preset = get_preset("auto", "cpu")
    cfg = replace(preset.train, max_seconds=None, max_steps=None, seed=seed, device="cpu",
                  **train)
    run = TrainingRun(data.image, data.strokes(objects, seed), cfg, axes=data.axes,
                      model_config=preset.model)
    steps, done, scores = run.steps(), 0, []
    for checkpoint in checkpoints:
        while done < checkpoint:
            done = next(steps).step
        class_map = predict(run.model, data.image, preset.tile, axes=data.axes,
                            region=data.evaluate).class_map
        scores.append(round(data.score(class_map)["iou"], 3))
    steps.close()
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--objects", type=int, nargs="+", default=[3, 10, 20])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[50, 100, 300, 600])
    add_grad_clip_option(parser)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = train_overrides(args)
    checkpoints = sorted(args.checkpoints)
    data = load("2d")
    table: dict[int, list[float]] = {step: [] for step in checkpoints}
    for seed in args.seeds:
        for objects in args.objects:
            scores = run_one(data, objects, seed, checkpoints, train)
            print(json.dumps({"seed": seed, "objects": objects,
                              "iou": dict(zip(checkpoints, scores))}), flush=True)
            for step, score in zip(checkpoints, scores):
                table[step].append(score)
    for step, values in table.items():
        print(f"{step:5d} steps: IoU mean {np.mean(values):.3f}, min {np.min(values):.3f} "
              f"over {len(values)} runs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
