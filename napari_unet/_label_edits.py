"""Where an annotation layer was edited: the boxes painted, filled, undone or redone.

A running training and the autosave need to know when the strokes change, and a big
stack's strokes are too large to copy whole after every pause in painting: the boxes
edited are enough. napari reports painting and filling through the layer's ``paint``
event, with the edited pixels; undo and redo change the data without it, through only
a refresh (the ``set_data`` event, which every scroll through the slices sends too).
They are told apart from a scroll by the layer's undo history having moved.

The undo history is private napari state (``Labels._undo_history``, ``_redo_history``,
read-only here, napari 0.5-0.9). Where it is missing, every refresh counts as an edit of
the whole layer: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from napari.layers import Labels

Box = tuple[slice, ...]

MAX_BOXES = 16
"""Boxes kept before they are merged into the one box around them all."""

COPIED_WHOLE_BYTES = 16 * 2**20
"""Strokes up to this size are copied whole on the GUI thread when they change (for the
training and the autosave), which also catches edits napari does not report (a script's);
a bigger stack's are not: copying 400 MB froze the window 0.06-1.3 s at every pause."""


def atom_box(atom: Any, ndim: int) -> Box | None:
    """Return the box around one undo-history atom's pixels, or None if it cannot tell.

    napari stores a mask edit (paint, fill) as an atom with a ``slice_key``, and an edit
    through ``data_setitem`` as ``(indices, old values, new values)``.
    """
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:
        box = tuple(slice_key)
        if len(box) == ndim and all(isinstance(s, slice) and s.stop is not None
                                    and s.step in (None, 1) for s in box):
            return tuple(slice(int(s.start or 0), int(s.stop)) for s in box)
        return None
    try:
        indices = [np.asarray(i) for i in atom[0]]
    except (TypeError, IndexError):
        return None
    if len(indices) != ndim or any(i.size == 0 or i.dtype.kind not in "iu" for i in indices):
        return None
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)


def union(boxes: Iterable[Box]) -> Box:
    """Return the smallest box holding all of ``boxes`` (at least one)."""
    boxes = list(boxes)
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes))
                 for d in range(len(boxes[0])))


class LabelEdits:
    """Collects the boxes of a Labels layer edited since the last :meth:`take`.

    Parameters
    ----------
    layer
        The annotation layer to watch.
    changed
        Called (on the main thread) after every edit, e.g. to restart a quiet-time timer.
    """

    def __init__(self, layer: Labels, changed: Callable[[], None]) -> None:
        self.layer = layer
        self._changed = changed
        self._boxes: list[Box] | None = []  # None: anything may have changed
        self._history = self._history_mark()
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)
        layer.events.set_data.connect(self._on_refresh)

    def disconnect(self) -> None:
        """Stop watching the layer."""
        self.layer.events.paint.disconnect(self._on_paint)
        self.layer.events.data.disconnect(self._on_data)
        self.layer.events.set_data.disconnect(self._on_refresh)

    def take(self) -> list[Box] | None:
        """Return the boxes edited since the last call and forget them.

        ``[]`` if nothing was edited; ``None`` if anything may have been (new data, or an
        edit whose pixels napari did not say).
        """
        boxes, self._boxes = self._boxes, []
        return boxes

    def _add(self, atoms: Iterable[Any] | None) -> None:
        ndim = self.layer.ndim
        boxes = [atom_box(atom, ndim) for atom in atoms] if atoms is not None else [None]
        if self._boxes is not None:
            if any(box is None for box in boxes):
                self._boxes = None
            else:
                self._boxes.extend(b for b in boxes if b is not None)
                if len(self._boxes) > MAX_BOXES:
                    self._boxes = [union(self._boxes)]
        self._changed()

    def _history_mark(self) -> tuple[int, int, int, int] | None:
        undo = getattr(self.layer, "_undo_history", None)
        redo = getattr(self.layer, "_redo_history", None)
        if undo is None or redo is None:
            return None
        return (len(undo), len(redo), id(undo[-1]) if undo else 0, id(redo[-1]) if redo else 0)

    def _on_paint(self, event: Any) -> None:
        self._history = self._history_mark()
        value = getattr(event, "value", None)
        self._add(value if isinstance(value, list | tuple) else None)

    def _on_data(self, event: Any = None) -> None:
        self._history = self._history_mark()
        self._add(None)

    def _on_refresh(self, event: Any = None) -> None:
        mark = self._history_mark()
        if mark is None:  # no history to read: a refresh may be an edit
            self._add(None)
            return
        if mark == self._history:  # a scroll, a redraw: nothing edited
            return
        before, self._history = self._history, mark
        layer: Any = self.layer
        # Undo moves the newest item to the redo history, redo moves it back.
        if before is not None and mark[1] > before[1]:
            self._add(layer._redo_history[-1])
        elif before is not None and mark[0] > before[0] and layer._undo_history:
            self._add(layer._undo_history[-1])
        else:
            self._add(None)
