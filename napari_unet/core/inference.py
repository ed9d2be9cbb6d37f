"""Tiled prediction for images of any size.

Stacks are predicted sample by sample (plane by plane for a 2D model, frame by frame for
a 3D one; see :mod:`napari_unet.core.axes`). Each sample is padded once to the model's
size multiple and cut into overlapping windows whose starts are also multiples of it
(so every window's pooling grid lines up with the whole image's). Each window keeps only
its *core*; the surrounding *halo* is at least the network's receptive-field radius and
is cropped away. With the default
per-pixel normalisation, the result is therefore the same as predicting the whole image at
once: no seams, no blending needed. Memory is bounded by the tile, not the image, unless
per-class probabilities are requested.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from napari_unet.core.axes import (
    SampleStack,
    check_axes,
    infer_axes,
    label_axes,
    labels_from_canonical,
    mode_for_spatial_dims,
    region_to_canonical,
    to_canonical,
)
from napari_unet.core.config import TileConfig
from napari_unet.core.device import autocast, autocast_dtype
from napari_unet.core.errors import InputError
from napari_unet.core.generators import run_to_end
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization

_R = TypeVar("_R")


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
    """Reported after every batch of tiles.

    ``notice`` tells the user about a change of plan, e.g. a GPU out of memory.
    """

    tiles_done: int
    tiles_total: int
    notice: str = ""


@dataclass
class DeviceLimits:
    """What out-of-memory errors taught about the device, shared by the parts of one job.

    A job predicted in many parts (view first, block by block) would otherwise learn
    again in every part that the GPU is full: each part would first fail, then tell the
    user again, and make another CPU copy of the network.

    Attributes
    ----------
    max_batch
        Most windows per forward pass that fit; ``None`` until a pass did not fit.
    on_cpu
        Not even one window fit: predict on the CPU.
    device
        The type of the device that ran out of memory, as torch names it (``"cuda"``).
    """

    max_batch: int | None = None
    on_cpu: bool = False
    device: str = ""

    def describe(self) -> str:
        """Say what was learnt, for the user ("" when nothing)."""
        if self.on_cpu:
            return (f"{self.device.upper()} out of memory even for one tile: predicting on "
                    "the CPU (slower)")
        if self.max_batch is not None:
            return (f"{self.device.upper()} out of memory: predicting {self.max_batch} "
                    "tile(s) per pass")
        return ""


class _Runner:
    """Runs the network on batches; on out-of-memory splits them, then moves to the CPU.

    The CPU fallback uses a copy of the network, so a model being trained on the GPU at
    the same time (live overlays) is left where it is. The copy is made per call (per
    part), not kept: during training the weights change between parts.
    """

    def __init__(self, network: torch.nn.Module, device: torch.device,
                 amp: torch.dtype | None, limits: DeviceLimits,
                 test_time_augmentation: bool = False) -> None:
        self.network, self.device, self.amp = network, device, amp
        self.limits = limits
        self.passes = _D4 if test_time_augmentation else _D4[:1]
        self.notice = ""
        if limits.on_cpu and device.type != "cpu":
            self._move_to_cpu()

    def _augmented_mean(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for rotations, flip in self.passes:
            turned = torch.rot90(x, rotations, dims=(-2, -1))
            if flip:
                turned = turned.flip(-1)
            # rot90 returns a transposed view; convolutions on it took 1.5x as long
            # on a CPU (session 29)
            turned = turned.contiguous()
            probabilities = self.network(turned).float().softmax(dim=1)
            if flip:
                probabilities = probabilities.flip(-1)
            back = torch.rot90(probabilities, -rotations, dims=(-2, -1))
            total = back.clone() if total is None else total.add_(back)
        assert total is not None
        return total.div_(len(self.passes))

    def _move_to_cpu(self) -> None:
        self.network = copy.deepcopy(self.network).to("cpu").float()
        self.device, self.amp = torch.device("cpu"), None

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities ``(N, K, ...)`` of a batch, on the CPU.

        With test-time augmentation, the mean over the 8 flips and rotations of each
        window, turned back (:data:`_D4`).
        """
        return self._run(x, None)

    def class_ids(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Each pixel's class id ``1..K`` ``(N, ...)``, of ``dtype``, on the CPU.

        Picked from the network's scores on its device: the softmax is left out (the
        largest score is the largest probability), and only the ids cross to the host,
        a byte each where they fit, not K floats (session 29: prediction's own work
        around the network capped the H100 at 22-29 MP/s; ``bench_host.py``).
        """
        return self._run(x, dtype)

    def _run(self, x: torch.Tensor, ids: torch.dtype | None) -> torch.Tensor:
        max_batch = self.limits.max_batch
        if max_batch is not None and x.shape[0] > max_batch:
            return torch.cat([self._run(part, ids) for part in torch.split(x, max_batch)])
        try:
            with torch.inference_mode(), autocast(self.device, self.amp):
                batch = x.to(self.device)  # (x stays on the host for a retry)
                if len(self.passes) > 1:
                    # On the device, window by window: the halo makes each window's core
                    # what the whole image gives, turned or not, so this equals
                    # augmenting the whole image, and only the result crosses to the host.
                    # Turned and summed on the host instead, a 4096 x 4096 image cost
                    # 2.3 s of one CPU core around the network (bench_host.py, session
                    # 29): an H100 could not go faster than ~7 MP/s.
                    scores = self._augmented_mean(batch)
                elif ids is None:
                    scores = self.network(batch).float().softmax(dim=1)
                else:
                    scores = self.network(batch)  # the largest is the likeliest class
                if ids is None:
                    return scores.cpu()
                # max's indices, not argmax: the same ids (the first of equal maxima),
                # but torch's CPU argmax over the class axis of a contiguous
                # (N, K, ...) tensor is 30-60x slower (2 classes, 620 x 620: 73 ms
                # against 1.5 ms; session 23, torch 2.13).
                return (scores.max(dim=1).indices + 1).to(ids).cpu()
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.limits.device = self.device.type
            if x.shape[0] > 1:
                self.limits.max_batch = x.shape[0] // 2
                self.notice = self.limits.describe()
                return self._run(x, ids)
            if self.device.type == "cpu":
                raise
            self.limits.on_cpu = True
            self.notice = self.limits.describe()
            self._move_to_cpu()
            return self._run(x, ids)


@dataclass(frozen=True)
class _Window:
    window: tuple[slice, ...]  # what the network sees, in padded-image coordinates
    core: tuple[slice, ...]  # what is kept, in padded-image coordinates
    core_in_window: tuple[slice, ...]  # the same, relative to the window


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis_plan(size: int, tile: int, halo: int, multiple: int,
               cores: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """``(window_start, window_stop, core_start, core_stop)`` along one axis.

    Cores are spread evenly (rather than packed from the start, which leaves one window
    mostly overlapping its neighbour), so windows can be smaller than ``tile``. A window
    takes ``halo`` pixels of context on each side of its core, none beyond the image:
    the first and last windows are shorter. Windows of one length each, as batching
    wants, cost 16 % more pixels on a 1024 x 1024 image (3 x 3 windows of 456 instead
    of 400 + 456 + 392 a side) and 28 % at 520 x 520 (session 29).

    ``cores``: the span the cores cover (its ends on the size multiple); the rest of the
    axis is context only. ``None``: all of it.
    """
    if tile >= size:
        return [(0, size, 0, size)]
    start, stop = cores if cores is not None else (0, size)
    count = -(-(stop - start) // (tile - 2 * halo))
    core = _round_up(-(-(stop - start) // count), multiple)
    return [(max(core_start - halo, 0), min(core_start + core + halo, size),
             core_start, min(core_start + core, stop))
            for core_start in range(start, stop, core)]


def _window_and_halo(tile: int, halo: int, multiple: int) -> tuple[int, int]:
    """Return a tile side and halo as windows use them along one axis.

    Both lie on the size multiple, and the tile is at least one multiple more than the
    halo on both sides.
    """
    halo = _round_up(halo, multiple)
    return max(_round_up(tile, multiple), 2 * halo + multiple), halo


def _per_axis(value: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def plan_tiles(
    shape: tuple[int, ...],
    tile_size: int | tuple[int, ...],
    halo: int | tuple[int, ...],
    multiple: int | tuple[int, ...],
    cores: tuple[tuple[int, int], ...] | None = None,
) -> list[_Window]:
    """Plan windows over a padded image of ``shape`` (each side a multiple of ``multiple``).

    ``tile_size``, ``halo`` and ``multiple`` are one value for every axis or one per axis.
    Every window starts and ends on a multiple of ``multiple`` and contains its core plus
    ``halo`` pixels of context on each side, up to the image border (where windows are
    shorter: :func:`_axis_plan`; windows of one shape are batched together). Cores cover
    every pixel once, or only ``cores`` (``(start, stop)`` per axis, on the multiple): the
    region wanted, the rest being its context.
    """
    ndim = len(shape)
    per_axis = []
    for size, t, h, m in zip(shape, _per_axis(tile_size, ndim), _per_axis(halo, ndim),
                             _per_axis(multiple, ndim)):
        t, h = _window_and_halo(t, h, m)
        span = cores[len(per_axis)] if cores is not None else None
        per_axis.append(_axis_plan(size, t, h, m, span))
    windows = []
    for combo in itertools.product(*per_axis):
        window = tuple(slice(w0, w1) for w0, w1, _, _ in combo)
        core = tuple(slice(c0, c1) for _, _, c0, c1 in combo)
        core_in_window = tuple(slice(c0 - w0, c1 - w0) for w0, _, c0, c1 in combo)
        windows.append(_Window(window, core, core_in_window))
    return windows


def _halos(model: TrainedModel, tiles: TileConfig) -> tuple[int, ...]:
    """Context per spatial axis around each window's core (see :class:`TileConfig`)."""
    multiples = model.config.size_multiples
    if tiles.halo is not None:
        return _per_axis(tiles.halo, len(multiples))
    radii = model.network.receptive_radii
    if len(multiples) == 3:
        return tuple(min(r, tiles.halo_3d_cap) for r in radii)
    return tuple(radii)


