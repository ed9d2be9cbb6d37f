"""Rebuild the sample data from the stardist wheel (run once; the outputs are committed).

    pip download --no-deps stardist -d /tmp/wheels
    python sample_data/make_sample.py /tmp/wheels/stardist-*.whl

Writes ``nuclei2d.tif`` (the image), ``nuclei2d_truth.tif`` (dense instance ground truth)
and ``nuclei2d_strokes.tif`` (a handful of brush strokes painted the way a person would:
a line through some nuclei, label 2, and short background strokes, label 1, both around
nuclei and in empty space). The strokes are generated, seeded, from the ground truth so the
sample is reproducible; see ``SOURCE.md`` for the data's origin and licence.
"""

from __future__ import annotations

import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

HERE = Path(__file__).parent
BRUSH_RADIUS = 1  # a 3-pixel-wide brush


def _brush(mask_shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Rasterise a polyline of (y, x) points with a round brush."""
    canvas = np.zeros(mask_shape, dtype=bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
        ys = np.rint(np.linspace(y0, y1, n)).astype(int)
        xs = np.rint(np.linspace(x0, x1, n)).astype(int)
        ok = (ys >= 0) & (ys < mask_shape[0]) & (xs >= 0) & (xs < mask_shape[1])
        canvas[ys[ok], xs[ok]] = True
    return ndi.binary_dilation(canvas, iterations=BRUSH_RADIUS)


def paint_strokes(
    truth: np.ndarray, n_objects: int, n_background: int, seed: int
) -> np.ndarray:
    """Simulate a person painting: strokes through objects and around/between them."""
    rng = np.random.default_rng(seed)
    strokes = np.zeros(truth.shape, dtype=np.uint8)
    ids = np.unique(truth)[1:]
    foreground = truth > 0
    # Background strokes keep a gap of 2 px to any nucleus, as a careful painter would.
    safe_background = ~ndi.binary_dilation(foreground, iterations=2 + BRUSH_RADIUS)

    for obj in rng.choice(ids, size=min(n_objects, ids.size), replace=False):
        inside = ndi.binary_erosion(truth == obj, iterations=BRUSH_RADIUS + 1)
        if inside.sum() < 4:
            inside = truth == obj
        ys, xs = np.nonzero(inside)
        # A line along the object's long axis, as one drags the brush across a nucleus.
        centre = np.array([ys.mean(), xs.mean()])
        cov = np.cov(np.stack([ys, xs]))
        axis = np.linalg.eigh(cov)[1][:, -1]
        half = 0.6 * np.sqrt(max(np.linalg.eigh(cov)[0][-1], 1.0)) * 1.7
        line = _brush(truth.shape, np.array([centre - half * axis, centre + half * axis]))
        strokes[line & inside] = 2

    placed = 0
    for _ in range(200 * n_background):
        if placed >= n_background:
            break
        if placed % 2 == 0:
            # An arc hugging a nucleus: teaches where an object ends.
            obj = rng.choice(ids)
            ring = ndi.binary_dilation(truth == obj, iterations=5) & safe_background
            ys, xs = np.nonzero(ring)
            if ys.size < 10:
                continue
            cy, cx = ys.mean(), xs.mean()
            angle = np.arctan2(ys - cy, xs - cx)
            start = rng.uniform(-np.pi, np.pi)
            sector = np.abs(np.angle(np.exp(1j * (angle - start)))) < 0.9
            stroke = np.zeros(truth.shape, dtype=bool)
            stroke[ys[sector], xs[sector]] = True
            stroke = ndi.binary_dilation(stroke, iterations=BRUSH_RADIUS)
        else:
            # A short free stroke through empty space.
            y, x = rng.uniform(0, truth.shape[0]), rng.uniform(0, truth.shape[1])
            steps = rng.normal(0, 8, size=(4, 2)).cumsum(axis=0)
            stroke = _brush(truth.shape, np.array([y, x]) + np.vstack([[0, 0], steps]))
        stroke &= safe_background & (strokes == 0)
        if stroke.sum() < 15:
            continue
        strokes[stroke] = 1
        placed += 1
    return strokes


def main(wheel: str) -> None:
    """Extract image and truth from the wheel, paint strokes, write the three TIFFs."""
    with zipfile.ZipFile(wheel) as zf:
        image = tifffile.imread(BytesIO(zf.read("stardist/data/images/img2d.tif")))
        truth = tifffile.imread(BytesIO(zf.read("stardist/data/images/mask2d.tif")))
    strokes = paint_strokes(truth, n_objects=10, n_background=10, seed=2)
    tifffile.imwrite(HERE / "nuclei2d.tif", image.astype(np.uint8), imagej=True,
                     metadata={"axes": "YX"})
    tifffile.imwrite(HERE / "nuclei2d_truth.tif", truth.astype(np.uint16), imagej=True,
                     metadata={"axes": "YX"})
    tifffile.imwrite(HERE / "nuclei2d_strokes.tif", strokes, imagej=True,
                     metadata={"axes": "YX"})
    counts = np.bincount(strokes.ravel(), minlength=3)
    print(f"image {image.shape} {image.dtype}, {len(np.unique(truth)) - 1} nuclei; "
          f"painted pixels: background {counts[1]}, nuclei {counts[2]}")


if __name__ == "__main__":
    main(sys.argv[1])
