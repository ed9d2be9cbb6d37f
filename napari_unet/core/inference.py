"""Tiled prediction for images of any size.

The image is padded once to a multiple of ``2**depth`` and cut into overlapping windows
whose starts are also multiples of ``2**depth`` (so every window's pooling grid lines up
with the whole image's). Each window keeps only its *core*; the surrounding *halo* is at
least the network's receptive-field radius and is cropped away. With the default
per-pixel normalisation, the result is therefore the same as predicting the whole image at
once: no seams, no blending needed. Memory is bounded by the tile, not the image, unless
per-class probabilities are requested.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.core.config import TileConfig
from napari_unet.core.device import autocast, autocast_dtype
from napari_unet.core.errors import InputError
from napari_unet.core.generators import run_to_end
from napari_unet.core.model import TrainedModel


@dataclass(frozen=True)
class Prediction:
    """Result of a prediction.

    Attributes
    ----------
    class_map
        Spatial array of label ids ``1..K`` (1 = background), matching the painted ids.
    probabilities
        ``(K, *spatial)`` float32 class probabilities (index ``k`` is id ``k + 1``), or
        ``None`` when not requested.
    """

    class_map: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class TileProgress:
    """Reported after every batch of tiles."""

    tiles_done: int
    tiles_total: int


@dataclass(frozen=True)
class _Window:
    window: tuple[slice, ...]  # what the network sees, in padded-image coordinates
    core: tuple[slice, ...]  # what is kept, in padded-image coordinates
    core_in_window: tuple[slice, ...]  # the same, relative to the window


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis_plan(
    size: int, tile: int, halo: int, multiple: int
) -> tuple[int, list[tuple[int, int, int]]]:
    """Window length and ``(window_start, core_start, core_stop)`` along one axis.

    Cores are spread evenly (rather than packed from the start, which leaves one window
    mostly overlapping its neighbour), so windows can be smaller than ``tile``.
    """
    if tile >= size:
        return size, [(0, 0, size)]
    count = -(-size // (tile - 2 * halo))
    core = _round_up(-(-size // count), multiple)
    window = min(core + 2 * halo, size)
    plan = []
    for core_start in range(0, size, core):
        core_stop = min(core_start + core, size)
        window_start = min(max(core_start - halo, 0), size - window)
        plan.append((window_start, core_start, core_stop))
    return window, plan


def plan_tiles(
    shape: tuple[int, ...], tile_size: int, halo: int, multiple: int
) -> tuple[tuple[int, ...], list[_Window]]:
    """Plan windows over a padded image of ``shape`` (each side a multiple of ``multiple``).

    Every window has the same shape (so they batch), starts on a multiple of ``multiple``
    and contains its core plus ``halo`` pixels of context on each side (or up to the image
    border). Returns the window shape and the windows; cores cover every pixel once.
    """
    halo = _round_up(halo, multiple)
    tile = max(_round_up(tile_size, multiple), 2 * halo + multiple)
    per_axis = [_axis_plan(s, tile, halo, multiple) for s in shape]
    tile_shape = tuple(length for length, _ in per_axis)
    windows = []
    for combo in itertools.product(*(plan for _, plan in per_axis)):
        window = tuple(slice(w, w + t) for (w, _, _), t in zip(combo, tile_shape))
        core = tuple(slice(c0, c1) for _, c0, c1 in combo)
        core_in_window = tuple(slice(c0 - w, c1 - w) for w, c0, c1 in combo)
        windows.append(_Window(window, core, core_in_window))
    return tile_shape, windows


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    pads = [(0, 0)] + [(0, (-s) % multiple) for s in image.shape[1:]]
    if not any(hi for _, hi in pads):
        return image
    mode = "reflect" if all(s > 1 for s in image.shape[1:]) else "edge"
    return np.pad(image, pads, mode=mode)


def as_model_input(model: TrainedModel, image: np.ndarray) -> np.ndarray:
    """Check an image against the model and return it channel-first.

    Parameters
    ----------
    image
        ``spatial`` (single channel) or ``(C, *spatial)``.

    Raises
    ------
    InputError
        If dimensionality or channel count does not fit the model.
    """
    sd = model.config.spatial_dims
    image = np.asarray(image)
    if image.ndim == sd:
        image = image[np.newaxis]
    if image.ndim != sd + 1:
        raise InputError(
            f"the model is {sd}D but the image has shape {tuple(image.shape)}"
        )
    if image.shape[0] != model.in_channels:
        raise InputError(
            f"the model was trained on {model.in_channels}-channel images but this image "
            f"has {image.shape[0]} channel(s)"
        )
    return image


def iter_predict(
    model: TrainedModel,
    image: np.ndarray,
    tiles: TileConfig | None = None,
    *,
    return_probabilities: bool = False,
    test_time_augmentation: bool = False,
    device: torch.device | None = None,
    mixed_precision: bool = True,
) -> Generator[TileProgress, None, Prediction]:
    """Predict tile by tile, yielding progress; the return value is the :class:`Prediction`.

    Parameters
    ----------
    model
        A trained model.
    image
        ``spatial`` or ``(C, *spatial)``, raw intensities (normalised here with the
        model's stored normalisation).
    tiles
        Tile size, halo and batch; defaults to :class:`TileConfig` defaults.
    return_probabilities
        Also return per-class probabilities (memory grows with the image).
    test_time_augmentation
        Average the probabilities of the 8 flips/90 degree rotations of the image: 8x the
        time, smoother and more accurate boundaries (see docs/benchmarks.md). Memory grows
        with the image.
    device
        Where to run; defaults to the device the network is on.
    mixed_precision
        Autocast to bf16/fp16 on CUDA.
    """
    tiles = tiles or TileConfig()
    network = model.network
    device = device or next(network.parameters()).device
    network = network.to(device).eval()
    amp = autocast_dtype(device, mixed_precision)
    image = as_model_input(model, image)
    spatial = image.shape[1:]
    m = model.config.size_multiple
    padded = _pad_to_multiple(model.normalization.apply(image), m)
    halo = tiles.halo if tiles.halo is not None else network.receptive_radius
    passes = _D4 if test_time_augmentation else _D4[:1]
    need_probabilities = return_probabilities or len(passes) > 1
    plans = [plan_tiles(_transformed_shape(padded.shape[1:], t), tiles.tile_size, halo, m)[1]
             for t in passes]
    total = sum(len(windows) for windows in plans)

    k = model.num_classes
    id_dtype = np.uint8 if k < 256 else np.uint16
    summed = np.zeros((k, *padded.shape[1:]), np.float32) if need_probabilities else None
    class_map = None
    done = 0
    for transform, windows in zip(passes, plans):
        view = _apply(padded, transform)
        # Per pass, either per-class probabilities or (cheaper) just the ids.
        out_probs = np.zeros((k, *view.shape[1:]), np.float32) if need_probabilities else None
        out_ids = None if need_probabilities else np.zeros(view.shape[1:], dtype=id_dtype)
        for batch in _batches(windows, tiles.batch_size):
            x = torch.from_numpy(np.stack([view[(slice(None), *w.window)] for w in batch]))
            with torch.inference_mode(), autocast(device, amp):
                probs = network(x.to(device)).float().softmax(dim=1)
            if out_probs is not None:
                probs_np = probs.cpu().numpy()
                for i, w in enumerate(batch):
                    out_probs[(slice(None), *w.core)] = probs_np[(i, slice(None),
                                                                  *w.core_in_window)]
            elif out_ids is not None:  # class map only: memory stays bounded by the tile
                ids_np = (probs.argmax(dim=1) + 1).to(torch.int32).cpu().numpy()
                for i, w in enumerate(batch):
                    out_ids[w.core] = ids_np[(i, *w.core_in_window)]
            done += len(batch)
            yield TileProgress(done, total)
        if summed is not None and out_probs is not None:
            summed += _invert(out_probs, transform)
        else:
            class_map = out_ids

    crop = tuple(slice(0, s) for s in spatial)
    probabilities = None
    if summed is not None:
        summed /= len(passes)
        class_map = (summed.argmax(axis=0) + 1).astype(id_dtype)
        if return_probabilities:
            probabilities = np.ascontiguousarray(summed[(slice(None), *crop)])
    assert class_map is not None
    return Prediction(np.ascontiguousarray(class_map[crop]), probabilities)


# Test-time augmentation: the 8 symmetries of the square (4 rotations x optional flip) in
# the last two axes. Each is applied to the whole padded image, so tiling stays exact.
_Transform = tuple[int, bool]
_D4: list[_Transform] = [(0, False), (1, False), (2, False), (3, False),
                         (0, True), (1, True), (2, True), (3, True)]


def _transformed_shape(shape: tuple[int, ...], transform: _Transform) -> tuple[int, ...]:
    if transform[0] % 2:
        return (*shape[:-2], shape[-1], shape[-2])
    return tuple(shape)


def _apply(image: np.ndarray, transform: _Transform) -> np.ndarray:
    rotations, flip = transform
    out = np.rot90(image, rotations, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def _invert(image: np.ndarray, transform: _Transform) -> np.ndarray:
    rotations, flip = transform
    if flip:
        image = image[..., ::-1]
    return np.rot90(image, -rotations, axes=(-2, -1))


def predict(
    model: TrainedModel,
    image: np.ndarray,
    tiles: TileConfig | None = None,
    *,
    return_probabilities: bool = False,
    test_time_augmentation: bool = False,
    device: torch.device | None = None,
    mixed_precision: bool = True,
) -> Prediction:
    """Predict a whole image; see :func:`iter_predict` for the parameters."""
    return run_to_end(iter_predict(
        model, image, tiles, return_probabilities=return_probabilities,
        test_time_augmentation=test_time_augmentation, device=device,
        mixed_precision=mixed_precision,
    ))


def _batches(items: list[_Window], size: int) -> Iterator[list[_Window]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
