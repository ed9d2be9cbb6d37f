"""Freed memory goes back to the operating system after a job (glibc)."""

import threading
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.host_memory import _malloc_trim, release_freed_memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def _churn_in_a_thread() -> None:
    # What a worker does: many mid-sized buffers, some kept a while, all freed at the end.
    rng = np.random.default_rng(0)
    kept = []
    for i in range(1500):
        buffer = np.ones(int(rng.integers(1_000, 60_000)))  # 8-480 KB each
        if i % 5 == 0:
            kept.append(buffer)
    kept.clear()


@pytest.mark.skipif(not Path("/proc/self/status").exists() or _malloc_trim() is None,
                    reason="needs Linux with glibc")
def test_memory_freed_in_a_worker_thread_is_returned():
    thread = threading.Thread(target=_churn_in_a_thread)
    thread.start()
    thread.join()
    before = _rss_mib()
    assert release_freed_memory()
    after = _rss_mib()
    # The thread's arena held its freed buffers (~70 MiB were alive at once).
    assert after < before - 30, (before, after)


def test_is_harmless_without_glibc(monkeypatch):
    monkeypatch.setattr("napari_unet.core.host_memory._malloc_trim", lambda: None)
    assert release_freed_memory() is False
