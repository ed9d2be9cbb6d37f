"""npe2 sample data: the nuclei image with a handful of painted strokes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tifffile

from napari_unet.core.labels import default_class_names


def _sample_dir() -> Path:
    # Installed wheels carry the files inside the package; a source checkout has them at the
    # top level (see pyproject's force-include).
    packaged = Path(__file__).parent / "sample_data"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "sample_data"


def nuclei_with_strokes() -> list[tuple[Any, dict[str, Any], str]]:
    """Nuclei image (DSB2018, CC0) and its strokes: 1 = background, 2 = nucleus."""
    folder = _sample_dir()
    image = tifffile.imread(folder / "nuclei2d.tif")
    strokes = tifffile.imread(folder / "nuclei2d_strokes.tif")
    names = default_class_names(2)
    return [
        (image, {"name": "nuclei"}, "image"),
        (strokes, {"name": "strokes", "metadata": {"class_names": names}}, "labels"),
    ]


def nuclei_3d_with_strokes() -> list[tuple[Any, dict[str, Any], str]]:
    """Load a 3D nuclei stack (ZYX) with strokes on three slices (2D-over-slices vs 3D)."""
    folder = _sample_dir()
    image = tifffile.imread(folder / "nuclei3d.tif")
    strokes = tifffile.imread(folder / "nuclei3d_strokes.tif")
    names = default_class_names(2)
    return [
        (image, {"name": "nuclei 3D", "axis_labels": ("z", "y", "x")}, "image"),
        (strokes, {"name": "strokes 3D", "metadata": {"class_names": names},
                   "axis_labels": ("z", "y", "x")}, "labels"),
    ]
