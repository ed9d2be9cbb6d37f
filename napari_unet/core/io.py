"""TIFF reading and writing, and the axis handling that goes with it.

Images come in with an axes string (``"YX"``, ``"YXC"``, ``"CYX"``, ...), taken from the
file's metadata via tifffile or given by the user, and are turned into the channel-first
layout the core works on. Masks go out ImageJ-compatible, in the smallest integer type that
holds the labels, so that Fiji opens them with the right shape and values.

Every write goes to a temporary file in the same folder and is then renamed over the
target, so a crash mid-write never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.errors import InputError

# tifffile's axis letters: S = samples (RGB), Q/I = unknown/sequence. We use C for channels.
_TIFFFILE_TO_OURS = {"S": "C"}
# Layouts this version can segment, mapped to the axes of their spatial part.
SUPPORTED_2D_AXES = ("YX", "CYX", "YXC")


@dataclass(frozen=True)
class ImageData:
    """An array and the meaning of its axes (letters from ``TZCYX``)."""

    data: np.ndarray
    axes: str

    def __post_init__(self) -> None:
        if len(self.axes) != self.data.ndim:
            raise InputError(
                f"axes {self.axes!r} do not match an image with {self.data.ndim} dimensions "
                f"(shape {self.data.shape})"
            )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    If the body raises (or the process dies), ``path`` is untouched and the temporary file
    is removed (or, after a hard kill, left as a hidden ``.tmp`` file beside it).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_output_path(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is set.

    Raises
    ------
    InputError
        If ``path`` exists and ``overwrite`` is false, or its folder does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another name or allow overwriting")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def read_tiff(path: str | os.PathLike[str], axes: str | None = None) -> ImageData:
    """Read the first image series of a TIFF with its axes.

    Parameters
    ----------
    path
        TIFF file.
    axes
        Override the axes found in the file (e.g. ``"CYX"``).

    Raises
    ------
    InputError
        If the file is missing, not a TIFF, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            found = series.axes
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise InputError(f"{path} is not a readable TIFF ({err})") from err
    if axes is None:
        axes = "".join(_TIFFFILE_TO_OURS.get(a, a) for a in found)
    return ImageData(np.asarray(data), axes.upper())


def to_channel_first_2d(image: ImageData) -> np.ndarray:
    """Return a 2D image as ``(C, Y, X)``.

    Raises
    ------
    InputError
        If the layout is not a (multichannel) 2D image.
    """
    data, axes = image.data, image.axes
    if data.ndim == 2 and axes != "YX":
        axes = "YX"  # a plain 2D array has no other sensible reading
    if axes == "YX":
        return data[np.newaxis]
    if axes == "CYX":
        return data
    if axes == "YXC":
        return np.moveaxis(data, -1, 0)
    raise InputError(
        f"the image has axes {axes} (shape {data.shape}); this version segments 2D images "
        f"with axes {', '.join(SUPPORTED_2D_AXES)}"
    )


def read_image_2d(path: str | os.PathLike[str], axes: str | None = None) -> np.ndarray:
    """Read a 2D (optionally multichannel) image as ``(C, Y, X)``."""
    return to_channel_first_2d(read_tiff(path, axes))


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label (strokes or mask) image; singleton axes are dropped.

    Raises
    ------
    InputError
        If the file is unreadable.
    """
    return np.squeeze(read_tiff(path).data)


def smallest_label_dtype(max_label: int) -> np.dtype:
    """uint8 or uint16 where the labels fit; float32 above that.

    ImageJ/Fiji have no 32-bit integer images; float32 holds every integer up to 2**24
    exactly and opens in Fiji as a 32-bit image.
    """
    if max_label < 2**8:
        return np.dtype(np.uint8)
    if max_label < 2**16:
        return np.dtype(np.uint16)
    if max_label < 2**24:
        return np.dtype(np.float32)
    raise InputError(f"label {max_label} is too large to store in an ImageJ TIFF")


def write_labels(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    *,
    axes: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label image as an ImageJ-compatible TIFF in the smallest fitting dtype.

    Parameters
    ----------
    path
        Target file.
    labels
        Non-negative integer labels, 2D (``YX``) or 3D (``ZYX`` by default).
    axes
        ImageJ axes, e.g. ``"YX"``, ``"ZYX"``, ``"TYX"``; defaults from the dimensionality.
    overwrite
        Replace an existing file.

    Raises
    ------
    InputError
        If the file exists (without ``overwrite``), or the labels are not integers >= 0.
    """
    path = check_output_path(path, overwrite)
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError("labels must not be negative")
    axes = axes or {2: "YX", 3: "ZYX", 4: "TZYX"}.get(labels.ndim, "")
    if len(axes) != labels.ndim:
        raise InputError(f"cannot write labels of shape {labels.shape} with axes {axes!r}")
    dtype = smallest_label_dtype(int(labels.max()) if labels.size else 0)
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, labels.astype(dtype, copy=False), imagej=True, metadata={"axes": axes}
        )
    return path


def write_probabilities(
    path: str | os.PathLike[str], probabilities: np.ndarray, *, overwrite: bool = False
) -> Path:
    """Write ``(K, Y, X)`` class probabilities as a float32 ImageJ stack with axes ``CYX``."""
    path = check_output_path(path, overwrite)
    axes = "CYX" if probabilities.ndim == 3 else "CZYX"
    # ImageJ orders hyperstacks TZCYX; move the class axis behind Z for 3D.
    data = probabilities if probabilities.ndim == 3 else np.moveaxis(probabilities, 0, 1)
    axes = axes if probabilities.ndim == 3 else "ZCYX"
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, data.astype(np.float32, copy=False), imagej=True, metadata={"axes": axes}
        )
    return path
