"""Soak test of the real widget: paint, train a few steps, stop, predict; many times over.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/soak_gui.py \
        [--cycles 200] [--write docs/benchmarks.md] [--trace-python]

Each cycle paints a new short stroke on the sample's annotation layer, presses Train,
waits for a few training steps, presses Stop, waits for the final prediction, then presses
Predict and waits again, all through Qt in a shown napari window. Every ``--every`` cycles
it records the process's resident memory and its thread count. Both must stay flat: a
leak of models, arrays, layers or worker threads shows as a rising column. Not part of
the test run (it takes minutes); the figures go to the docs.

``--trace-python`` records Python allocations (``tracemalloc``; numpy arrays included)
and prints the source lines whose live memory grew most from cycle ``--every`` to the
last: where a rise that the resident-memory column shows is held, if Python holds it.
Tracing slows every allocation, so its cycle times are not comparable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_mib() -> float:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def os_threads() -> int:
    """Threads of this process as the OS sees them (Qt's pool threads included)."""
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/task"))
    except OSError:
        return threading.active_count()


def growth_line(memory: dict[int, float], every: int) -> str:
    """Growth per cycle after the first ``every`` cycles (the warm-up: caches, first layers)."""
    cycles = sorted(c for c in memory if c >= every)
    if len(cycles) < 2:
        return "Too few cycles for a growth figure."
    first, last = cycles[0], cycles[-1]
    per_cycle = (memory[last] - memory[first]) / (last - first)
    return (f"Resident memory from cycle {first} to {last}: {memory[first]:.0f} -> "
            f"{memory[last]:.0f} MiB, {per_cycle * 1024:.0f} KiB per cycle.")


def print_growth(before, after, cycles: int, top: int = 12) -> None:
    """Print where live Python memory grew most between two tracemalloc snapshots."""
    stats = after.compare_to(before, "traceback")
    total = sum(stat.size_diff for stat in stats)
    print(f"Python allocations grew {total / 1024:.0f} KiB over {cycles} cycles "
          f"({total / 1024 / max(cycles, 1):.1f} KiB per cycle); largest growth:", flush=True)
    for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                  for f in stat.traceback[-4:]]
        print(f"  {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks  "
              f"{' <- '.join(reversed(frames))}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3, help="training steps per cycle")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--trace-python", action="store_true")
    args = parser.parse_args()
    if args.trace_python:
        import tracemalloc

        tracemalloc.start(8)  # frames per allocation: enough to see who made it
    baseline = None

    import napari
    import numpy as np
    import torch
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).parent))
    from _docs import publish
    from bench_core import machine

    # A fresh autosave folder: with an old one, the widget would (rightly) open a modal
    # "restore the last session?" dialog and wait for a click that never comes.
    os.environ["NAPARI_UNET_DATA_DIR"] = tempfile.mkdtemp(prefix="napari-unet-soak-")
    torch.set_num_threads(1)
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.refresh.value = 0.5
    widget.test_time_augmentation.value = False
    strokes = viewer.layers["strokes"]
    app = QApplication.instance()
    rng = np.random.default_rng(0)

    def wait_for(condition, timeout: float = 120.0) -> None:
        end = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > end:
                raise TimeoutError("the widget did not get there in time")
            app.processEvents()
            time.sleep(0.005)

    def napari_task_entries() -> int:
        # napari 0.9 files each create_worker job here and never removes it (upstream).
        manager = getattr(viewer.window, "_task_status_manager", None)
        return len(getattr(manager, "_tasks", ()))

    rows = ["| cycle | resident memory (MiB) | OS threads | napari task entries | "
            "seconds per cycle |", "|---|---|---|---|---|"]
    memory: dict[int, float] = {}
    started = time.perf_counter()
    last = started
    for cycle in range(1, args.cycles + 1):
        y, x = (int(v) for v in rng.integers(20, 490, 2))
        strokes.paint((y, x), 1)  # one more background dab, as a person keeps painting
        QTest.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
        wait_for(lambda: widget.state.step >= args.steps)
        QTest.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
        wait_for(lambda: widget.state.status == "idle")
        QTest.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
        wait_for(lambda: widget.state.status == "idle")
        if cycle == 1 or cycle % args.every == 0:
            now = time.perf_counter()
            per_cycle = (now - last) / (1 if cycle == 1 else args.every)
            last = now
            # The widget hands freed memory back in a background thread after each job;
            # read once it is done, as a person's next click would come later anyway.
            for thread in threading.enumerate():
                if thread.name == "napari-unet memory trim":
                    thread.join(5.0)
            memory[cycle] = rss_mib()
            if args.trace_python and cycle >= args.every:
                if baseline is None:
                    baseline = tracemalloc.take_snapshot()
                else:
                    print_growth(baseline, tracemalloc.take_snapshot(), cycle - args.every)
            rows.append(f"| {cycle} | {memory[cycle]:.0f} | {os_threads()} | "
                        f"{napari_task_entries()} | {per_cycle:.1f} |")
            print(rows[-1], flush=True)
    widget.shutdown()
    text = "\n".join([
        f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with `xvfb-run python "
        f"benchmarks/soak_gui.py --cycles {args.cycles}` ({args.steps} training steps per "
        f"cycle, shown window, {time.perf_counter() - started:.0f} s in all).", "", *rows,
        "", growth_line(memory, args.every)])
    publish(text, args.write, "soak_gui")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
