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


def _image_with_strokes(
    stem: str, image_name: str, strokes_name: str, **layer_options: Any
) -> list[tuple[Any, dict[str, Any], str]]:
    """Read ``<stem>.tif`` and ``<stem>_strokes.tif`` as an image and a Labels layer."""
    folder = _sample_dir()
    image = tifffile.imread(folder / f"{stem}.tif")
    strokes = tifffile.imread(folder / f"{stem}_strokes.tif")
    names = default_class_names(2)
    return [
        (image, {"name": image_name, **layer_options}, "image"),
        (strokes, {"name": strokes_name, "metadata": {"class_names": names},
                   **layer_options}, "labels"),
    ]


def nuclei_with_strokes() -> list[tuple[Any, dict[str, Any], str]]:
    """Nuclei image (DSB2018, CC0) and its strokes: 1 = background, 2 = nucleus."""
    return _image_with_strokes("nuclei2d", "nuclei", "strokes")


def nuclei_3d_with_strokes() -> list[tuple[Any, dict[str, Any], str]]:
    """Load a 3D nuclei stack (ZYX) with strokes on three slices (2D-over-slices vs 3D)."""
    return _image_with_strokes("nuclei3d", "nuclei 3D", "strokes 3D",
                               axis_labels=("z", "y", "x"))
