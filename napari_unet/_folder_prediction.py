"""*Predict folder…*: which files the trainer segments, and what it tells the user after.

The work itself is :func:`napari_unet.core.predict_files.predict_files`, the command
line's batch, run in a worker (``_workers.folder_prediction_worker``). Here: the
checks made before anything is read, and the words of the summary. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from napari_unet.core.batch import BatchItem, image_paths, plan_batch
from napari_unet.core.errors import InputError
from napari_unet.core.inference import TileProgress
from napari_unet.core.predict_files import FileDone, FileEvent, FileFailed, FileStarted

# What to do with images whose results exist: asked of the user when there are any.
Existing = Literal["replace", "skip", "cancel"]
# Where a folder's instances go, inside its masks folder.
INSTANCES_FOLDER = "instances"


@dataclass(frozen=True)
class FolderPlan:
    """The images of a folder and where their results go.

    ``existing`` lists the images with results there already (all or some of them).
    """

    source: Path
    out: Path
    instances: Path | None
    images: tuple[Path, ...]
    existing: tuple[Path, ...]

    def items(self, existing: Existing) -> list[BatchItem]:
        """Return the images to predict, given what to do with existing results."""
        if existing == "cancel":
            return []
        to_do, _ = plan_batch(self.images, self.out, instances=self.instances,
                              overwrite=existing == "replace",
                              skip_existing=existing == "skip")
        return to_do


def plan_folder(source: Path, out: Path, *, instances: bool) -> FolderPlan:
    """Check a folder prediction before reading anything, and name its results.

    Each image's class map goes to ``out/<name>.tif``, its instances (if asked) to
    ``out/instances/<name>.tif``.

    Raises
    ------
    InputError
        If ``source`` holds no TIFF, ``out`` is ``source`` itself (the masks would be
        taken for images the next time), or the names clash (two images with one name).
    """
    if not source.is_dir():
        raise InputError(f"{source} is not a folder")
    if out.resolve() == source.resolve():
        raise InputError("choose another folder for the masks than the images' own: "
                         "masks written among the images would be read as images the "
                         "next time")
    images = tuple(image_paths([source]))
    objects = out / INSTANCES_FOLDER if instances else None
    to_do, skipped = plan_batch(images, out, instances=objects, skip_existing=True)
    existing = [item.image for item in skipped] + [item.image for item in to_do if item.redo]
    return FolderPlan(source, out, objects, images, tuple(sorted(existing)))


# Failures told one by one, as they happen; the rest only in the summary. A folder of
# images that do not fit the model (a 3D model, 2D images) would otherwise stack
# hundreds of notifications.
FAILURES_TOLD = 3
NAMES_LISTED = 5  # failed images named in the summary
# Progress-bar parts per file, so that one long image moves the bar too.
PARTS_PER_FILE = 100


@dataclass
class FolderProgress:
    """A folder prediction under way, as the user sees it.

    The image at work, the progress bar, the warnings to show, and the summary at the end.

    Fed the worker's events on the main thread (:meth:`record`); it holds no layer and no
    Qt object, so the widget only shows what it returns.
    """

    out: Path
    total: int
    done: int = 0
    failed: list[str] = field(default_factory=list)
    image: str = ""  # name of the image being predicted
    number: int = 0  # its number, from 1; 0 before the first
    parts_done: int = 0
    _tiles_total: int = 1  # of the image being predicted

    @property
    def parts_total(self) -> int:
        """The progress bar's length: :data:`PARTS_PER_FILE` for each image."""
        return self.total * PARTS_PER_FILE

    @property
    def stopped(self) -> bool:
        """Whether the job ended before every image was done or failed."""
        return self.done + len(self.failed) < self.total

    def record(self, event: FileEvent) -> list[str]:
        """Take in one event of a folder's prediction; return the warnings to show (if any).

        The events are those of :func:`~napari_unet.core.predict_files.predict_files`.
        """
        warnings: list[str] = []
        if isinstance(event, FileStarted):
            self.image, self.number = event.item.image.name, event.number
            self._tiles_total = max(event.tiles_total, 1)
            self._set_parts(event.number - 1, 0)
        elif isinstance(event, TileProgress):
            if event.notice:
                warnings.append(event.notice)
            self._set_parts(self.number - 1, event.tiles_done)
        elif isinstance(event, FileDone):
            self.done += 1
            self._set_parts(event.number, 0)
        elif isinstance(event, FileFailed):
            name = event.item.image.name
            self.failed.append(name)
            if len(self.failed) <= FAILURES_TOLD:
                warnings.append(event.describe(name))
            if len(self.failed) == FAILURES_TOLD:
                warnings.append("further images that fail are named in the summary at "
                                "the end")
            self._set_parts(event.number, 0)
        return warnings

    def summary(self) -> str:
        """Say how the job went (see :func:`describe_outcome`)."""
        return describe_outcome(self.out, self.done, self.failed, self.total,
                                stopped=self.stopped)

    def _set_parts(self, files_done: int, tiles_done: int) -> None:
        self.parts_done = (files_done * PARTS_PER_FILE
                           + tiles_done * PARTS_PER_FILE // self._tiles_total)


def describe_outcome(out: Path, done: int, failed: list[str], total: int, *,
                     stopped: bool) -> str:
    """Say how a folder prediction went: images written, failed, or left when stopped."""
    said = f"segmented {done} of {total} images into {out}"
    if failed:
        names = ", ".join(failed[:NAMES_LISTED])
        if len(failed) > NAMES_LISTED:
            names += f" and {len(failed) - NAMES_LISTED} more"
        said += f"; {len(failed)} could not be read or predicted: {names}"
    if stopped:
        said += ("; stopped before the rest (Predict folder… again, with 'Skip', "
                 "does them)")
    return said
