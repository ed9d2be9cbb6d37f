"""2D-over-slices model on Z stacks: intensity jitter and Z context (step-matched sweep)

    python benchmarks/sweep_stacks.py [--steps 300 700] [--variants off z1 abs z1-abs]
        [--strokes volumes effort] [--mode 2d|3d] [--grad-clip-norm 1.0|none]

A diagnosis sweep, not in ``run_all.sh`` (about 12 minutes per variant on 2 CPU cores).
It trains the default 2D-over-slices model on the nuclei stack for a fixed number of
steps (so a busy machine changes the time, not the result) and prints foreground IoU for
two stroke sets:

- ``volumes``: the strokes of ``bench_volumes.py`` (3 objects and 4 background strokes on
  each of slices 28, 38, 48), seeds 0-2, IoU on every unpainted slice, trained with a step
  budget (cosine learning-rate decay to the last checkpoint);
- ``effort``: ``bench_effort.py``'s 3D strokes (3, 10, 20 objects on slices 20, 30, 40 of
  the top half), seeds 0-1, IoU on the bottom half, trained open-ended (constant rate, as
  the widget trains, but without its pause) and scored at each checkpoint
  (``sweep_live.run_one``).

Variants (see ``VARIANTS``): ``on`` and ``off`` are ``TrainConfig.intensity_jitter``;
``contrast`` (contrast scale only, no brightness shift) and ``mild`` (contrast
exp(±0.15), brightness ±0.03) change the sampler's jitter magnitudes for this process
only. These four use the network as it was before ``ModelConfig.z_context`` and
``absolute_intensity`` existed (neither). ``z1``/``z2`` add 1/2 neighbouring slices on
each side with jitter off, ``z1-on`` with jitter on; ``abs`` adds absolute intensity,
``z1-abs`` both (``z2-abs`` with 2 slices); ``default`` is whatever the defaults are now.

``--grad-clip-norm`` sets ``TrainConfig.grad_clip_norm`` for every variant (default: the
preset's); ``--mode 3d`` trains the 3D model instead (Z context does not apply to it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import napari_unet.core.sampling as sampling
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
from sweep_live import effort_case, run_one  # noqa: E402

# variant -> (TrainConfig.intensity_jitter, contrast jitter, brightness jitter,
#             ModelConfig.z_context, ModelConfig.absolute_intensity); None: the default.
# The first four are the network before Z context and absolute intensity existed.
C, B = sampling.CONTRAST_JITTER, sampling.BRIGHTNESS_JITTER
VARIANTS: dict[str, tuple[str, float, float, int | None, bool | None]] = {
    "on": ("on", C, B, 0, False),
    "off": ("off", C, B, 0, False),
    "contrast": ("on", C, 0.0, 0, False),
    "mild": ("on", 0.15, 0.03, 0, False),
    "z1": ("off", C, B, 1, False),
    "z2": ("off", C, B, 2, False),
    "z1-on": ("on", C, B, 1, False),
    "abs": ("off", C, B, 0, True),
    "z1-abs": ("off", C, B, 1, True),
    "z2-abs": ("off", C, B, 2, True),
    "default": ("auto", C, B, None, None),
}


def model_config(z_context: int | None, absolute: bool | None) -> ModelConfig:
    """The CPU preset's model with these settings (``None``: automatic)."""
    return replace(get_preset("auto", "cpu").model, z_context=z_context,
                   absolute_intensity=absolute)


def volumes_strokes(image: np.ndarray, truth: np.ndarray, jitter: str, model: ModelConfig,
                    steps: int, train: dict, train_mode: str) -> list[float]:
    """IoU on the unpainted slices after ``steps`` steps, seeds 0-2."""
    preset = get_preset("auto", "cpu")
    strokes = paint_slices(truth, PAINTED, seed=5)
    scores = []
    for seed in (0, 1, 2):
        cfg = replace(preset.train, max_seconds=None, max_steps=steps, seed=seed,
                      device="cpu", intensity_jitter=jitter, **train)
        trained = TrainingRun(image, strokes, cfg, axes="ZYX", mode=train_mode,
                              model_config=model).run_to_end().model
        class_map = predict(trained, image, preset.tile, axes="ZYX").class_map
        scores.append(unpainted_iou(class_map, truth))
    return scores


def effort_strokes(data: Dataset, jitter: str, model: ModelConfig,
                   checkpoints: list[int], train: dict,
                   train_mode: str) -> dict[int, list[float]]:
    """IoU on the evaluation half at each checkpoint, 2 seeds x 3/10/20 objects."""
    scores: dict[int, list[float]] = {step: [] for step in checkpoints}
    # Never paused (settle_steps): the checkpoints compare training per step.
    settings = {"intensity_jitter": jitter, "settle_steps": None, **train}
    for seed in (0, 1):
        for objects in (3, 10, 20):
            ious = run_one(effort_case(data), objects, seed, checkpoints, settings,
                           train_mode, model)
            for checkpoint, iou in zip(checkpoints, ious):
                scores[checkpoint].append(iou)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 700])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                        default=["on", "off", "contrast", "mild"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strokes", nargs="+", choices=["volumes", "effort"],
                        default=["volumes", "effort"])
    parser.add_argument("--mode", choices=MODE_CHOICES, default="2d")
    add_grad_clip_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = train_overrides(args)
    checkpoints = sorted(args.steps)
    image, truth = read_wheel(str(wheel_path()))  # read once: each read decompresses the stack
    effort_data = load("3d")
    for name in args.variants:
        jitter, sampling.CONTRAST_JITTER, sampling.BRIGHTNESS_JITTER, z, absolute = (
            VARIANTS[name])
        model = model_config(z, absolute)
        if "volumes" in args.strokes:
            volumes = volumes_strokes(image, truth, jitter, model, checkpoints[-1], train,
                                      args.mode)
            print(f"{name:8s} volumes strokes, {checkpoints[-1]} steps: mean "
                  f"{np.mean(volumes):.3f} ({' '.join(f'{v:.3f}' for v in volumes)})",
                  flush=True)
        if "effort" not in args.strokes:
            continue
        for step, values in effort_strokes(effort_data, jitter, model, checkpoints,
                                           train, args.mode).items():
            print(f"{name:8s} effort strokes, {step} steps: mean {np.mean(values):.3f} "
                  f"({' '.join(f'{v:.3f}' for v in values)})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
