"""GUI test guards."""

import pytest
from qtpy.QtCore import QThreadPool


@pytest.fixture(autouse=True)
def no_worker_thread_left_running(qapp):
    """Every test must end with no worker thread still running."""
    yield
    pool = QThreadPool.globalInstance()
    # a stopped worker may need a moment to leave its last step
    assert pool.waitForDone(30_000), f"{pool.activeThreadCount()} worker thread(s) still running"


@pytest.fixture(autouse=True)
def no_modal_dialogs(monkeypatch):
    """A modal dialog would wait forever for a click; make an unexpected one a failure."""
    from napari_unet._widget import UNetTrainerWidget

    def unexpected(self, *args):
        raise AssertionError(f"unexpected dialog: {args}")

    for name in ("_ask_restore", "_confirm_overwrite", "_ask_save_path", "_ask_open_path",
                 "_ask_folder", "_ask_existing"):
        monkeypatch.setattr(UNetTrainerWidget, name, unexpected)


@pytest.fixture
def trainer(make_napari_viewer, monkeypatch):
    """A viewer with the trainer docked, quick settings, and the errors it would show.

    Modules that want other settings define their own ``trainer``.
    """
    from napari_unet import _widget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.refresh.value = 0.3
    widget.test_time_augmentation.value = False
    errors: list[str] = []
    monkeypatch.setattr(_widget, "show_error", errors.append)
    yield viewer, widget, errors
    widget.shutdown()
