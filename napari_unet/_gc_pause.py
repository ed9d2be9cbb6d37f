"""Keep Python's full garbage collections short while a job of ours runs.

With napari, Qt and torch loaded the interpreter tracks over 500,000 objects. A full
(generation 2) collection walks them all while holding the GIL: 250 ms on 2 CPU cores,
measured, during which the window is frozen. Training makes one every 20-30 s (objects
alive across a step are promoted to the old generation, and Python collects it in full
once a quarter as many have been promoted as it holds).

``gc.freeze()`` at the start of a job moves every object alive then aside, so a full
collection during the job walks only the objects made since: a few milliseconds.
Reference counting still frees everything as usual; only cyclic garbage among the frozen
objects (a layer deleted during training, say) waits until the job ends, when
``gc.unfreeze()`` hands them back and one full collection, on the GUI thread where Qt
objects may be finalised, reclaims them. Both calls are O(1) list splices.
"""

from __future__ import annotations

import gc

_jobs = 0  # jobs running, over all trainer widgets; touched on the GUI thread only


def pause_full_collections() -> None:
    """Call on the GUI thread when a job starts; pair with :func:`resume_full_collections`."""
    global _jobs
    if _jobs == 0:
        gc.freeze()
    _jobs += 1


def resume_full_collections() -> None:
    """Call on the GUI thread when a job has ended; the last one collects what was held."""
    global _jobs
    if _jobs == 0:
        return
    _jobs -= 1
    if _jobs == 0:
        gc.unfreeze()
        gc.collect()
