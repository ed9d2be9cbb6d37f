"""The trainer's UI state, in one evented object: widgets listen to it, not to each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psygnal import evented

# "cancelling": the user stopped a prediction pass (after Stop, or Predict) part-way.
Status = Literal["idle", "training", "stopping", "predicting", "cancelling"]
PassKind = Literal["", "redraw", "final", "predict", "folder"]


@evented
@dataclass
class TrainerState:
    """What the trainer is doing and has done; every field change emits an event."""

    status: Status = "idle"
    step: int = 0
    loss: float = float("nan")
    samples_per_s: float = 0.0
    steps_per_s: float = 0.0
    device: str = ""
    labels_version: int = 0
    settled: bool = False  # live training paused, waiting for new strokes
    training_images: int = 1  # the image chosen and the other painted images it learns from
    model_summary: str = "no model yet: paint, then press Train"
    # A long pass over the whole image: which ("redraw": the paused model's overlay at
    # best quality, "final": the prediction after Stop, "predict": the Predict button's,
    # "folder": Predict folder…'s), parts done, parts in all (0: none running), and the
    # estimated seconds left (nan until it can be told).
    pass_kind: PassKind = ""
    pass_done: int = 0
    pass_total: int = 0
    pass_left_s: float = float("nan")
    # Predict folder…: the image being segmented (its name, number from 1, and of how many)
    folder_image: str = ""
    folder_number: int = 0
    folder_total: int = 0
    overlay_updates: int = 0
    instance_updates: int = 0

    @property
    def busy(self) -> bool:
        """A worker is running."""
        return self.status != "idle"