def one_window_blocks(model: TrainedModel, tiles: TileConfig,
                      sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Block sides of a sample (a 2D model's plane, a 3D model's volume) costing one window.

    A side that fits in one tile is one block; a longer side is cut into the tile's core
    (the tile less a halo either side, rounded as :func:`plan_tiles` rounds them). A region
    that large plus its halo is one window, whereas a tile-sized region needs four (eight
    in 3D).

    Parameters
    ----------
    model
        A trained model.
    tiles
        The tiling its predictions use.
    sample_shape
        Size of the samples to cut: ``(Y, X)`` for a 2D model, ``(Z, Y, X)`` for a 3D one.

    Returns
    -------
    tuple of int
        Block sides along the sample's axes, each at least the model's size multiple.

    Raises
    ------
    InputError
        If ``sample_shape`` has not as many axes as the model has spatial dimensions.
    """
    multiples = model.config.size_multiples
    if len(sample_shape) != len(multiples):
        raise InputError(f"a {len(multiples)}D model's samples have {len(multiples)} axes, "
                         f"not {len(sample_shape)} ({tuple(sample_shape)})")
    tile_shape = (tiles.tile_size,) * 2 if len(multiples) == 2 else tiles.tile_size_3d
    sides = []
    for size, tile, halo, multiple in zip(sample_shape, tile_shape, _halos(model, tiles),
                                          multiples):
        tile, halo = _window_and_halo(tile, halo, multiple)
        sides.append(size if size <= tile else tile - 2 * halo)
    return tuple(sides)


def _pad_to_multiple(image: np.ndarray, multiples: tuple[int, ...]) -> np.ndarray:
    pads = [(0, 0)] + [(0, (-s) % m) for s, m in zip(image.shape[1:], multiples)]
    if not any(hi for _, hi in pads):
        return image
    mode = "reflect" if all(s > 1 for s in image.shape[1:]) else "symmetric"
    return np.pad(image, pads, mode=mode)


class _TileSource:
    """A sample's normalised, padded ``(C, *spatial)`` view, made one tile at a time.

    Equal, tile for tile, to ``_pad_to_multiple(normalization.apply(raw), multiples)``
    (normalisation is per pixel; the padding's reflection is reproduced by index), but
    never holds more than a tile in float32: an 8k x 8k plane would otherwise need 256 MiB
    for the normalised copy and as much again padded, before the first tile ran.
    """

    def __init__(self, raw: np.ndarray, normalization: Normalization,
                 multiples: tuple[int, ...]) -> None:
        self._raw = raw
        self._normalization = normalization
        spatial = raw.shape[1:]
        self.shape = (raw.shape[0], *(_round_up(s, m) for s, m in zip(spatial, multiples)))
        # np.pad's "reflect" mirrors without repeating the edge, "symmetric" repeats it.
        self._mirror = 2 * np.array(spatial) - (2 if all(s > 1 for s in spatial) else 1)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        windows = key[1:]
        sizes = self._raw.shape[1:]
        if all(w.stop <= s for w, s in zip(windows, sizes)):
            tile = self._raw[(slice(None), *windows)]
        else:
            index = []
            for w, size, mirror in zip(windows, sizes, self._mirror):
                i = np.arange(w.start, w.stop)
                index.append(np.clip(np.where(i < size, i, mirror - i), 0, size - 1))
            tile = self._raw[(slice(None), *np.ix_(*index))]
        return self._normalization.apply(np.asarray(tile))


def model_axes(model: TrainedModel, shape: tuple[int, ...], axes: str | None = None) -> str:
    """Return the axes of an image to predict: ``axes`` checked, or a guess for the model.

    Without ``axes``: an array with as many dimensions as the model has spatial ones is a
    single-channel image; one more, with the model's channel count first (or last, RGB
    style), is a multichannel one; anything else is guessed from its shape
    (:func:`~napari_unet.core.axes.infer_axes`).

    Raises
    ------
    InputError
        If the axes do not fit the shape or the model (3D model without Z, wrong channel
        count).
    """
    sd = model.config.spatial_dims
    spatial = "YX" if sd == 2 else "ZYX"
    if axes is None:
        ndim, channels = len(shape), model.in_channels
        if ndim == sd:
            axes = spatial
        elif ndim == sd + 1 and shape[0] == channels:
            axes = "C" + spatial
        elif ndim == sd + 1 and shape[-1] == channels and channels in (3, 4):
            axes = spatial + "C"
        else:
            axes = infer_axes(shape)
    axes = check_axes(shape, axes)
    if sd == 3 and "Z" not in axes:
        raise InputError(f"the model is 3D but the image's axes are {axes} (no Z)")
    channels = shape[axes.index("C")] if "C" in axes else 1
    if channels != model.in_channels:
        raise InputError(
            f"the model was trained on {model.in_channels}-channel images but this image "
            f"has {channels} channel(s) (axes {axes}, shape {tuple(shape)})"
        )
    return axes


def iter_predict(
    model: TrainedModel,
    image: np.ndarray,
    tiles: TileConfig | None = None,
    *,
    axes: str | None = None,
    region: tuple[slice, ...] | None = None,
    return_probabilities: bool = False,
    test_time_augmentation: bool = False,
    device: torch.device | None = None,
    mixed_precision: bool = True,
    limits: DeviceLimits | None = None,
) -> Generator[TileProgress, None, Prediction]:
    """Predict tile by tile, yielding progress; the return value is the :class:`Prediction`.

    A 2D model predicts a Z stack or time-lapse plane by plane; a 3D model predicts each
    frame as a volume.

    Parameters
    ----------
    model
        A trained model.
    image
        Raw intensities (normalised here with the model's stored normalisation) with axes
        ``axes``.
    tiles
        Tile sizes, halo and batch; defaults to :class:`TileConfig` defaults.
    axes
        The image's axes, e.g. ``"ZYX"``; ``None`` guesses (:func:`model_axes`).
    region
        Slices over the image's axes without ``C`` (the labels' axes): predict only this
        part, e.g. the slice in view. Context around it is read so that the result equals
        the whole-image prediction there. ``None``: everything.
    return_probabilities
        Also return per-class probabilities (memory grows with the image).
    test_time_augmentation
        Average the probabilities of the 8 flips/90 degree rotations in Y and X: 8x the
        time, smoother and more accurate boundaries (see docs/benchmarks.md). Each window
        is turned on the device; memory stays bounded by the tile unless
        ``return_probabilities`` is set.
    device
        Where to run; defaults to the device the network is on.
    mixed_precision
        Autocast to bf16/fp16 on CUDA.
    limits
        What out-of-memory errors taught so far in this job (updated here); pass one
        object to every part of a job predicted in parts. ``None``: a fresh one.

    Returns
    -------
    Prediction
        For ``region`` (or the whole image), in the labels' axes.
    """
    tiles = tiles or TileConfig()
    limits = limits if limits is not None else DeviceLimits()
    network = model.network
    device = device or next(network.parameters()).device
    network = network.to(device).eval()
    image = np.asarray(image)
    axes = model_axes(model, image.shape, axes)
    lab_axes = label_axes(axes)
    stack = sample_stack(model, image, axes)
    normalization = model.normalization.per_plane(stack.planes_per_sample)
    canonical_region = region_to_canonical(region, lab_axes, stack.label_shape)
    multiples = model.config.size_multiples
    plan = _plan_region(model, stack, canonical_region, tiles)
    context, keep = plan.context, plan.keep
    runner = _Runner(network, device, autocast_dtype(device, mixed_precision), limits,
                     test_time_augmentation)
    passes = len(runner.passes)
    total = plan.count * passes

    k = model.num_classes
    id_dtype = np.uint8 if k < 256 else np.uint16
    region_shape = tuple(sl.stop - sl.start for sl in canonical_region)
    class_map = np.zeros(region_shape, id_dtype)
    probabilities = np.zeros((k, *region_shape), np.float32) if return_probabilities else None
    done = 0
    for index, _ in plan.samples:
        padded = _TileSource(stack.read(index, context), normalization, multiples)
        out = yield from _predict_windows(
            runner, padded, plan.windows, tiles.batch_size, return_probabilities, id_dtype,
            done, total,
        )
        done += len(plan.windows) * passes
        at = _position_in_region(stack, index, canonical_region)
        if probabilities is not None:
            class_map[at] = ((out.argmax(axis=0) + 1).astype(id_dtype))[keep]
            probabilities[(slice(None), *at)] = out[(slice(None), *keep)]
        else:
            class_map[at] = out[keep]

    class_map = labels_from_canonical(class_map, lab_axes)
    if probabilities is not None:
        probabilities = np.stack([labels_from_canonical(p, lab_axes) for p in probabilities])
    return Prediction(np.ascontiguousarray(class_map), probabilities)


def sample_stack(model: TrainedModel, image: np.ndarray, axes: str) -> SampleStack:
    """Return ``image`` (with checked ``axes``) as the samples ``model`` predicts."""
    return SampleStack(to_canonical(image, axes),
                       mode_for_spatial_dims(model.config.spatial_dims),
                       model.config.context_slices)


@dataclass(frozen=True)
class _RegionPlan:
    """How a region of an image is predicted: which samples, what context, which windows."""

    samples: list[tuple[int, tuple[slice, ...]]]  # sample index, spatial slices in it
    context: tuple[slice, ...]  # spatial slices read from each sample: region plus halo
    keep: tuple[slice, ...]  # the region within the context
    windows: tuple[_Window, ...]  # the windows over the context, padded

    @property
    def count(self) -> int:
        """Windows the network runs on for the whole region."""
        return len(self.samples) * len(self.windows)


def _plan_region(model: TrainedModel, stack: SampleStack, canonical_region: tuple[slice, ...],
                 tiles: TileConfig) -> _RegionPlan:
    samples = list(stack.samples_in(canonical_region))
    multiples = model.config.size_multiples
    halos = _halos(model, tiles)
    tile_shape = (tiles.tile_size,) * 2 if len(multiples) == 2 else tiles.tile_size_3d
    # Every sample's region has the same shape, so one context window and one tile plan
    # serve them all.
    spatial_region = samples[0][1]
    # The cores cover the region (widened to the size multiple), the windows reach a halo
    # beyond it: tiling the context as well cost a part of 2 x 2 one-window blocks
    # 9 windows instead of 4 (session 29).
    context, cores = [], []
    for sl, tile, h, m, size in zip(spatial_region, tile_shape, halos, multiples,
                                    stack.sample_shape):
        halo = _window_and_halo(tile, h, m)[1]
        first, last = sl.start - sl.start % m, _round_up(sl.stop, m)
        begin = max(first - halo, 0)
        context.append(slice(begin, min(last + halo, size)))
        cores.append((first - begin, min(last, _round_up(size, m)) - begin))
    keep = tuple(slice(sl.start - c.start, sl.stop - c.start)
                 for sl, c in zip(spatial_region, context))
    padded_shape = tuple(_round_up(c.stop - c.start, m) for c, m in zip(context, multiples))
    windows = _cached_plan(padded_shape, tile_shape, halos, multiples, tuple(cores))
    return _RegionPlan(samples, tuple(context), keep, windows)


@functools.lru_cache(maxsize=64)
def _cached_plan(shape: tuple[int, ...], tile_shape: tuple[int, ...], halos: tuple[int, ...],
                 multiples: tuple[int, ...],
                 cores: tuple[tuple[int, int], ...]) -> tuple[_Window, ...]:
    """Return :func:`plan_tiles`' windows, computed once per shape and span of cores.

    A large image's one-window blocks almost all have the same shape and span; planning
    each anew took half the time of counting a large stack's windows (~0.2 ms a block).
    """
    return tuple(plan_tiles(shape, tile_shape, halos, multiples, cores))


def windows_per_region(
    model: TrainedModel,
    image: np.ndarray,
    regions: Sequence[tuple[slice, ...] | None],
    tiles: TileConfig | None = None,
    *,
    axes: str | None = None,
    return_probabilities: bool = False,
    test_time_augmentation: bool = False,
) -> list[int]:
    """Return how many windows :func:`iter_predict` runs the network on for each region.

    Its :class:`TileProgress` counts these (each window 8 times with test-time
    augmentation: one pass per flip or rotation); a job predicting an image in several
    parts adds them up to report progress over all of them. The other arguments are
    :func:`iter_predict`'s (``return_probabilities`` changes nothing). Tile plans are
    computed once per window shape: counting the 4,050 one-window blocks of a
    50 x 4096 x 4096 stack took 0.2 s (0.9 s with a plan per block, before the first
    block could start).
    """
    tiles = tiles or TileConfig()
    axes = model_axes(model, np.shape(image), axes)
    stack = sample_stack(model, np.asarray(image), axes)
    lab_axes = label_axes(axes)
    passes = len(_D4) if test_time_augmentation else 1
    return [_plan_region(model, stack, region_to_canonical(region, lab_axes, stack.label_shape),
                         tiles).count * passes
            for region in regions]


def grid_cells(span: slice, side: int, within: slice) -> list[slice]:
    """Return the cells of a grid of ``side`` from 0 that ``span`` touches, clipped to ``within``.

    One grid for every region: a block predicted for one view is the same block for the
    next view and for the whole image.
    """
    return [slice(max(start, within.start), min(start + side, within.stop))
            for start in range(span.start - span.start % side, span.stop, side)]


def counted_on(
    predicting: Generator[TileProgress, None, _R], before: int, total: int
) -> Generator[TileProgress, Any, tuple[_R, Any]]:
    """Re-yield one part's :class:`TileProgress` as progress over a job of several parts.

    Parameters
    ----------
    predicting
        The part's prediction (:func:`iter_predict` or one built on it).
    before
        Windows of the job done before this part.
    total
        Windows of the whole job.

    Returns
    -------
    tuple
        The part's return value, and the last non-``None`` value sent in meanwhile (a
        caller's message, e.g. a new view; ``None`` if none came).
    """
    received = None
    while True:
        try:
            progress = next(predicting)
        except StopIteration as finished:
            return finished.value, received
        sent = yield TileProgress(before + progress.tiles_done, total, progress.notice)
        if sent is not None:
            received = sent


def _position_in_region(
    stack: SampleStack, index: int, region: tuple[slice, ...]
) -> tuple[int | slice, ...]:
    """Where a sample's output goes in a canonical ``(T, Z, Y, X)`` region array."""
    t, z = stack.sample_position(index)
    if stack.mode == "2d":
        return (t - region[0].start, z - region[1].start, slice(None), slice(None))
    return (t - region[0].start, slice(None), slice(None), slice(None))


def _predict_windows(
    runner: _Runner,
    view: np.ndarray | _TileSource,
    windows: list[_Window],
    batch_size: int,
    probabilities: bool,
    id_dtype: np.dtype,
    done: int,
    total: int,
) -> Generator[TileProgress, None, np.ndarray]:
    """Run the network over ``windows`` of a normalised, padded ``(C, *spatial)`` view.

    Returns per-class probabilities ``(K, *spatial)`` or, cheaper, the ids ``spatial``.
    """
    k = runner.network.config.num_classes
    spatial = view.shape[1:]
    out = np.zeros((k, *spatial), np.float32) if probabilities else np.zeros(spatial, id_dtype)
    # torch has no uint16 arithmetic on every device: 256 classes or more go as int32
    ids_dtype = torch.uint8 if np.dtype(id_dtype) == np.uint8 else torch.int32
    for batch in _batches(windows, batch_size):
        x = torch.from_numpy(np.stack([view[(slice(None), *w.window)] for w in batch]))
        if probabilities:
            probs_np = runner.probabilities(x).numpy()
            for i, w in enumerate(batch):
                out[(slice(None), *w.core)] = probs_np[(i, slice(None), *w.core_in_window)]
        else:  # class map only: memory stays bounded by the tile
            ids_np = runner.class_ids(x, ids_dtype).numpy()
            for i, w in enumerate(batch):
                out[w.core] = ids_np[(i, *w.core_in_window)]
        done += len(batch) * len(runner.passes)
        yield TileProgress(done, total, runner.notice)
        runner.notice = ""
    return out


# Test-time augmentation: the 8 symmetries of the square (4 rotations x optional flip) in
# the last two axes, applied to each window (see _Runner).
_Transform = tuple[int, bool]
_D4: list[_Transform] = [(0, False), (1, False), (2, False), (3, False),
                         (0, True), (1, True), (2, True), (3, True)]


def predict(
    model: TrainedModel,
    image: np.ndarray,
    tiles: TileConfig | None = None,
    *,
    axes: str | None = None,
    region: tuple[slice, ...] | None = None,
    return_probabilities: bool = False,
    test_time_augmentation: bool = False,
    device: torch.device | None = None,
    mixed_precision: bool = True,
) -> Prediction:
    """Predict a whole image; see :func:`iter_predict` for the parameters."""
    return run_to_end(iter_predict(
        model, image, tiles, axes=axes, region=region, return_probabilities=return_probabilities,
        test_time_augmentation=test_time_augmentation, device=device,
        mixed_precision=mixed_precision,
    ))


def _batches(items: Sequence[_Window], size: int) -> Iterator[list[_Window]]:
    """Up to ``size`` windows at a time, of one shape each (they are stacked)."""
    by_shape: dict[tuple[int, ...], list[_Window]] = {}
    for item in items:
        by_shape.setdefault(tuple(sl.stop - sl.start for sl in item.window), []).append(item)
    for group in by_shape.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]
