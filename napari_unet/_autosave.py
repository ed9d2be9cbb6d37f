"""Autosave glue for the widget: strokes and settings after a quiet moment.

The file work is :mod:`napari_unet.core.autosave`; here are the Qt timer that waits for
painting to pause, and the thread that writes (a big stack's strokes take a moment to
write, and the GUI must not wait for it). Painting, filling, undo and redo all count as
edits (:class:`~napari_unet._label_edits.LabelEdits`).

Small strokes are copied on the main thread first, so the writer never reads a layer being
painted; a big stack's are not (:data:`~napari_unet._label_edits.COPIED_WHOLE_BYTES`).
The writer reads them as they are; a stroke painted while it writes may be saved in part,
and that edit starts the next save, which has it whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, QTimer
from superqt.utils import create_worker

from napari_unet import _label_edits
from napari_unet._image_layers import full_resolution
from napari_unet._label_edits import LabelEdits
from napari_unet.core.autosave import Autosaver, session_dir
from napari_unet.core.errors import NapariUnetError

STROKES_QUIET_MS = 1500  # save strokes this long after the last paint event

SAVED_AS_KEY = "napari_unet_saved_as"
"""Layer metadata: the names a layer's strokes were saved (or restored) under.

A layer renamed since, or restored as ``<name> (restored)``, is still the layer those
saves came from: its next save replaces them rather than keeping them as another's.
"""


def layer_source(layer: Image) -> str | None:
    """Return the file a layer was opened from, if napari knows it."""
    source = getattr(layer, "source", None)
    path = getattr(source, "path", None)
    return str(path) if path else None


def saver_for(layer: Image) -> Autosaver:
    """Return the autosaver of the image in ``layer`` (its folder: see core.autosave).

    Lazy data (dask, zarr) is not read whole for a fingerprint: without a file it gets no
    autosave (:class:`NapariUnetError`). A pyramid is known by its full resolution.
    """
    pixels = full_resolution(layer)
    data = pixels if isinstance(pixels, np.ndarray) else None
    folder = session_dir(data, layer_source(layer))
    return Autosaver(folder, layer.name, tuple(pixels.shape))


def _write(saver: Autosaver, labels: np.ndarray | None, axes: str | None,
           settings: dict[str, Any] | None, layer_name: str,
           aliases: tuple[str, ...]) -> None:
    if labels is not None:
        if not labels.any():
            return  # an empty layer is no work to keep, and must not replace saved work
        saver.save_annotations(labels, axes, layer_name, aliases)
    if settings is not None:
        saver.save_settings(settings)


class StrokeAutosave(QObject):
    """Saves one Labels layer's strokes, and the widget's settings, whenever editing pauses.

    Parameters
    ----------
    parent
        Owner (the widget); the timer dies with it.
    enabled
        Called before each save; saving is skipped while it returns False.
    settings
        Returns the settings to keep with the strokes (JSON-serialisable values), or None.
    """

    def __init__(self, parent: QObject, enabled: Callable[[], bool],
                 settings: Callable[[], dict[str, Any]] | None = None) -> None:
        super().__init__(parent)
        self._enabled = enabled
        self._settings = settings
        self._strokes_changed = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(STROKES_QUIET_MS)
        self._timer.timeout.connect(self.save_now)
        self._layer: Labels | None = None
        self._edits: LabelEdits | None = None
        self._saver: Autosaver | None = None
        self._axes: str | None = None
        self._writing: Any = None
        self.saves = 0  # completed saves, for the status line and tests

    @property
    def folder(self) -> Path | None:
        """The folder strokes go to, once watching."""
        return self._saver.folder if self._saver else None

    def watch(self, layer: Labels | None, saver: Autosaver | None, axes: str | None) -> None:
        """Save ``layer``'s strokes into ``saver``'s folder from now on."""
        if layer is self._layer and saver is not None and self._saver is not None \
                and saver.folder == self._saver.folder:
            self._axes = axes
            return
        self.unwatch()
        self._layer, self._saver, self._axes = layer, saver, axes
        if layer is not None and saver is not None:
            self._edits = LabelEdits(layer, self._changed)

    def flush(self) -> None:
        """Save now what waits for a quiet moment, if anything does."""
        if self._timer.isActive():
            self._timer.stop()
            self.save_now()

    def unwatch(self) -> None:
        """Stop watching (saving what is pending first)."""
        self.flush()
        if self._edits is not None:
            self._edits.disconnect()
        self._layer = self._saver = self._edits = None

    def _changed(self) -> None:
        self._strokes_changed = True
        self._timer.start()

    def settings_changed(self, *args: Any) -> None:
        """Save the settings after the next quiet moment (a setting changed)."""
        self._timer.start()

    def save_now(self) -> None:
        """Write the strokes (if painted since the last save) and settings now, in a thread.

        Nothing is written while nothing is painted: an empty layer is no work to keep (and
        must not replace saved work), and settings alone do not make a session folder.
        """
        layer, saver = self._layer, self._saver
        if layer is None or saver is None or not self._enabled():
            return
        labels = None
        if self._strokes_changed:
            labels = layer.data
            # See the module's docstring. Lazy strokes (zarr) are read here too: a chunk
            # being written must not be read from another thread.
            if not isinstance(labels, np.ndarray) or \
                    labels.nbytes <= _label_edits.COPIED_WHOLE_BYTES:
                labels = np.array(labels, copy=True)
            self._strokes_changed = False
            if self._edits is not None:
                self._edits.take()  # the boxes are not needed: the whole layer is written
        elif not saver.folder.is_dir():
            return  # settings changed, but no work of this image is saved yet
        axes = self._axes if labels is not None and self._axes and \
            len(self._axes) == labels.ndim else None
        settings = self._settings() if self._settings is not None else None
        saved_as = layer.metadata.setdefault(SAVED_AS_KEY, [])
        aliases = tuple(name for name in saved_as if name != layer.name)
        if layer.name not in saved_as:
            saved_as.append(layer.name)
        # superqt's worker, not napari's wrapper: napari 0.9 files every worker it makes
        # in the window's task list for good, with its arguments (here, a copy of the
        # strokes): one leaked copy per save, found by the soak run.
        worker = create_worker(_write, saver, labels, axes, settings, layer.name, aliases,
                               _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._saved)
        worker.errored.connect(self._failed)
        self._writing = worker  # keep a reference until it is done
        worker.start()

    def _saved(self, result: None = None) -> None:
        self.saves += 1

    def _failed(self, error: Exception) -> None:
        self._strokes_changed = True  # try the strokes again at the next save
        message = str(error) if isinstance(error, NapariUnetError | OSError) else repr(error)
        show_warning(f"autosave of the strokes and settings failed: {message}")

    def wait(self, msecs: int = 10_000) -> None:
        """Block until a running write has finished (for shutdown and tests)."""
        if self._writing is not None:
            self._writing.await_workers(msecs=msecs)
