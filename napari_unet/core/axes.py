"""What the axes of an image mean, and the two views of it the model works on.

Images arrive with an *axes string*: one letter per array dimension from ``T`` (time),
``C`` (channel), ``Z``, ``Y`` and ``X``, e.g. ``"ZYX"``, ``"TCYX"`` or ``"YXC"`` (RGB).
Labels (strokes, predictions) have the same axes without ``C``.

Internally every image is brought to the canonical order ``(T, C, Z, Y, X)`` (missing axes
get length 1) and every label array to ``(T, Z, Y, X)``. A :class:`SampleStack` then presents
it as independent *samples* for a 2D or a 3D model:

- ``mode="2d"``: every ``(t, z)`` plane is a sample of shape ``(C, Y, X)``, or, with Z
  context ``k``, ``(C * (2k + 1), Y, X)``: the plane and its ``k`` neighbours on each side;
- ``mode="3d"``: every frame ``t`` is a sample of shape ``(C, Z, Y, X)``.

Samples are views, never copies, so a large time-lapse is not duplicated in memory (with
Z context, a sample is a copy of its ``2k + 1`` planes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from napari_unet.core.errors import InputError

Mode = Literal["2d", "3d"]
MODE_CHOICES: tuple[str, ...] = get_args(Mode)
CANONICAL_IMAGE = "TCZYX"
CANONICAL_LABELS = "TZYX"
# Letters other tools write for the same meaning (tifffile: S = RGB samples, Q/I = unknown).
_ALIASES = {"S": "C"}


def parse_axes(axes: str) -> str:
    """Validate an axes string and return it upper-case with aliases resolved.

    Raises
    ------
    InputError
        For letters outside ``TCZYX``, repeated letters, or no ``Y``/``X``.
    """
    text = "".join(_ALIASES.get(a, a) for a in axes.strip().upper())
    unknown = sorted(set(text) - set(CANONICAL_IMAGE))
    if unknown:
        raise InputError(
            f"axes {axes!r}: unknown letter(s) {', '.join(unknown)}; use T (time), C "
            "(channel), Z, Y and X, e.g. ZYX, TYX, CYX or YXC"
        )
    if len(set(text)) != len(text):
        raise InputError(f"axes {axes!r}: each letter may appear only once")
    if not text.endswith(("YX", "YXC")) or "Y" not in text:
        raise InputError(
            f"axes {axes!r}: the last axes must be Y and X (optionally followed by C, as in "
            "RGB images)"
        )
    return text


def label_axes(image_axes: str) -> str:
    """Axes of the labels that go with an image: the image's axes without ``C``."""
    return parse_axes(image_axes).replace("C", "")


