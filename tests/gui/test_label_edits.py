"""Which boxes of an annotation layer changed: painting, filling, undo, redo, new data."""

import numpy as np
from napari.layers import Labels

from napari_unet._label_edits import MAX_BOXES, LabelEdits, atom_box, union


def _covers(boxes, before: np.ndarray, after: np.ndarray) -> bool:
    """Every pixel that differs lies in one of ``boxes``."""
    inside = np.zeros(before.shape, bool)
    for box in boxes:
        inside[box] = True
    return bool(inside[before != after].all())


def _watched(shape=(4, 40, 50)):
    layer = Labels(np.zeros(shape, np.uint8))
    calls: list[int] = []
    edits = LabelEdits(layer, lambda: calls.append(1))
    return layer, edits, calls


def test_painting_and_filling_report_the_boxes_they_changed():
    layer, edits, calls = _watched()
    layer.brush_size = 3
    before = layer.data.copy()
    layer.paint((1, 10, 10), 2)
    layer.paint((3, 30, 40), 1)
    boxes = edits.take()
    assert len(boxes) == 2 and len(calls) == 2
    assert _covers(boxes, before, layer.data)
    assert all(b[0].stop - b[0].start == 1 for b in boxes)  # one slice each, not the stack
    assert edits.take() == []  # taken: nothing new
    before = layer.data.copy()
    layer.fill((1, 0, 0), 1)  # the whole slice's background
    boxes = edits.take()
    assert _covers(boxes, before, layer.data) and (before != layer.data).any()


def test_undo_and_redo_count_as_edits_but_scrolling_does_not():
    layer, edits, calls = _watched()
    layer.brush_size = 5
    layer.paint((2, 20, 20), 2)
    edits.take()
    painted = layer.data.copy()
    layer.refresh()  # what a scroll or redraw sends: the same event as undo
    assert edits.take() == [] and len(calls) == 1
    layer.undo()
    boxes = edits.take()
    assert not layer.data.any() and len(calls) == 2
    assert boxes and _covers(boxes, painted, layer.data)
    layer.redo()
    boxes = edits.take()
    assert (layer.data == painted).all() and boxes and _covers(boxes, np.zeros_like(painted),
                                                               layer.data)


def test_new_data_or_unreadable_history_means_everything():
    layer, edits, _ = _watched()
    layer.data = np.ones((4, 40, 50), np.uint8)
    assert edits.take() is None
    layer.paint((0, 5, 5), 2)
    edits._history = None  # as with a napari that keeps no history to read
    layer._undo_history = None
    layer._redo_history = None
    edits._on_refresh()
    assert edits.take() is None


def test_edits_through_data_setitem_and_many_boxes_merge():
    layer, edits, _ = _watched()
    indices = (np.array([0, 3]), np.array([5, 9]), np.array([7, 2]))
    layer.data_setitem(indices, 2)
    assert edits.take() == [(slice(0, 4), slice(5, 10), slice(2, 8))]
    for i in range(MAX_BOXES + 3):
        layer.paint((i % 4, 2 + 2 * i, 3), 1)
    boxes = edits.take()
    assert len(boxes) <= MAX_BOXES
    assert _covers(boxes, np.zeros_like(layer.data), layer.data == 1)


def test_boxes_of_odd_atoms():
    class Atom:
        def __init__(self, slice_key):
            self.slice_key = slice_key

    assert atom_box(Atom((slice(0, 2), slice(3, 5))), 2) == (slice(0, 2), slice(3, 5))
    assert atom_box(Atom((slice(0, 2), slice(3, None))), 2) is None  # open-ended
    assert atom_box(Atom((slice(0, 4, 2), slice(3, 5))), 2) is None  # strided
    assert atom_box(Atom((slice(0, 2),)), 2) is None
    assert atom_box(("not indices",), 2) is None
    assert atom_box(((np.array([], int), np.array([], int)), None, None), 2) is None
    assert union([(slice(0, 2), slice(5, 6)), (slice(1, 4), slice(0, 1))]) == (
        slice(0, 4), slice(0, 6))
