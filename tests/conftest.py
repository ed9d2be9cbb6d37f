"""Shared fixtures: the committed sample data and small synthetic images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

# Two cores shared with Qt and Xvfb: more torch threads only oversubscribe.
torch.set_num_threads(1)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture(autouse=True)
def _private_autosave_folder(tmp_path_factory, monkeypatch):
    """Autosaves go to a fresh folder per test, never into the user's data folder."""
    monkeypatch.setenv("NAPARI_UNET_DATA_DIR", str(tmp_path_factory.mktemp("autosave")))


@pytest.fixture(scope="session")
def sample() -> dict[str, np.ndarray]:
    """The DSB2018 nuclei image, its painted strokes and its dense ground truth."""
    return {
        "image": tifffile.imread(SAMPLE_DIR / "nuclei2d.tif"),
        "strokes": tifffile.imread(SAMPLE_DIR / "nuclei2d_strokes.tif"),
        "truth": tifffile.imread(SAMPLE_DIR / "nuclei2d_truth.tif"),
    }


def make_blobs(shape: tuple[int, int] = (64, 64), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of bright squares on a dark background and its dense truth (0/1)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, dtype=np.uint8)
    for _ in range(max(2, shape[0] * shape[1] // 600)):
        y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        truth[y : y + 8, x : x + 8] = 1
    image = (truth * 150 + 40 + rng.normal(0, 10, shape)).clip(0, 255).astype(np.uint8)
    return image, truth


def strokes_from_truth(truth: np.ndarray, every: int = 7) -> np.ndarray:
    """Sparse strokes: every ``every``-th row painted with the true class (1 bg, 2 object)."""
    strokes = np.zeros(truth.shape, dtype=np.uint8)
    strokes[::every] = truth[::every] + 1
    return strokes


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, strokes, truth) of a small synthetic two-class problem."""
    image, truth = make_blobs()
    return image, strokes_from_truth(truth), truth
