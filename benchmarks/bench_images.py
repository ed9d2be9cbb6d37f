"""A second image that looks different: strokes on it alone, after the first, or with it.

    pip install -e ".[bench]"
    python benchmarks/bench_images.py [--seeds 8] [--steps 500] [--write docs/benchmarks.md]

What the trainer does when a user paints a second image. The DSB2018 nuclei image
(``sample_data/nuclei2d.tif``, 512 x 512) is cut in two: image A is its left half as it is;
image B its right half as another acquisition of the same sample might look: lower
contrast, a raised background and slight defocus (``0.5 * gaussian(right, 1) + 0.3 *
max``). A model trained on A alone fails on B (it takes B's raised background for nuclei).
The simulated annotator (``sample_data/make_sample.py``) paints 10 objects and 10
background strokes on A, and 3 + 3 on the top half of B; B is scored on its bottom half,
A on its unpainted pixels (foreground IoU).

Each condition trains the widget's way (the CPU preset, ``--steps`` steps, the pause
after 500 steps on a stack being no matter here):

- ``A``: A's strokes; ``B``: B's strokes alone (a new model);
- ``A, then B``: A's model trained on B's strokes alone, what the trainer did before it
  learnt from other images (and does with that off, or with A closed): Train on B
  continued from A's model, on B's strokes, at the fine-tuning rate
  (``TrainConfig.fine_tune_lr_factor``);
- ``A, then B at the full rate``: the same at the full learning rate, as every
  continued run trained before session 31;
- ``A, then A + B``: A's model trained on B's strokes and A's together, what Train does
  now with *learn from the strokes on other images too*.

Mean +- standard deviation over seeds (each seed changes the strokes and the network's
initialisation).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from napari_unet.core.config import get_preset
from napari_unet.core.inference import predict
from napari_unet.core.metrics import foreground_iou
from napari_unet.core.training import TrainingImage, TrainingRun

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "sample_data"))
from _docs import mean_sd, publish  # noqa: E402
from bench_core import machine  # noqa: E402
from make_sample import paint_strokes  # noqa: E402

CONDITIONS = ("A", "B", "A, then B", "A, then B at the full rate", "A, then A + B")


def images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image A and its truth, image B (another acquisition's look) and its truth."""
    image = tifffile.imread(HERE.parent / "sample_data" / "nuclei2d.tif").astype(np.float32)
    truth = tifffile.imread(HERE.parent / "sample_data" / "nuclei2d_truth.tif")
    half = image.shape[1] // 2
    right = image[:, half:]
    b = 0.5 * ndimage.gaussian_filter(right, 1.0) + 0.3 * float(right.max())
    return image[:, :half], truth[:, :half], b.astype(np.float32), truth[:, half:]


def run_seed(seed: int, steps: int) -> dict[str, dict[str, float]]:
    """Train every condition for one seed; return IoU on A and on B's scored half."""
    a, truth_a, b, truth_b = images()
    top = b.shape[0] // 2
    strokes_a = paint_strokes(truth_a, 10, 10, seed)
    strokes_b = np.zeros(truth_b.shape, np.uint8)
    strokes_b[:top] = paint_strokes(truth_b[:top], 3, 3, seed + 1000)
    preset = get_preset("cpu-small", "cpu")
    config = replace(preset.train, max_steps=steps, max_seconds=None, seed=seed,
                     device="cpu")

    def train(image, strokes, init=None, more=(), fine_tune_lr_factor=None):
        run_config = config if fine_tune_lr_factor is None else replace(
            config, fine_tune_lr_factor=fine_tune_lr_factor)
        return TrainingRun(image, strokes, run_config, model_config=preset.model,
                           init=init, more=more).run_to_end().model

    def scores(model):
        on_a = predict(model, a, preset.tile).class_map
        on_b = predict(model, b, preset.tile).class_map
        return {"a": foreground_iou(on_a, truth_a, strokes_a == 0),
                "b": foreground_iou(on_b[top:], truth_b[top:])}

    model_a = train(a, strokes_a)
    return {"A": scores(model_a), "B": scores(train(b, strokes_b)),
            "A, then B": scores(train(b, strokes_b, init=model_a)),
            "A, then B at the full rate": scores(train(b, strokes_b, init=model_a,
                                                       fine_tune_lr_factor=1.0)),
            "A, then A + B": scores(train(b, strokes_b, init=model_a,
                                          more=[TrainingImage(a, strokes_a, name="A")]))}


def report(runs: list[dict], steps: int, seeds: int) -> str:
    lines = [
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with "
        f"`python benchmarks/bench_images.py --seeds {seeds} --steps {steps}` (image A: the "
        "left half of the 2D nuclei image, 10 objects painted; image B: the right half "
        "with lower contrast, a raised background and slight blur, 3 objects painted on "
        f"its top half; preset cpu-small, {steps} steps per training; foreground IoU on "
        "A's unpainted pixels and on B's bottom half; mean ± sd over seeds).",
        "",
        "| trained on | IoU on A | IoU on B | each seed, A / B |",
        "|---|---|---|---|",
    ]
    for condition in CONDITIONS:
        cells = [mean_sd([r[condition][k] for r in runs]) for k in ("a", "b")]
        seeds = ", ".join(f"{r[condition]['a']:.2f} / {r[condition]['b']:.2f}" for r in runs)
        lines.append(f"| {condition} | {cells[0]} | {cells[1]} | {seeds} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, args.steps))
        print(f"seed {seed}: " + ", ".join(
            f"{c}: A {r['a']:.3f} B {r['b']:.3f}" for c, r in runs[-1].items()), flush=True)
    publish(report(runs, args.steps, args.seeds), args.write, "bench_images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
