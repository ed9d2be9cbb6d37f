"""Will an image fit? What a job holds in memory, against what the computer has free.

A whole-slide scan or a large stack opened lazily (a pyramid, zarr, dask) costs nothing
until it is read; reading it at full resolution for training or prediction can take more
memory than the computer has. On Linux the kernel then kills the largest process,
napari with everything the user has not saved; on macOS the machine swaps to a halt. So
the widget estimates what a job will hold before it reads anything, and refuses with a
message that says how much is needed and what would make it fit.

The figures were measured with ``tracemalloc`` (numpy's allocations; the CPU preset,
uint8 images, session 27). Per pixel, above the image itself: training held 2-3 bytes
(3072 x 3072: peak 5.7), prediction with confidence, its class map and the two layers
held 8.5 and peaked at 13 (1536 x 1536), splitting the class map into objects took
another 39-43 at its peak in 2D and 54 in 3D (32 x 256 x 256 nuclei; the distance
transform and seeds, in 64-bit), the instances layer 4 more. Independent of the
image's size: the normalisation's sample of up to 4 million values per channel (64 MiB
at its peak) and the tiles in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from napari_unet.core.axes import shape_without_channels
from napari_unet.core.errors import InputError

# Bytes per labels pixel, beyond the image read itself (see the module docstring).
JOB_BYTES_PER_PIXEL = 7  # training or prediction: strokes, class maps, the overlay
CONFIDENCE_BYTES_PER_PIXEL = 8  # float32 confidence, in the worker and in the layer
INSTANCES_BYTES_PER_PIXEL = 64  # splitting objects (3D the most), the int32 layer
# Whatever the image's size: the normalisation's sample, tiles and the network's buffers.
# benchmarks/bench_memory.py measured 137-184 MiB of working memory predicting with a 2D
# model and 0.9-1.4 GiB with a 3D one (its tiles are volumes).
FIXED_BYTES = 256 * 1024**2
FIXED_BYTES_3D = 1536 * 1024**2

GIB = 1024**3


def available_memory() -> int | None:
    """Return the memory the operating system can give without swapping, in bytes.

    ``MemAvailable`` of ``/proc/meminfo`` on Linux; ``psutil`` elsewhere when it is
    installed (napari depends on it); ``None`` when neither can tell.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in KiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # an unsupported platform: no estimate rather than no job
        return None


@dataclass(frozen=True)
class MemoryNeed:
    """What a job on one image will hold at its peak, in bytes, by part.

    ``confidence``, ``probabilities`` and ``instances`` are the optional outputs, which
    the user can leave out to make a job fit.
    """

    image: int
    job: int
    confidence: int = 0
    probabilities: int = 0
    instances: int = 0
    fixed: int = FIXED_BYTES

    @property
    def total(self) -> int:
        """The whole estimate, in bytes."""
        return (self.image + self.job + self.confidence + self.probabilities
                + self.instances + self.fixed)


def memory_need(image_bytes: int, label_pixels: int, *, confidence: bool = False,
                probability_classes: int = 0, instances: bool = False,
                volumetric: bool = False) -> MemoryNeed:
    """Estimate the peak memory of training or predicting one image.

    Parameters
    ----------
    image_bytes
        The image as read at full resolution (all channels), in bytes; 0 when it is held
        in memory already and not copied.
    label_pixels
        Pixels (voxels) of the labels: the image without its channel axis.
    confidence
        Whether a confidence map is made too.
    probability_classes
        The class count when every class's probability is kept whole (float32), else 0.
    instances
        Whether the class map is split into objects.
    volumetric
        Whether the model is a 3D one (whose tiles, volumes, need more working memory).

    Returns
    -------
    MemoryNeed
        The estimate, by part.
    """
    pixels = int(label_pixels)
    return MemoryNeed(
        image=int(image_bytes),
        job=JOB_BYTES_PER_PIXEL * pixels,
        confidence=CONFIDENCE_BYTES_PER_PIXEL * pixels if confidence else 0,
        probabilities=4 * int(probability_classes) * pixels,
        instances=INSTANCES_BYTES_PER_PIXEL * pixels if instances else 0,
        fixed=FIXED_BYTES_3D if volumetric else FIXED_BYTES,
    )


def check_memory(need: MemoryNeed, what: str, *, available: int | None = None,
                 remedies: Mapping[str, str] | None = None) -> None:
    """Refuse a job that would not fit in the memory the computer has free.

    Parameters
    ----------
    need
        From :func:`memory_need`.
    what
        The job and its image, for the message, e.g. ``"training on 'slide'"``.
    available
        Free memory in bytes; by default :func:`available_memory`. When it cannot be
        told, nothing is refused.
    remedies
        How the user leaves out each optional part (``"confidence"``,
        ``"probabilities"``, ``"instances"``) where they are: ``{"instances": "switch off
        the instances layer"}`` in napari, ``"leave out --instances"`` on the command line.

    Raises
    ------
    InputError
        If the estimate exceeds the memory available, saying what would make it fit.
    """
    if available is None:
        available = available_memory()
    if available is None or need.total <= available:
        return
    remedies = remedies or {}
    parts = sorted(((getattr(need, part), part) for part in remedies), reverse=True)
    hints = [f"{remedies[part]} ({_gib(size)} of it)" for size, part in parts if size]
    hints.append("crop the image to the part you need, or close other programs")
    raise InputError(
        f"{what} needs about {_gib(need.total)} of memory at full resolution and "
        f"{_gib(available)} is free: {'; '.join(hints)}"
    )


def array_bytes(shape: tuple[int, ...], dtype: np.dtype | type) -> int:
    """Return the bytes an array of ``shape`` and ``dtype`` holds, without reading it.

    For lazy arrays (dask, zarr, a file's header) whose ``nbytes`` may be missing or
    would read them; int64 so that a huge stack's pixel count does not overflow.
    """
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def check_before_reading(what: str, *, volumetric: bool, probability_classes: int = 0,
                         instances: bool = False,
                         remedies: Mapping[str, str] | None = None
                         ) -> Callable[[tuple[int, ...], np.dtype, str], None]:
    """Return a check for a file's header that refuses a job too large for memory.

    For :func:`~napari_unet.core.io.read_tiff`'s ``before_reading``: a whole-slide scan
    or a long stack read whole can take more than the machine has free, and the system
    would then kill the run without a word of why. ``what`` names the job and its file
    in the message; the other parameters are :func:`memory_need`'s and
    :func:`check_memory`'s.
    """
    def check(shape: tuple[int, ...], dtype: np.dtype, axes: str) -> None:
        pixels = int(np.prod(shape_without_channels(shape, axes), dtype=np.int64))
        need = memory_need(array_bytes(shape, dtype), pixels,
                           probability_classes=probability_classes, instances=instances,
                           volumetric=volumetric)
        check_memory(need, what, remedies=remedies)

    return check


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.0f} MiB"

