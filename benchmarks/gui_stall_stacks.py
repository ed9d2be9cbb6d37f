"""Where the GUI thread is while the window stalls during training (a diagnosis aid).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_stall_stacks.py \
        [--seconds 20] [--refresh 2.0]

A 10 ms QTimer marks the GUI thread as alive; a watchdog thread looks every 10 ms and,
when the timer has not ticked for over 50 ms, samples the GUI thread's Python stack.
Prints the most frequent stacks with the milliseconds they were seen for. A stack that
ends in the event loop itself (no Python frame on top) means the time went to Qt's own
C++ work (painting, OpenGL) or to waiting for the CPU, not to our Python code.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
import traceback


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--refresh", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()

    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _gui import Heartbeat, open_trainer_window, pump_events

    viewer, widget = open_trainer_window("stalls", args.refresh)

    heartbeat = Heartbeat()
    heartbeat.start()
    gui_thread = threading.get_ident()
    seen: collections.Counter[str] = collections.Counter()
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            time.sleep(0.01)
            if time.perf_counter() - heartbeat.last_tick > 0.05:
                frame = sys._current_frames().get(gui_thread)
                stack = traceback.extract_stack(frame)[-10:]
                seen[" <- ".join(f"{os.path.basename(f.filename)}:{f.name}"
                                 for f in reversed(stack))] += 1

    pump_events(1.0)
    threading.Thread(target=watch, daemon=True).start()
    QTest.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    pump_events(args.seconds)
    QTest.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    while widget.state.busy:
        pump_events(0.05)
    watching.clear()
    print(f"stalled samples: {sum(seen.values())} x 10 ms in {args.seconds:.0f} s of training")
    for stack, count in seen.most_common(args.top):
        print(f"{count * 10:5d} ms | {stack}")
    widget.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
