"""The chosen image layers' pixels at full resolution, read where they cannot freeze napari.

A pyramid (napari's ``multiscale``: OME-Zarr, whole-slide scans, pyramidal TIFFs) is shown
at the level that suits the zoom, and its ``layer.data`` is the list of levels: reading it
as one array gives the *smallest* level, which the annotations, painted at full
resolution, do not fit. Training and prediction use level 0, the full resolution, which
is also the shape napari reports for the layer.

A single layer's array is handed to the worker as it is, neither copied nor read here.
A copy on the GUI thread froze the window at Train (a 2 GiB stack: 6 s, session 27) and
doubled the memory a large stack takes; nothing of ours writes into an image, and napari
gives no way to paint on one. Lazy data (dask, zarr: chunks read from disk on demand) is
read by the worker: reading a large one takes seconds to minutes. The worker only reads,
so it may do so while napari draws the layer. Several layers used as channels are stacked
by the worker too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image

from napari_unet.core.memory_budget import array_bytes


def full_resolution(layer: Image) -> Any:
    """Return ``layer``'s pixels at full resolution: level 0 of a pyramid, else its data."""
    return layer.data[0] if layer.multiscale else layer.data


def downsampling(layer: Image) -> np.ndarray:
    """Per layer axis, how many full-resolution pixels one pixel of the level shown covers.

    napari gives a pyramid's ``corner_pixels`` in the level on screen: multiply them by
    this to find the full-resolution pixels in view. All ones for a single-level layer.
    """
    if not layer.multiscale:
        return np.ones(layer.ndim)
    return np.asarray(layer.downsample_factors[layer.data_level], dtype=float)


def in_memory(layer: Image) -> bool:
    """Whether ``layer``'s full-resolution pixels are a numpy array (not read lazily)."""
    return isinstance(full_resolution(layer), np.ndarray)


def bytes_added(layers: list[Image]) -> int:
    """Bytes a job adds to memory to have the chosen layers' full-resolution pixels.

    None for a single layer already in memory (the job reads it in place); otherwise the
    whole of them, all channels: lazy data is read into memory, layers used as channels
    are stacked into a new array.
    """
    if len(layers) == 1 and in_memory(layers[0]):
        return 0
    total = 0
    for layer in layers:
        data = full_resolution(layer)
        total += array_bytes(data.shape, data.dtype)
    return total


class ChannelStack:
    """Several lazy single-channel layers, stacked as channels (axis 0) when read.

    Has the ``shape``, ``dtype`` and ``ndim`` of the stack without reading it; numpy reads
    it (``np.asarray``), in the worker.
    """

    def __init__(self, channels: list[Any]) -> None:
        self._channels = channels
        self.shape = (len(channels), *channels[0].shape)
        self.dtype = np.result_type(*(np.dtype(c.dtype) for c in channels))
        self.ndim = len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        stacked = np.stack([np.asarray(c) for c in self._channels])
        return stacked if dtype is None else stacked.astype(dtype, copy=False)


def pixels_for_job(layers: list[Image]) -> Any:
    """Return the chosen layers' full-resolution pixels for a worker (channels first).

    One layer's array as it is (in memory or lazy); several layers as a
    :class:`ChannelStack`. Nothing is copied or read here: the worker reads them with
    ``np.asarray``.
    """
    data = [full_resolution(layer) for layer in layers]
    return ChannelStack(data) if len(data) > 1 else data[0]