def shape_without_channels(image_shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """Return the labels' shape for an image of ``image_shape`` with ``axes`` (no ``C``)."""
    return tuple(s for s, a in zip(image_shape, axes) if a != "C")


def check_axes(shape: tuple[int, ...], axes: str, what: str = "the image") -> str:
    """Check that ``axes`` fits an array of ``shape``; return the parsed axes.

    Raises
    ------
    InputError
        If the number of letters differs from the number of dimensions.
    """
    parsed = parse_axes(axes)
    if len(parsed) != len(shape):
        raise InputError(
            f"{what} has {len(shape)} dimensions (shape {tuple(shape)}) but the axes "
            f"{parsed} name {len(parsed)}"
        )
    return parsed


def infer_axes(shape: tuple[int, ...], *, rgb: bool = False, found: str | None = None) -> str:
    """Guess the axes of an array; the caller should say what it chose.

    Parameters
    ----------
    shape
        Array shape.
    rgb
        The last axis holds colour channels (napari's ``rgb`` flag).
    found
        Axes recorded in the file (tifffile's ``series.axes``); used where its letters are
        meaningful, with unknown letters (``Q``, ``I``) read as ``Z`` or ``T``.

    Raises
    ------
    InputError
        If there are more than 5 dimensions (after squeezing the guess cannot be made).
    """
    ndim = len(shape)
    if found is not None and len(found) == ndim:
        letters = [_ALIASES.get(a, a) for a in found.upper()]
        # tifffile names a plain stack Q/I (unknown): read it as Z, a second one as T.
        unknown = [i for i, a in enumerate(letters) if a not in CANONICAL_IMAGE]
        spare = [a for a in "ZT" if a not in letters]
        for i in unknown:
            letters[i] = spare.pop(0) if spare else "?"
        guess = "".join(letters)
        try:
            return parse_axes(guess)
        except InputError:
            pass  # fall back to the shape-based guess
    if rgb or (ndim >= 3 and shape[-1] in (3, 4) and shape[-2] > 4 and shape[-3] > 4):
        spatial = ndim - 1
        lead = {2: "", 3: "Z", 4: "TZ"}.get(spatial)
        if lead is None:
            raise InputError(f"cannot guess the axes of an RGB image of shape {tuple(shape)}")
        return lead + "YXC"
    guesses = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}
    if ndim not in guesses:
        raise InputError(
            f"cannot use an image with {ndim} dimensions (shape {tuple(shape)}); supported "
            "are up to 5: T, Z, C, Y, X"
        )
    return guesses[ndim]


def to_canonical(image: np.ndarray, axes: str) -> np.ndarray:
    """Return ``image`` as ``(T, C, Z, Y, X)`` (a view where numpy can make one).

    Raises
    ------
    InputError
        If ``axes`` do not fit, or the pixels are not real numbers (complex pixels would
        lose their imaginary part without a word).
    """
    axes = check_axes(image.shape, axes)
    check_pixel_type(image.dtype)
    return _reorder(image, axes, CANONICAL_IMAGE)


def check_pixel_type(dtype: np.dtype | type, what: str = "the image") -> None:
    """Refuse pixels that are not real numbers (booleans, integers, floats).

    Raises
    ------
    InputError
        For complex pixels (their imaginary part would be dropped without a word) and
        anything not numeric, naming ``what``.
    """
    kind = np.dtype(dtype).kind
    if kind == "c":
        raise InputError(f"{what} has complex pixels; convert it to real values first "
                         "(the magnitude or the phase)")
    if kind not in "biuf":
        raise InputError(f"{what}'s pixels must be numbers, got dtype {np.dtype(dtype)}")


def labels_to_canonical(labels: np.ndarray, axes: str) -> np.ndarray:
    """Return labels with axes ``axes`` (no ``C``) as ``(T, Z, Y, X)``."""
    axes = check_axes(labels.shape, axes, "the labels")
    if "C" in axes:
        raise InputError("labels have no channel axis; drop C from their axes")
    return _reorder(labels, axes, CANONICAL_LABELS)


def labels_from_canonical(labels: np.ndarray, axes: str) -> np.ndarray:
    """Inverse of :func:`labels_to_canonical`: ``(T, Z, Y, X)`` back to ``axes``."""
    order = [a for a in CANONICAL_LABELS if a in axes]
    squeezed = labels.reshape([labels.shape[CANONICAL_LABELS.index(a)] for a in order])
    return np.transpose(squeezed, [order.index(a) for a in axes])


def _reorder(array: np.ndarray, axes: str, target: str) -> np.ndarray:
    present = [a for a in target if a in axes]
    moved = np.transpose(array, [axes.index(a) for a in present])
    return moved.reshape([array.shape[axes.index(a)] if a in axes else 1 for a in target])


