"""The widget as a user meets it: time to first overlay, refresh interval, GUI stalls.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui.py \
        [--seconds 30] [--repeats 3] [--write docs/benchmarks.md] [--screenshots docs/images]

Opens a shown napari window with the sample image, its strokes and the trainer docked,
presses Train through Qt, and while training runs records

- seconds from the press to the first prediction overlay on screen,
- the interval between overlay refreshes actually achieved (refresh setting 2 s),
- the largest gap between ticks of a 10 ms QTimer on the GUI thread (a frozen window shows
  as a long gap), in three phases: from the press to the first overlay (the click itself,
  starting the worker, napari's activity dock), from the first overlay to the second
  (napari adding the overlay layer, once per session), and from the second overlay on
  (the steady state a user paints in).

Each repeat runs in a fresh process, so each one meets a cold start as a user does; the
figures vary from run to run on a busy 2-core machine, hence several.
With ``--screenshots`` an extra run, not counted, saves PNGs of the window for the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_ROWS = [
    ("first_overlay_s", "Train pressed -> first overlay on screen", "{:.2f} s"),
    ("refresh_median_s", "overlay refresh interval while training, median", "{:.2f} s"),
    ("refresh_max_s", "overlay refresh interval while training, max", "{:.2f} s"),
    ("gap_until_first_ms", "largest GUI event-loop gap, Train pressed -> first overlay",
     "{:.0f} ms"),
    ("gap_adding_layer_ms", "largest GUI event-loop gap, first -> second overlay "
     "(napari adds the overlay layer)", "{:.0f} ms"),
    ("gap_steady_ms", "largest GUI event-loop gap, from the second overlay on", "{:.0f} ms"),
    ("steps", "training steps with the GUI running", "{:.0f}"),
]


def measure(seconds: float, refresh: float, screenshots: Path | None,
            wait: float = 1.0) -> dict[str, Any]:
    """One run in this process: open the window, wait ``wait`` s, press Train, watch for
    ``seconds``."""
    from _gui import Heartbeat, open_trainer_window, pump_events
    from bench_core import machine
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer, widget = open_trainer_window("bench", refresh)
    # Ticking before the press, so the click's own handling is a gap like any other (from
    # session 23; before, the first tick after the press was measured from start() and
    # left out, and with it the time Train's handler held the window).
    heartbeat = Heartbeat()
    heartbeat.start()
    pump_events(wait)
    if screenshots:
        screenshots.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(screenshots / "1-strokes.png"), canvas_only=False, flash=False)

    overlay_times: list[float] = []
    widget.state.events.overlay_updates.connect(
        lambda: overlay_times.append(time.perf_counter()))
    pressed = time.perf_counter()
    QTest.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    shot_during = not screenshots
    while time.perf_counter() - pressed < seconds:
        pump_events(0.05)
        if not shot_during and time.perf_counter() - pressed > 0.7 * seconds:
            viewer.screenshot(str(screenshots / "2-training.png"), canvas_only=False,
                              flash=False)
            shot_during = True
    heartbeat.stop()
    QTest.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    while widget.state.busy:
        pump_events(0.05)
    if screenshots:
        viewer.layers["strokes"].visible = False
        pump_events(0.5)
        viewer.screenshot(str(screenshots / "3-prediction.png"), canvas_only=False,
                          flash=False)
    steps = widget.model.metadata["steps"] if widget.model else 0
    widget.shutdown()
    viewer.close()

    nan = float("nan")
    if len(overlay_times) < 3:
        raise SystemExit(f"only {len(overlay_times)} overlays in {seconds} s: run longer")
    first, second = overlay_times[0], overlay_times[1]
    during = [t for t in overlay_times if t - pressed < seconds]
    intervals = np.diff(during[1:]) if len(during) > 2 else np.array([nan])

    def largest(start: float, end: float) -> float:
        # A gap is recorded by the tick that ends it, so it belongs to the phase that tick
        # falls in; the very first tick measures from start(), not a real gap.
        return float(max((g for t, g in heartbeat.ticks[1:] if start < t <= end),
                         default=0))

    return {
        "machine": machine(),  # after training: the torch threads the widget trained with
        "first_overlay_s": first - pressed,
        "refresh_median_s": float(statistics.median(intervals)),
        "refresh_max_s": float(np.max(intervals)),
        "gap_until_first_ms": largest(pressed, first),
        "gap_adding_layer_ms": largest(first, second),
        "gap_steady_ms": largest(second, float("inf")),
        "steps": float(steps),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--refresh", type=float, default=2.0)
    parser.add_argument("--wait", type=float, default=1.0,
                        help="seconds between the window opening and Train: 1 s leaves the "
                             "widget's torch warm-up still running, as for a hurried user")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs, each in a fresh process (cold start each time)")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--one-run", action="store_true",
                        help="internal: one run in this process, JSON on the last line")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))

    if args.one_run:
        print(json.dumps(measure(args.seconds, args.refresh, args.screenshots, args.wait)))
        return 0

    from _docs import publish

    runs = []
    # Screenshots are taken on the GUI thread and would show as stalls: their run is extra.
    extra = [["--screenshots", str(args.screenshots)]] if args.screenshots else []
    for options in extra + [[]] * args.repeats:
        command = [sys.executable, __file__, "--one-run", "--seconds", str(args.seconds),
                   "--refresh", str(args.refresh), "--wait", str(args.wait), *options]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            return out.returncode
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'screenshots' if options else 'run'}: {result}", flush=True)
        if not options:
            runs.append(result)

    header = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [
        f"Measured on: {runs[0]['machine']}, {time.strftime('%Y-%m-%d')}, with",
        f"`xvfb-run -a python benchmarks/bench_gui.py --seconds {args.seconds:.0f} "
        f"--repeats {args.repeats} --wait {args.wait:g}` (shown window under Xvfb, sample "
        f"image 512x512, preset auto, refresh {args.refresh:.1f} s, Train pressed "
        f"{args.wait:g} s after the window opened, {args.seconds:.0f} s of training; each "
        f"run a fresh process).",
        "",
        f"| what | {header} |",
        "|---|" + "---|" * len(runs),
    ]
    for key, label, fmt in _ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in runs) + " |")
    publish("\n".join(lines), args.write, "bench_gui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
