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


def test_a_quit_job_closes_its_generator_in_its_own_thread(qtbot):
    """superqt leaves a quit generator suspended, and napari keeps every worker: the job's
    frame (a whole training run) would stay in memory for good."""
    import threading

    from napari.qt.threading import create_worker

    from napari_unet._workers import ClosingWorker

    ran_finally_in = []

    def endless():
        try:
            while True:
                yield 1
        finally:
            ran_finally_in.append(threading.current_thread())

    worker = create_worker(endless, _worker_class=ClosingWorker, _start_thread=False)
    with qtbot.waitSignal(worker.yielded, timeout=10_000):
        worker.start()
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.quit()
    assert len(ran_finally_in) == 1 and ran_finally_in[0] is not threading.main_thread()


def test_a_training_cancelled_by_a_second_stop_is_let_go(trainer, qtbot):
    """Stop twice (or a cancel) ends the job mid-way: its run, which holds a float copy of
    the image, must be freed, not kept by napari's task list."""
    import gc
    import weakref

    from tests.conftest import make_blobs, strokes_from_truth
    from tests.gui.test_widget import TRAIN_TIMEOUT_MS, _wait_idle

    viewer, widget, errors = trainer
    image, truth = make_blobs((96, 96))
    viewer.add_image(image, name="blobs")
    viewer.add_labels(strokes_from_truth(truth), name="strokes")
    widget.labels_picker.value = viewer.layers["strokes"]
    widget.train()
    qtbot.waitUntil(lambda: widget.state.step >= 2, timeout=TRAIN_TIMEOUT_MS)
    run = weakref.ref(widget._run)
    widget.stop()
    widget.stop()  # while stopping: quit the job
    _wait_idle(qtbot, widget)
    assert widget.model is not None and not errors
    gc.collect()
    assert run() is None
