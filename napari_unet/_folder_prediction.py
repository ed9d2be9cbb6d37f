"""*Predict folder…*: which files the trainer segments, and what it tells the user after.

The work itself is :func:`napari_unet.core.predict_files.predict_files`, the command
line's batch, run in a worker (``_workers.folder_prediction_worker``). Here: the
checks made before anything is read, and the words of the summary. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from napari_unet.core.batch import BatchItem, image_paths, plan_batch
from napari_unet.core.errors import InputError

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