def region_to_canonical(region: tuple[slice, ...] | None, axes: str,
                        shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Map slices over label ``axes`` to slices over ``(T, Z, Y, X)``, clipped to ``shape``.

    ``shape`` is the canonical label shape. ``None`` (or a missing axis) means everything.
    """
    by_axis = dict(zip(axes, region)) if region is not None else {}
    out = []
    for a, size in zip(CANONICAL_LABELS, shape):
        sl = by_axis.get(a, slice(None))
        start = min(max(sl.start or 0, 0), size - 1)
        stop = min(max(sl.stop if sl.stop is not None else size, start + 1), size)
        out.append(slice(start, stop))
    return tuple(out)


def region_from_canonical(region: tuple[slice, ...], axes: str) -> tuple[slice, ...]:
    """Map ``(T, Z, Y, X)`` slices back to slices over label ``axes``."""
    by_axis = dict(zip(CANONICAL_LABELS, region))
    return tuple(by_axis[a] for a in axes)


@dataclass(frozen=True)
class SampleStack:
    """An image and (optionally) its labels, seen as independent samples for one model.

    Parameters
    ----------
    image
        Canonical ``(T, C, Z, Y, X)`` image.
    mode
        ``"2d"``: one sample per ``(t, z)`` plane; ``"3d"``: one sample per frame.
    z_context
        In 2D mode, neighbouring planes on each side added to each sample as channels
        (channel ``c``'s planes ``z - k .. z + k`` become channels ``c * (2k + 1) ..``);
        planes beyond the ends of the stack repeat the end plane.
    """

    image: np.ndarray
    mode: Mode
    z_context: int = 0

    def __post_init__(self) -> None:
        if self.image.ndim != 5:
            raise InputError("a SampleStack needs a canonical (T, C, Z, Y, X) image")
        if self.mode not in MODE_CHOICES:
            raise InputError(f"mode must be '2d' or '3d', got {self.mode!r}")
        if self.z_context < 0 or (self.z_context and self.mode == "3d"):
            raise InputError("Z context is a number >= 0, for 2D mode only")

    @property
    def num_channels(self) -> int:
        """Channels of the image (a sample has this times :attr:`planes_per_sample`)."""
        return int(self.image.shape[1])

    @property
    def planes_per_sample(self) -> int:
        """Planes stacked per image channel in each sample: 1, or ``2k + 1`` with Z context."""
        return 2 * self.z_context + 1

    @property
    def label_shape(self) -> tuple[int, int, int, int]:
        """Canonical ``(T, Z, Y, X)`` shape of the labels."""
        t, _, z, y, x = self.image.shape
        return (t, z, y, x)

    @property
    def spatial_dims(self) -> int:
        """2 or 3: what the model sees of each sample."""
        return 2 if self.mode == "2d" else 3

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Spatial shape of one sample."""
        return self.label_shape[2:] if self.mode == "2d" else self.label_shape[1:]

    @property
    def num_samples(self) -> int:
        """Number of samples: ``T * Z`` planes in 2D mode, ``T`` frames in 3D mode."""
        t, z = self.label_shape[:2]
        return t * z if self.mode == "2d" else t

    def sample(self, index: int) -> np.ndarray:
        """Return sample ``index`` with all its channels.

        A ``(C, *sample_shape)`` view, or with Z context a ``(C * planes_per_sample, Y, X)``
        array.
        """
        return self.read(index, (slice(None),) * self.spatial_dims)

    def read(self, index: int, window: tuple[slice, ...]) -> np.ndarray:
        """Return ``window`` (spatial slices) of sample ``index``, all its channels.

        A view without Z context; with it, only the window of each stacked plane is
        copied, not whole planes.
        """
        t, z = self.sample_position(index)
        if self.mode == "3d":
            return self.image[t][(slice(None), *window)]
        if not self.z_context:
            return self.image[t, :, z][(slice(None), *window)]
        depth = self.image.shape[2]
        planes = np.clip(np.arange(z - self.z_context, z + self.z_context + 1), 0, depth - 1)
        # (C, planes, *window), channel-major like Normalization.per_plane
        stacked = self.image[t][(slice(None), planes, *window)]
        return stacked.reshape((-1, *stacked.shape[2:]))

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> np.ndarray:
        return self.sample(int(index))

    def sample_position(self, index: int) -> tuple[int, int]:
        """``(t, z)`` of a sample; ``z`` is 0 in 3D mode."""
        if self.mode == "2d":
            return divmod(index, self.label_shape[1])
        return index, 0

    def label_samples(self, labels: np.ndarray) -> np.ndarray:
        """Canonical ``(T, Z, Y, X)`` labels as ``(N, *sample_shape)`` (a view)."""
        if tuple(labels.shape) != self.label_shape:
            raise InputError(
                f"labels of canonical shape {tuple(labels.shape)} do not match the image's "
                f"{self.label_shape}"
            )
        return labels.reshape((self.num_samples, *self.sample_shape))

    def samples_in(self, region: tuple[slice, ...]) -> Iterator[tuple[int, tuple[slice, ...]]]:
        """Iterate over the samples a canonical label ``region`` touches.

        Yields
        ------
        tuple[int, tuple[slice, ...]]
            Sample index and spatial slices within that sample.
        """
        t_sl, z_sl = region[0], region[1]
        if self.mode == "2d":
            z_count = self.label_shape[1]
            for t in range(t_sl.start, t_sl.stop):
                for z in range(z_sl.start, z_sl.stop):
                    yield t * z_count + z, region[2:]
        else:
            for t in range(t_sl.start, t_sl.stop):
                yield t, region[1:]


def pair_axes(image_shape: tuple[int, ...], labels_shape: tuple[int, ...],
              axes: str | None = None) -> str:
    """Return the image's axes, checked against its labels (which lack only ``C``).

    Without ``axes``, the labels' dimensionality decides (``YX``, ``ZYX``, ``TZYX``) and an
    image with one more axis than its labels has channels first (``CYX``) or, RGB-style,
    last (``YXC``).

    Raises
    ------
    InputError
        If image and labels do not cover the same pixels.
    """
    image_shape, labels_shape = tuple(image_shape), tuple(labels_shape)
    mismatch = InputError(
        f"the image has shape {image_shape} but the labels have shape {labels_shape}; "
        "they must cover the same pixels (the labels without the image's channel axis)"
    )
    if axes is None:
        guesses = {2: "YX", 3: "ZYX", 4: "TZYX"}
        if len(labels_shape) not in guesses:
            raise InputError(f"labels of shape {labels_shape}: give the axes explicitly")
        lab = guesses[len(labels_shape)]
        if image_shape == labels_shape:
            axes = lab
        elif len(image_shape) == len(labels_shape) + 1 and image_shape[1:] == labels_shape:
            axes = "C" + lab
        elif len(image_shape) == len(labels_shape) + 1 and image_shape[:-1] == labels_shape:
            axes = lab + "C"
        else:
            raise mismatch
    axes = check_axes(image_shape, axes)
    if shape_without_channels(image_shape, axes) != labels_shape:
        raise mismatch
    return axes


def default_mode(label_shape: tuple[int, int, int, int], anisotropy: float = 1.0) -> Mode:
    """Choose the mode when the user does not: a 2D model over slices.

    Measured (docs/benchmarks.md, "Stacks", 3D nuclei stack, strokes on 3 slices, 2 CPU
    cores, one seed): after 60 s, the time scale of interactive use, the 2D model is ahead
    (foreground IoU 0.49 vs 0.35: the 3D model trains ~8x fewer steps per second); after
    300 s the 3D model is (0.57 vs 0.45). 3D stays one click away for data where context
    across many slices decides. The arguments are kept for a rule that may use them once
    GPU figures exist.
    """
    del label_shape, anisotropy
    return "2d"


def mode_for_spatial_dims(spatial_dims: int) -> Mode:
    """``"2d"`` for a 2D network, ``"3d"`` for a 3D one."""
    return "2d" if spatial_dims == 2 else "3d"
