"""Open-ended (live) training, step-matched: IoU of the shown model at fixed step counts

    python benchmarks/sweep_live.py [--data 2d|3d|volumes] [--mode 2d|3d]
        [--seeds 0 1 2] [--objects 3 10 20] [--checkpoints 50 100 300 600]
        [--set weight_decay=0.01 ...] [--model-set base_channels=32 ...]
        [--grad-clip-norm 1.0|none] [--max-steps N] [--tta] [--threads 1]

A diagnosis sweep, not in ``run_all.sh``. It trains the CPU preset open-ended, as the
widget does (no step or time bound), and prints the foreground IoU of the model the
overlay would show (the weight average) at fixed step counts. Open-ended runs pause
``settle_steps`` (``TrainConfig``) after the strokes: checkpoints past that score the
paused model; ``--set settle_steps=none`` trains on throughout, as before the pause
existed. ``--max-steps N`` trains a bounded run instead, as the command line does: the
learning rate decays (cosine) over N steps and the run ends there; checkpoints past N
score the final model. ``--tta`` also scores each checkpoint's model with test-time
augmentation (the mean of the 8 flips and rotations, as a full prediction makes it).
Steps, not seconds, so a
busy machine changes the time, not the result: two settings can run side by side, one
thread each. Data:

- ``2d``: ``bench_effort.py``'s DSB2018 strokes (``N`` objects painted in the left half),
  scored on the right half;
- ``3d``: ``bench_effort.py``'s nuclei-stack strokes (``N`` objects on slices 20, 30, 40
  of the top half), scored on the bottom half;
- ``volumes``: ``bench_volumes.py``'s strokes (3 objects and 4 background strokes on each
  of slices 28, 38, 48; ``--objects`` is ignored, the seed changes only the network's
  start and the patches), scored on every unpainted slice.

``--set FIELD=VALUE`` overrides a ``TrainConfig`` field (numbers, ``none``, ``true``,
``false``, or text); ``--model-set`` a ``ModelConfig`` field. How it was used:
``sweep_2d`` (its old name) found the early collapse that gradient clipping cured
(50-600 steps); the long checkpoints (up to thousands of steps) measured how a model
left training on a few strokes drifts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.axes import MODE_CHOICES
from napari_unet.core.config import ModelConfig, get_preset
from napari_unet.core.inference import predict
from napari_unet.core.training import TrainingRun

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "sample_data"))
from _options import add_grad_clip_option, train_overrides  # noqa: E402
from bench_effort import Dataset, load  # noqa: E402
from bench_volumes import PAINTED, unpainted_iou, wheel_path  # noqa: E402
from make_sample3d import paint_slices, read_wheel  # noqa: E402


@dataclass
class Case:
    """An image, the strokes for an effort and seed, and how a class map is scored."""

    image: np.ndarray
    axes: str
    strokes: Callable[[int, int], np.ndarray]  # (objects, seed) -> strokes
    region: tuple[slice, ...] | None  # where to predict (None: everywhere)
    score: Callable[[np.ndarray], float]  # class map of ``region`` -> IoU


def effort_case(data: Dataset) -> Case:
    """``bench_effort``'s strokes on ``data``, scored on its evaluation region."""
    return Case(data.image, data.axes, data.strokes, data.evaluate,
                lambda class_map: data.score(class_map)["iou"])


def case(name: str) -> Case:
    """The data of ``--data``."""
    if name in ("2d", "3d"):
        return effort_case(load(name))
    image, truth = read_wheel(str(wheel_path()))
    strokes = paint_slices(truth, PAINTED, seed=5)
    return Case(image, "ZYX", lambda objects, seed: strokes, None,
                lambda class_map: unpainted_iou(class_map, truth))


def parse_value(text: str) -> Any:
    """``--set`` values: numbers, ``none``, ``true``/``false``, else the text itself."""
    lowered = text.lower()
    if lowered in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[lowered]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# TrainConfig fields run_one sets itself: the run is open-ended, seeded, on the CPU.
