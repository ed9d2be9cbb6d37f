"""The worker glue: messages to a training worker are neither lost nor reordered wrongly."""

import numpy as np

from napari_unet._workers import Inbox
from napari_unet.core.live import RegionUpdate, SettleUpdate
from napari_unet.core.training import LabelUpdate


def test_inbox_keeps_the_newest_message_of_each_kind_and_delivers_all():
    inbox = Inbox()
    assert inbox.take() is None
    old, new = LabelUpdate(np.zeros((2, 2))), LabelUpdate(np.ones((2, 2)))
    inbox.put(old)
    inbox.put(RegionUpdate((slice(0, 1),)))
    inbox.put(new)  # replaces `old`: whole strokes
    assert inbox.take() is new  # strokes first: they change what is learned
    inbox.put(SettleUpdate(100))
    inbox.put(SettleUpdate(None))  # replaces the 100
    region = inbox.take()
    assert isinstance(region, RegionUpdate) and region.region == (slice(0, 1),)
    assert inbox.take() == SettleUpdate(None)
    assert inbox.take() is None
    assert not inbox.stop_requested
    inbox.request_stop()
    assert inbox.stop_requested


def test_inbox_keeps_every_box_of_new_strokes_in_order():
    """Boxes are changes, not snapshots: a box replaced by a later one would be lost."""
    inbox = Inbox()
    first = ((slice(0, 1), slice(0, 2)), np.ones((1, 2), np.uint8))
    second = ((slice(1, 2), slice(0, 2)), np.full((1, 2), 2, np.uint8))
    inbox.put(LabelUpdate(patches=(first,)))
    inbox.put(LabelUpdate(patches=(second,)))
    merged = inbox.take()
    assert merged.labels is None and merged.patches == (first, second)
    inbox.put(LabelUpdate(patches=(first,)))
    whole = LabelUpdate(np.zeros((2, 2), np.uint8))
    inbox.put(whole)  # all the strokes: the box before is in them
    assert inbox.take() is whole
