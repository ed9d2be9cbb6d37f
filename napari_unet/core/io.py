"""TIFF reading and writing, and the axis handling that goes with it.

Images come in with an axes string (``"YX"``, ``"ZYX"``, ``"TCYX"``, ``"YXC"``, ...),
taken from the file's metadata via tifffile, given by the user, or guessed from the shape
(see :mod:`napari_unet.core.axes`). Masks go out ImageJ-compatible, in the smallest integer
type that holds the labels, so that Fiji opens them with the right shape and values.

Every write goes to a temporary file in the same folder and is then renamed over the
target, so a crash mid-write never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.axes import check_axes, check_pixel_type, infer_axes
from napari_unet.core.errors import InputError, NapariUnetError


@dataclass(frozen=True)
class ImageData:
    """An array, the meaning of its axes (letters from ``TCZYX``), and how they were found.

    Attributes
    ----------
    data
        The pixels.
    axes
        One letter per dimension, e.g. ``"ZYX"``.
    axes_source
        ``"given"``, ``"file"`` (from the TIFF's metadata) or ``"guessed"`` (from the
        shape): the CLI tells the user when it guessed.
    anisotropy
        Z spacing over X spacing from ImageJ metadata, when the file records both.
    """

    data: np.ndarray
    axes: str
    axes_source: str = "given"
    anisotropy: float | None = None

    def __post_init__(self) -> None:
        check_axes(self.data.shape, self.axes)

@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    If the body raises (or the process dies), ``path`` is untouched and the temporary file
    is removed (or, after a hard kill, left as a hidden ``.tmp`` file beside it).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = _new_file_beside(path)
    try:
        yield tmp
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file_beside(path: Path) -> Path:
    """Create an empty, hidden, uniquely named file in ``path``'s folder, as any new file is.

    Not ``tempfile.mkstemp``: it makes files only their owner may read (0600), and the
    rename would hand that on to the user's masks and models, which the rest of a lab
    could then not open on a shared server. Created with 0666, the umask decides, as for
    any file the user's other programs write.
    """
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def _keep_mode(path: Path, tmp: Path) -> None:
    """Give ``tmp`` the permissions of the file it replaces, if there is one.

    Overwriting a mask a colleague may edit (group-writable, say) keeps it so. Where the
    file system cannot say or set them, the new file keeps its own.
    """
    with contextlib.suppress(OSError):
        shutil.copymode(path, tmp)


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


def read_tiff(
    path: str | os.PathLike[str],
    axes: str | None = None,
    before_reading: Callable[[tuple[int, ...], np.dtype, str], None] | None = None,
) -> ImageData:
    """Read the first image series of a TIFF with its axes.

    Parameters
    ----------
    path
        TIFF file.
    axes
        The axes (e.g. ``"CYX"``, ``"TYX"``); ``None`` takes them from the file's metadata
        where it has meaningful ones and guesses from the shape otherwise (a 3D array is
        read as ``ZYX``, a trailing axis of 3 or 4 as RGB channels).
    before_reading
        Called with the pixels' shape, dtype and axes once they are known from the file's
        header, before the pixels are read: it may refuse, e.g. an image too large for
        memory (:func:`~napari_unet.core.memory_budget.check_memory`).

    Raises
    ------
    InputError
        If the file is missing, not a TIFF, unreadable, has complex pixels, or ``axes``
        does not fit it; and whatever ``before_reading`` raises.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_pixel_type(series.dtype, str(path))
            shape = tuple(series.shape)
            image_axes, source = _tiff_axes(tif, series, shape, axes, str(path))
            anisotropy = _imagej_anisotropy(tif)
            if before_reading is not None:
                before_reading(shape, series.dtype, image_axes)
            data = np.asarray(series.asarray())
    except NapariUnetError:
        raise  # already says what is wrong (an InputError is a ValueError too)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise InputError(f"{path} is not a readable TIFF ({err})") from err
    return ImageData(data, image_axes, source, anisotropy)