RESERVED = ("max_seconds", "max_steps", "seed", "device")


def run_one(data: Case, objects: int, seed: int, checkpoints: list[int], train: dict,
            mode: str | None, model: ModelConfig | None = None,
            max_steps: int | None = None, tta: bool = False) -> list[float | list[float]]:
    """IoU of the averaged model after each checkpoint's number of steps.

    The CPU preset, open-ended (or bounded by ``max_steps``), with ``train`` overriding
    ``TrainConfig`` fields and ``model`` replacing the preset's network shape. With
    ``tta`` each checkpoint gives ``[IoU, IoU with test-time augmentation]``.
    """
    preset = get_preset("auto", "cpu")
    cfg = replace(preset.train, max_seconds=None, max_steps=max_steps, seed=seed,
                  device="cpu", **train)
    run = TrainingRun(data.image, data.strokes(objects, seed), cfg, axes=data.axes,
                      mode=mode, model_config=model or preset.model)
    steps, done, scores = run.steps(), 0, []
    scored_at, score = -1, float("nan")

    def iou(augment: bool) -> float:
        class_map = predict(run.model, data.image, preset.tile, axes=data.axes,
                            region=data.region, test_time_augmentation=augment).class_map
        return round(data.score(class_map), 3)

    for checkpoint in checkpoints:
        while done < checkpoint:
            progress = next(steps, None)
            if progress is None:  # paused or bounded: later checkpoints score this model
                break
            done = progress.step
        if done != scored_at:
            scored_at, score = done, [iou(False), iou(True)] if tta else iou(False)
        scores.append(score)
    steps.close()
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["2d", "3d", "volumes"], default="2d")
    parser.add_argument("--mode", choices=MODE_CHOICES, default=None,
                        help="2D over slices or 3D for stacks (default: the automatic one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--objects", type=int, nargs="+", default=[3, 10, 20])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[50, 100, 300, 600])
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig fields to override")
    parser.add_argument("--model-set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="ModelConfig fields to override (e.g. base_channels=32)")
    add_grad_clip_option(parser)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="a bounded run: the learning rate decays over this many steps, "
                             "as on the command line (default: open-ended)")
    parser.add_argument("--tta", action="store_true",
                        help="also score with test-time augmentation")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = train_overrides(args)
    for item in args.set:
        field, _, value = item.partition("=")
        if field in RESERVED:
            parser.error(f"--set {field}: this script sets it itself ({', '.join(RESERVED)}); "
                         "use --seeds and --checkpoints")
        train[field] = parse_value(value)
    base_model = get_preset("auto", "cpu").model
    model_fields = {}
    for item in args.model_set:
        field, _, value = item.partition("=")
        # A text field keeps its text: norm=none means the "none" norm, not None.
        model_fields[field] = value if isinstance(getattr(base_model, field, None), str) \
            else parse_value(value)
    model = replace(base_model, **model_fields)
    checkpoints = sorted(args.checkpoints)
    data = case(args.data)
    objects_list = [0] if args.data == "volumes" else args.objects
    table: dict[int, list[Any]] = {step: [] for step in checkpoints}
    for seed in args.seeds:
        for objects in objects_list:
            scores = run_one(data, objects, seed, checkpoints, train, args.mode, model,
                             args.max_steps, args.tta)
            print(json.dumps({"data": args.data, "set": args.set + args.model_set,
                              "max_steps": args.max_steps, "tta": args.tta,
                              "seed": seed,
                              "objects": objects, "iou": dict(zip(checkpoints, scores))}),
                  flush=True)
            for step, score in zip(checkpoints, scores):
                table[step].append(score)
    for step, values in table.items():
        columns = np.array(values, float).reshape(len(values), -1).T
        for name, column in zip(("IoU", "IoU with TTA"), columns):
            print(f"{step:5d} steps: {name} mean {column.mean():.3f}, min {column.min():.3f} "
                  f"over {len(column)} runs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
