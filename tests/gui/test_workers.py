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
    inbox.put(new)  # replaces `old`: strokes are whole snapshots
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