def _tiff_axes(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries,
               shape: tuple[int, ...], axes: str | None, name: str) -> tuple[str, str]:
    """Return the pixels' axes and where they came from ("given", "file", "guessed")."""
    if axes is not None:
        return check_axes(shape, axes, name), "given"
    found = series.axes
    # Only ImageJ and OME files record what their axes mean. Elsewhere tifffile invents
    # letters (S for any short first axis, Q for unknown), and only an RGB photometric
    # says the samples are colours.
    if (tif.is_imagej or tif.is_ome) and all(a in "TCZYXS" for a in found):
        return infer_axes(shape, found=found), "file"
    if series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB and found.endswith("YXS"):
        return infer_axes(shape, rgb=True), "file"
    return infer_axes(shape), "guessed"


def _imagej_anisotropy(tif: tifffile.TiffFile) -> float | None:
    """Z spacing / X pixel size from ImageJ metadata, or ``None`` if not recorded."""
    meta = tif.imagej_metadata or {}
    z = meta.get("spacing")
    tag = tif.pages[0].tags.get("XResolution")
    if not z or tag is None:
        return None
    numerator, denominator = tag.value
    if not numerator or not denominator:
        return None
    x = denominator / numerator  # the tag holds pixels per unit
    return float(z) / x if x > 0 else None


def read_labels(
    path: str | os.PathLike[str], shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Read a label image (strokes or a mask).

    Parameters
    ----------
    path
        TIFF file.
    shape
        The expected shape (the image's without channels). Length-1 axes that one side has
        and the other lacks are reconciled (tools differ in writing them).

    Raises
    ------
    InputError
        If the file is unreadable or its pixels cannot have ``shape``.
    """
    data = read_tiff(path).data
    if shape is None:
        return np.squeeze(data)
    fitted = fit_length_one_axes(data, shape)
    if fitted is None:
        raise InputError(
            f"{path} has shape {data.shape} but the image's labels need {tuple(shape)}"
        )
    return fitted


def fit_length_one_axes(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Return ``data`` with ``shape`` if they differ only in length-1 axes, else ``None``.

    Tools differ in writing such axes (a 2D image saved as ``1 x Y x X``); any other
    difference, a transposed image among them, is not the same pixels.
    """
    if tuple(data.shape) == tuple(shape):
        return data
    if [s for s in data.shape if s != 1] != [s for s in shape if s != 1]:
        return None
    return data.reshape(shape)


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
    if len(axes) != labels.ndim or "C" in axes:
        raise InputError(f"cannot write labels of shape {labels.shape} with axes {axes!r}")
    labels, axes = _imagej_order(labels, check_axes(labels.shape, axes))
    dtype = smallest_label_dtype(int(labels.max()) if labels.size else 0)
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, labels.astype(dtype, copy=False), imagej=True, metadata={"axes": axes}
        )
    return path


def _imagej_order(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Transpose to ImageJ's hyperstack order (T, Z, C, Y, X); Fiji expects no other."""
    order = "".join(a for a in "TZCYX" if a in axes)
    return np.transpose(data, [axes.index(a) for a in order]), order


def write_probabilities(
    path: str | os.PathLike[str],
    probabilities: np.ndarray,
    *,
    axes: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``(K, *labels)`` class probabilities as a float32 ImageJ hyperstack.

    The class axis becomes ImageJ's channel axis. ``axes`` are the labels' axes (default
    ``YX`` or ``ZYX`` by dimensionality).
    """
    path = check_output_path(path, overwrite)
    axes = axes or {3: "YX", 4: "ZYX"}.get(probabilities.ndim, "")
    data, order = _imagej_order(probabilities, check_axes(probabilities.shape, "C" + axes))
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, data.astype(np.float32, copy=False), imagej=True, metadata={"axes": order}
        )
    return path
