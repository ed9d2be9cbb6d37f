"""Painting on a big stack while it trains: does the window keep up?

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_painting.py \
        [--shape 100 2048 2048] [--strokes 5] [--write docs/benchmarks.md]

Opens a shown napari window with a synthetic uint8 stack (400 MB at the default shape) and
strokes on two slices, presses Train, and once the run is set up paints strokes on the
slice in view (dabs 40 ms apart, through the layer's paint API, as a drag would), pausing
3 s after each so the strokes go to the training and to the autosave, then undoes the last
one. It records, on the GUI thread,

- how long the Train button's handler held the window,
- the longest time one send of strokes to the training (``_send_labels``) and one autosave
  (``save_now``) took,
- the largest gap between ticks of a 10 ms timer, while painting and pausing (the overlay
  refreshes of the 2048 x 2048 slice in view fall in this window too),
- how many overlay updates were shown meanwhile, and the GUI time they took.

The figures depend on memory speed and on what else runs: one run, one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_stack(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Dim noise with bright squares: enough for two classes to train on."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 40, size=shape, dtype=np.uint8)
    for _ in range(shape[0] * 20):
        z = int(rng.integers(0, shape[0]))
        y, x = (int(rng.integers(0, s - 40)) for s in shape[1:])
        stack[z, y:y + 30, x:x + 30] += 120
    return stack


def timed(record: list[float], function: Any) -> Any:
    """Wrap ``function`` so each call's duration (ms) lands in ``record``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record.append((time.perf_counter() - start) * 1000)
    return wrapper


def measure(shape: tuple[int, ...], strokes: int) -> dict[str, Any]:
    import os
    import tempfile

    import napari
    from _gui import Heartbeat, pump_events
    from bench_core import machine
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    os.environ["NAPARI_UNET_DATA_DIR"] = tempfile.mkdtemp(prefix="napari-unet-painting-")
    image = synthetic_stack(shape)
    labels = np.zeros(shape, np.uint8)
    for z in (shape[0] // 4, 3 * shape[0] // 4):
        labels[z, 100:104, 100:1000] = 1  # background
        labels[z][image[z] > 150] = 2  # the squares
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.add_image(image, name="stack")
    layer = viewer.add_labels(labels, name="strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.refresh.value = 2.0
    widget.mode.value = "2D over slices"
    widget.test_time_augmentation.value = False
    middle = shape[0] // 2
    viewer.dims.set_point(0, middle)
    pump_events(3.0)

    sends: list[float] = []
    saves: list[float] = []
    train_ms: list[float] = []
    widget._send_labels = timed(sends, widget._send_labels)
    widget._labels_timer.timeout.disconnect()
    widget._labels_timer.timeout.connect(widget._send_labels)
    autosave = widget._strokes_autosave
    autosave.save_now = timed(saves, autosave.save_now)
    autosave._timer.timeout.disconnect()
    autosave._timer.timeout.connect(autosave.save_now)
    overlays: list[float] = []  # written and redrawn, in the painting window only
    widget._apply_prediction = timed(overlays, widget._apply_prediction)
    widget.train = timed(train_ms, widget.train)
    widget.train_button.clicked.disconnect()
    widget.train_button.clicked.connect(lambda *_: widget.train())

    beat = Heartbeat()
    beat.start()
    pressed = time.perf_counter()
    QTest.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    while widget._run is None:
        pump_events(0.1)
        if widget.state.status == "idle":
            raise RuntimeError("training did not start (see the notifications)")
        if time.perf_counter() - pressed > 600:
            raise RuntimeError("the run was not set up within 10 min")
    set_up_s = time.perf_counter() - pressed
    print(f"run set up in {set_up_s:.1f} s; painting", file=sys.stderr, flush=True)
    pump_events(2.0)
    painting_from = time.perf_counter()
    overlays.clear()
    layer.brush_size = 8
    rng = np.random.default_rng(1)
    for _ in range(strokes):
        y, x = (int(v) for v in rng.integers(200, shape[1] - 200, 2))
        for i in range(20):
            layer.paint((middle, y, x + 8 * i), int(rng.integers(1, 3)))
            pump_events(0.04)
        pump_events(3.0)
        print(f"  {widget.status.text()}", file=sys.stderr, flush=True)
    layer.undo()
    pump_events(3.0)
    painting_to = time.perf_counter()
    beat.stop()
    overlay_ms = list(overlays)
    steps, version = widget.state.step, widget.state.labels_version
    print(f"painted; stopping ({widget.state.status})", file=sys.stderr, flush=True)
    widget.stop()
    while widget.state.status != "idle":
        pump_events(0.1)
        if widget.state.status in ("stopping", "predicting"):
            # Stop again: predicting the whole stack after training takes many minutes
            # here, and is not what is measured (the model is kept either way).
            widget.stop()
    widget.shutdown()
    gaps = [gap for when, gap in beat.ticks if painting_from <= when <= painting_to]
    viewer.close()
    return {
        "machine": machine(), "shape": list(shape),
        "strokes_mb": round(labels.nbytes / 2**20),
        "train_handler_ms": round(max(train_ms), 1), "set_up_s": round(set_up_s, 1),
        "send_max_ms": round(max(sends), 1) if sends else None, "sends": len(sends),
        "save_max_ms": round(max(saves), 1) if saves else None, "saves": len(saves),
        "gap_painting_ms": max(gaps), "steps": steps, "labels_version": version,
        "overlays": len(overlay_ms),
        "overlay_max_ms": round(max(overlay_ms), 1) if overlay_ms else None,
        "overlay_total_ms": round(sum(overlay_ms)),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 2048, 2048])
    parser.add_argument("--strokes", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _docs import publish

    result = measure(tuple(args.shape), args.strokes)
    print(json.dumps(result))
    z, y, x = args.shape
    text = "\n".join([
        f"Measured on: {result['machine']}, {time.strftime('%Y-%m-%d')}, with",
        f"`xvfb-run -a python benchmarks/bench_painting.py --shape {z} {y} {x} "
        f"--strokes {args.strokes}` (a {z} x {y} x {x} uint8 stack, strokes "
        f"{result['strokes_mb']} MB, 2D over slices, refresh 2 s).",
        "",
        "| what | figure |",
        "|---|---|",
        f"| Train button's handler on the GUI thread | {result['train_handler_ms']:.0f} ms |",
        f"| Train pressed -> run set up (in the worker) | {result['set_up_s']:.1f} s |",
        f"| one send of strokes to the training, GUI thread, longest of "
        f"{result['sends']} | {result['send_max_ms']} ms |",
        f"| one autosave of the strokes, GUI thread, longest of {result['saves']} | "
        f"{result['save_max_ms']} ms |",
        f"| largest GUI event-loop gap while painting and pausing | "
        f"{result['gap_painting_ms']} ms |",
        f"| overlay updates shown while painting, longest / all together on the GUI "
        f"thread | {result['overlays']}: {result['overlay_max_ms']} ms / "
        f"{result['overlay_total_ms']} ms |",
        f"| strokes updates the training used / steps | {result['labels_version']} / "
        f"{result['steps']} |",
    ])
    publish(text, args.write, "bench_painting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
