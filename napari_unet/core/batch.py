"""Which files a batch prediction reads and writes.

``napari-unet predict`` segments "the next hundred images like it" in one run: the model
is loaded once (a process per image paid ~3 s of imports and loading each), and one
unreadable image is reported and skipped instead of ending the batch. Images come as
files, folders (their TIFFs) or patterns such as ``'data/*.tif'`` (expanded here too:
Windows' shell does not). Each mask is written under the image's own name in an output
folder; everything that could go wrong with the names is checked before the first
image is read, not an hour in.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from napari_unet.core.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")


def _is_pattern(spec: Path) -> bool:
    return not spec.exists() and any(c in str(spec) for c in "*?[")


def image_paths(specs: Sequence[Path]) -> list[Path]:
    """Expand image files, folders and glob patterns into image files, in the given order.

    A folder stands for the TIFFs directly in it, a pattern for the files it matches
    (both sorted by name); a file is taken as it is, whatever its name.

    Parameters
    ----------
    specs
        What the user typed after ``--image``.

    Raises
    ------
    InputError
        If a file does not exist, or a folder or pattern holds no TIFF.
    """
    found: list[Path] = []
    seen: set[Path] = set()  # (a folder of thousands: not a search of the list each time)
    for spec in specs:
        if spec.is_dir():
            matches = sorted(p for p in spec.iterdir()
                             if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
            if not matches:
                raise InputError(f"no TIFF (.tif, .tiff) in folder {spec}")
        elif _is_pattern(spec):
            matches = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
            if not matches:
                raise InputError(f"no file matches {spec}")
        elif spec.is_file():
            matches = [spec]
        else:
            raise InputError(f"file not found: {spec}")
        for path in matches:
            if path not in seen:
                seen.add(path)
                found.append(path)
    return found


def is_batch(specs: Sequence[Path], out: Path) -> bool:
    """Whether ``specs`` ask for a batch (outputs are folders), not one image and file.

    A batch is several images, a folder or a pattern of them, or any image with an
    existing folder as ``out``.
    """
    return len(specs) > 1 or out.is_dir() or any(s.is_dir() or _is_pattern(s) for s in specs)


@dataclass(frozen=True)
class BatchItem:
    """One image of a batch and the files its results go to (``None``: not asked for).

    ``redo`` marks an image that a stopped run left with some of its results only: it
    is done again, and those are replaced.
    """

    image: Path
    out: Path
    probabilities: Path | None = None
    instances: Path | None = None
    redo: bool = False

    @property
    def outputs(self) -> list[Path]:
        """The files this item writes."""
        return [p for p in (self.out, self.probabilities, self.instances) if p is not None]


def plan_batch(images: Sequence[Path], out: Path, probabilities: Path | None = None,
               instances: Path | None = None, *, overwrite: bool = False,
               skip_existing: bool = False) -> tuple[list[BatchItem], list[BatchItem]]:
    """Name every output of a batch, and check the names before anything is read.

    Each result is ``FOLDER/<image name>.tif`` in the folder given for its kind.

    Parameters
    ----------
    images
        The image files (see :func:`image_paths`).
    out, probabilities, instances
        Output folders for the class maps, probabilities and instances (the last two
        optional); missing ones are made by :func:`make_folders`, which makes ``out``
        first, so the others may lie inside it.
    overwrite
        Replace results that exist.
    skip_existing
        Leave out images whose results all exist (a batch run again after a stop), and
        redo those with only some (the class map is written before the instances).

    Returns
    -------
    to_do, skipped
        The items to predict and those left out by ``skip_existing``.

    Raises
    ------
    InputError
        If the folders are not distinct folders whose parent exists, two images share a
        name, a result would replace an image, or results exist and neither
        ``overwrite`` nor ``skip_existing`` says what to do with them.
    """
    folders = [f for f in (out, probabilities, instances) if f is not None]
    if len({f.resolve() for f in folders}) != len(folders):
        raise InputError("for several images, --out, --probabilities and --instances are "
                         "folders, and must be different ones (the files in them are named "
                         "after the images)")
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"for several images, {folder} must be a folder, not a file")
        # (a folder inside another output folder is made after it: make_folders)
        if not folder.exists() and not folder.parent.is_dir() and folder.parent not in folders:
            raise InputError(f"cannot make folder {folder}: {folder.parent} does not exist")
    def result_name(image: Path) -> str:
        return image.stem + ".tif"

    by_name: dict[str, Path] = {}
    for image in images:
        name = result_name(image)
        if name in by_name:
            raise InputError(f"{by_name[name]} and {image} would both be written as {name}; "
                             "rename one, or run them separately")
        by_name[name] = image

    def into(folder: Path | None, image: Path) -> Path | None:
        return None if folder is None else folder / result_name(image)

    items = [BatchItem(image, out / result_name(image), into(probabilities, image),
                       into(instances, image)) for image in images]
    inputs = {image.resolve() for image in images}
    for item in items:
        for path in item.outputs:
            if path.resolve() in inputs:
                raise InputError(f"the result for {item.image} would replace the image "
                                 f"{path}; choose another output folder")
    if overwrite:
        return items, []
    to_do: list[BatchItem] = []
    skipped: list[BatchItem] = []
    existing: list[Path] = []
    for item in items:
        present = [p for p in item.outputs if p.exists()]
        if skip_existing and len(present) == len(item.outputs):
            skipped.append(item)
        elif skip_existing and present:
            to_do.append(replace(item, redo=True))
        else:
            existing.extend(present)
            to_do.append(item)
    if existing:
        raise InputError(f"{len(existing)} result file(s) already exist ({existing[0]}"
                         f"{', ...' if len(existing) > 1 else ''}); use --overwrite to "
                         "replace them, or --skip-existing to keep them and do the rest")
    return to_do, skipped


def make_folders(out: Path, probabilities: Path | None = None,
                 instances: Path | None = None) -> None:
    """Make the output folders of a batch that do not exist yet, ``out`` first."""
    for folder in (out, probabilities, instances):
        if folder is not None:
            folder.mkdir(exist_ok=True)
