"""Shared setup of the GUI benchmarks: a shown napari window with the trainer docked."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any


def open_trainer_window(purpose: str, refresh: float) -> tuple[Any, Any]:
    """A shown viewer (1500 x 950) with the 2D sample and strokes, and the trainer widget.

    Autosaves go to a throwaway folder: a benchmark must not leave sessions in the user's
    folder (the next demo would offer to restore them), nor find old ones (a dialog).
    Shown, not hidden: a hidden window neither paints (so it would hide the cost of
    painting the overlay) nor screenshots.
    """
    import napari

    os.environ["NAPARI_UNET_DATA_DIR"] = tempfile.mkdtemp(prefix=f"napari-unet-{purpose}-")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.class_names.value = "background, nucleus"
    widget.refresh.value = refresh
    return viewer, widget


def pump_events(seconds: float) -> None:
    """Run the Qt event loop for ``seconds``, the way an idle user's window would."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


class Heartbeat:
    """A 10 ms QTimer on the GUI thread: a long gap between its ticks is a frozen window.

    ``ticks`` holds ``(time.perf_counter() of the tick, ms since the tick before)``; the
    first tick's gap counts from :meth:`start`, not from a tick. ``last_tick`` is read by
    watchdog threads (a float assignment, safe to read from another thread).
    """

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QElapsedTimer, QTimer

        self.ticks: list[tuple[float, int]] = []
        self.last_tick = time.perf_counter()
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.last_tick = time.perf_counter()
        self.ticks.append((self.last_tick, self._clock.restart()))

    def start(self) -> None:
        self.last_tick = time.perf_counter()
        self._clock.start()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
