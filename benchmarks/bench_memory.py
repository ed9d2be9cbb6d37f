"""Peak memory of prediction against image size: it must follow the tile, not the image.

    python benchmarks/bench_memory.py [--sizes 1024 2048 4096 8192] [--write docs/benchmarks.md]
    python benchmarks/bench_memory.py --passes [--pass-sizes 1024 2048 4096] [--write ...]

Each case runs in a fresh process: make the image (uint8) and a model, note the resident
memory, predict the class map, note the peak. Reported: the image and the class map
themselves (they grow with the image by necessity: the input and the answer), and the
*working memory*, peak minus baseline minus the class map, which is what tiling should
keep flat. Cases: 2D images of growing side, a Z stack predicted plane by plane by a 2D
model, and a stack predicted by a 3D model.

``--passes`` compares, on 2D images, the two ways a whole image is predicted:
``predict`` (the command line: in one piece, or with test-time augmentation in
one-window blocks) and ``predict_view_first`` (the widget's Predict and the pass after
Stop: one-window blocks from the view outwards), each plain and with test-time
augmentation, which needs per-class probabilities over whatever is predicted at once.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(kind: str, shape: tuple[int, ...], how: str = "whole", tta: bool = False) -> dict:
    """One measurement, in this (fresh) process.

    ``how``: ``whole`` (one ``predict``) or ``view-first`` (``predict_view_first``, its
    parts assembled into one class map as the widget's layer holds them).
    """
    import numpy as np
    import torch

    from napari_unet.core.config import get_preset
    from napari_unet.core.inference import predict
    from napari_unet.core.model import TrainedModel
    from napari_unet.core.normalization import Normalization
    from napari_unet.core.unet import build_unet
    from napari_unet.core.view_first import PredictionUpdate, predict_view_first

    torch.set_num_threads(2)
    preset = get_preset("cpu-small", "cpu")
    config = preset.model
    if kind == "3d":
        from dataclasses import replace

        config = replace(config, spatial_dims=3)
    network = build_unet(config)
    model = TrainedModel(network, Normalization(low=(0.0,), high=(255.0,)),
                         ("background", "object"), {})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    axes = {2: "YX", 3: "ZYX"}[len(shape)]
    # Warm up so that torch's one-off allocations are in the baseline, not the peak.
    predict(model, image[tuple(slice(0, 64) for _ in shape)], preset.tile, axes=axes)
    baseline = _rss_mib()
    t0 = time.perf_counter()
    if how == "whole":
        class_map = predict(model, image, preset.tile, axes=axes,
                            test_time_augmentation=tta).class_map
    else:
        class_map = np.zeros(image.shape, np.uint8)
        for event in predict_view_first(model, image, preset.tile, axes=axes,
                                        test_time_augmentation=tta):
            if isinstance(event, PredictionUpdate):
                class_map[event.region] = event.class_map
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    output = class_map.nbytes / 2**20
    return {"kind": kind, "shape": list(shape), "image_mib": image.nbytes / 2**20,
            "output_mib": output, "baseline_mib": baseline, "peak_mib": peak,
            "working_mib": peak - baseline - output, "seconds": seconds,
            "mvox_s": image.size / 1e6 / seconds}


def measure(kind: str, shape: tuple[int, ...], how: str = "whole", tta: bool = False) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, how, str(int(tta)), *map(str, shape)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_passes(sizes: list[int]) -> list[str]:
    """Table rows: whole against view first, plain and with test-time augmentation."""
    rows = ["| image | test-time augmentation | `predict` (command line): working memory "
            "(MiB) | time (s) | view first (widget): working memory (MiB) | time (s) |",
            "|---|---|---|---|---|---|"]
    for size in sizes:
        for tta in (False, True):
            whole = measure("2d", (size, size), "whole", tta)
            parts = measure("2d", (size, size), "view-first", tta)
            rows.append(f"| {size} x {size} | {'yes' if tta else 'no'} | "
                        f"{whole['working_mib']:.0f} | {whole['seconds']:.1f} | "
                        f"{parts['working_mib']:.0f} | {parts['seconds']:.1f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--stacks", type=str, nargs="+",
                        default=["2d:16x1024x1024", "2d:64x1024x1024", "3d:32x256x256",
                                 "3d:64x512x512"],
                        help="kind:ZxYxX; kind 2d = plane by plane, 3d = a 3D model")
    parser.add_argument("--passes", action="store_true",
                        help="compare whole-image and view-first prediction instead")
    parser.add_argument("--pass-sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.child:
        kind, how, tta, *shape = args.child
        print(json.dumps(child(kind, tuple(int(s) for s in shape), how, tta == "1")))
        return 0

    sys.path.insert(0, str(HERE))
    from _docs import publish
    from bench_core import machine

    if args.passes:
        rows = compare_passes(args.pass_sizes)
        sizes = " ".join(map(str, args.pass_sizes))
        publish("\n".join([
            f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with `python "
            f"benchmarks/bench_memory.py --passes --pass-sizes {sizes}` (preset cpu-small, "
            "untrained weights, class map only; each case in a fresh process).", "", *rows]),
            args.write, "bench_memory_passes")
        return 0

    cases = [("2d", (s, s)) for s in args.sizes]
    for spec in args.stacks:
        kind, dims = spec.split(":")
        cases.append((kind, tuple(int(d) for d in dims.split("x"))))
    rows = ["| image | model | image (MiB) | class map (MiB) | working memory (MiB) | "
            "time (s) | MVox/s |", "|---|---|---|---|---|---|---|"]
    for kind, shape in cases:
        r = measure(kind, shape)
        model = "2D" if kind == "2d" else "3D"
        rows.append(f"| {' x '.join(map(str, shape))} | {model} | {r['image_mib']:.0f} | "
                    f"{r['output_mib']:.0f} | {r['working_mib']:.0f} | {r['seconds']:.1f} | "
                    f"{r['mvox_s']:.2f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with `python "
        "benchmarks/bench_memory.py` (preset cpu-small, untrained weights: speed and memory "
        "do not depend on them; class map only, no test-time augmentation).", "", *rows])
    publish(text, args.write, "bench_memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
