"""The widget as a user meets it: time to first overlay, refresh interval, GUI stalls.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui.py \
        [--seconds 30] [--write docs/benchmarks.md] [--screenshots docs/images]

Opens a shown napari window with the sample image, its strokes and the trainer docked,
presses Train through Qt, and while training runs records

- seconds from the press to the first prediction overlay on screen,
- the interval between overlay refreshes actually achieved (refresh setting 2 s),
- the largest gap between ticks of a 10 ms QTimer on the GUI thread (a frozen window shows
  as a long gap), split into "until the first overlay" and "while training".

With ``--screenshots`` it also saves PNGs of the window for the README.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--refresh", type=float, default=2.0)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()

    from qtpy.QtCore import QElapsedTimer, Qt, QTimer
    from qtpy.QtTest import QTest

    sys.path.insert(0, str(Path(__file__).parent))
    from _docs import publish
    from _gui import open_trainer_window, pump_events
    from bench_core import machine

    viewer, widget = open_trainer_window("bench", args.refresh)
    pump_events(1.0)
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.screenshots / "1-strokes.png"), canvas_only=False,
                          flash=False)

    overlay_times: list[float] = []
    widget.state.events.overlay_updates.connect(
        lambda: overlay_times.append(time.perf_counter()))
    clock = QElapsedTimer()
    gaps: list[tuple[float, int]] = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: gaps.append((time.perf_counter(), clock.restart())))
    clock.start()
    heartbeat.start()
    pressed = time.perf_counter()
    QTest.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    while time.perf_counter() - pressed < args.seconds:
        pump_events(0.05)
        if args.screenshots and time.perf_counter() - pressed > 0.7 * args.seconds and not (
            args.screenshots / "2-training.png"
        ).exists():
            viewer.screenshot(str(args.screenshots / "2-training.png"), canvas_only=False,
                              flash=False)
    heartbeat.stop()
    QTest.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    while widget.state.busy:
        pump_events(0.05)
    if args.screenshots:
        viewer.layers["strokes"].visible = False
        pump_events(0.5)
        viewer.screenshot(str(args.screenshots / "3-prediction.png"), canvas_only=False,
                          flash=False)

    first = overlay_times[0] - pressed if overlay_times else float("nan")
    during = [t for t in overlay_times if t - pressed < args.seconds]
    intervals = np.diff(during[1:]) if len(during) > 2 else np.array([float("nan")])
    startup = max((g for t, g in gaps[1:] if overlay_times and t <= overlay_times[0]),
                  default=0)
    steady = max((g for t, g in gaps if overlay_times and t > overlay_times[0]), default=0)
    steps = widget.model.metadata["steps"] if widget.model else 0
    lines = [
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with",
        f"`xvfb-run -a python benchmarks/bench_gui.py --seconds {args.seconds:.0f}` "
        f"(shown window under Xvfb, sample image 512x512, preset auto, refresh "
        f"{args.refresh:.1f} s).",
        "",
        "| what | measured |",
        "|---|---|",
        f"| Train pressed -> first overlay on screen | {first:.2f} s |",
        f"| overlay refresh interval while training (median, max) | "
        f"{statistics.median(intervals):.2f} s, {np.max(intervals):.2f} s |",
        f"| largest GUI event-loop gap until the first overlay | {startup} ms |",
        f"| largest GUI event-loop gap while training ({args.seconds:.0f} s) | {steady} ms |",
        f"| training steps in {args.seconds:.0f} s with the GUI running | {steps} |",
    ]
    text = "\n".join(lines)
    publish(text, args.write, "bench_gui")
    widget.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
