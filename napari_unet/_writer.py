"""npe2 writer: a Labels layer to an ImageJ-compatible TIFF (Fiji opens it as is)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.core.io import write_labels


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer; 2D as YX, 3D as a Z stack, 4D as TZYX.

    napari's save dialog has already asked the user before replacing an existing file, so
    this writer replaces it (atomically: a failed write leaves the old file intact).
    """
    labels = np.asarray(data)
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(labels.ndim)
    if axes is None:
        raise ValueError(f"cannot write {labels.ndim}D labels as an ImageJ TIFF")
    write_labels(path, labels, axes=axes, overwrite=True)
    return [path]
