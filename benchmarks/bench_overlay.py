"""What one overlay update costs the GUI thread, by image size and by how it is written.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_overlay.py \
        [--sizes 512 1024 2048 8192] [--repeats 10] [--write docs/benchmarks.md]

Every overlay the worker yields is written into napari's prediction layer on the GUI
thread (``napari_unet._outputs.show_prediction``, as the widget calls it), and the window
is frozen while that write and the redraw after it run. For a shown window with a square
image of each size, this times, from the call to the end of the redraw it causes:

- **whole, replaced**: a whole-image update assigned as the layer's new ``data`` (what a
  small image's live refresh and the Predict button's result did until session 19);
- **whole, in place**: the same update written into the layer's existing array, then
  ``refresh()``;
- **one block, in place**: one 400 x 400 block at the view's centre (the CPU preset's
  block of one window: the paused redraw and the pass after Stop on a large image);
- **redraw alone**: the canvas redrawn with nothing written, the floor under the others.

The first update, which makes the layer (napari's ``add_labels``, once per session), is
left out. Median and largest of ``--repeats`` updates, each with new values so nothing is
cached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = 400  # the cpu-small preset's one-window block (inference.one_window_blocks)


def _drawn() -> None:
    """Process the events an update posted (the canvas's repaint among them)."""
    from qtpy.QtWidgets import QApplication

    QApplication.instance().processEvents()


def measure(size: int, repeats: int) -> dict[str, Any]:
    """Time the three kinds of update on a ``size`` x ``size`` image in a shown window."""
    import napari

    from napari_unet._outputs import OutputTarget, show_prediction
    from napari_unet.core.view_first import PredictionUpdate

    os.environ["NAPARI_UNET_DATA_DIR"] = tempfile.mkdtemp(prefix="napari-unet-overlay-")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.random((size, size), dtype=np.float32), name="image")
    strokes = viewer.add_labels(np.zeros((size, size), np.uint8), name="strokes")
    target = OutputTarget((image,), (size, size), "YX",
                          {"scale": image.scale, "translate": image.translate})
    whole = (slice(0, size), slice(0, size))
    centre = size // 2 - min(BLOCK, size) // 2
    block = (slice(centre, centre + min(BLOCK, size)),) * 2

    def update(region: tuple[slice, ...], complete: bool) -> PredictionUpdate:
        shape = tuple(sl.stop - sl.start for sl in region)
        class_map = rng.integers(1, 3, shape, dtype=np.uint8)
        return PredictionUpdate(region, class_map, None, 0, complete)

    show_prediction(viewer, target, update(whole, True), strokes, 2)  # makes the layer
    _drawn()
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    draws = []
    canvas.events.draw.connect(lambda event: draws.append(time.perf_counter()))
    layer = viewer.layers["prediction"]

    def replace_whole() -> None:  # what show_prediction did for complete updates
        layer.data = update(whole, True).class_map

    def write(region: tuple[slice, ...]) -> None:  # what show_prediction does now
        show_prediction(viewer, target, update(region, region == whole), strokes, 2)

    kinds = {
        "redraw alone (no write)": canvas.update,
        "whole, replaced": replace_whole,
        "whole, in place": lambda: write(whole),
        "one block, in place": lambda: write(block),
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind, apply in kinds.items():
            del draws[:]
            start = time.perf_counter()
            apply()
            _drawn()
            times[kind].append(time.perf_counter() - start)
            if not draws:  # the figure must include the redraw the user waits for
                raise RuntimeError(f"{kind}: the canvas did not redraw")
    viewer.close()
    return {kind: (statistics.median(t) * 1000, max(t) * 1000) for kind, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _docs import publish
    from bench_core import machine

    rows = []
    for size in args.sizes:
        result = measure(size, args.repeats)
        print(size, result, flush=True)
        rows.append((size, result))
    kinds = list(rows[0][1])
    lines = [
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with `xvfb-run -a python "
        f"benchmarks/bench_overlay.py --sizes {' '.join(map(str, args.sizes))} --repeats "
        f"{args.repeats}` (shown 1500 x 950 window under Xvfb; time on the GUI thread from "
        f"the write to the end of the redraw, median (largest) of {args.repeats}).",
        "",
        "| image | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for size, result in rows:
        cells = [f"{median:.0f} ms ({largest:.0f})" for median, largest in result.values()]
        lines.append(f"| {size} x {size} | " + " | ".join(cells) + " |")
    publish("\n".join(lines), args.write, "bench_overlay")
    return 0


if __name__ == "__main__":
    sys.exit(main())
