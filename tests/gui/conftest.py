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
