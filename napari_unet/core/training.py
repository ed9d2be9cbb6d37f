"""Training from sparse strokes, as a plain Python generator.

:class:`TrainingRun` sets everything up eagerly (so bad input fails before any thread is
started) and :meth:`TrainingRun.steps` is a generator that trains one step per iteration
and yields a :class:`TrainProgress` record. A caller can

- ``send(LabelUpdate(labels))`` new strokes, used from the next step on, without restarting
  (or ``LabelUpdate(patches=...)``: only the boxes painted since, for a big stack);
- stop between steps, either by calling :meth:`TrainingRun.stop` (the generator then returns a
  :class:`TrainResult`) or simply by no longer iterating;
- bound the run by steps or by wall-clock seconds. A bounded run on a Z stack also ends
  after ``TrainConfig.settle_steps`` steps (:attr:`TrainingRun.step_bound`).

An open-ended run (no bound) settles ``TrainConfig.settle_steps`` steps after the latest
strokes: it ends there, or, for a caller that can send strokes (live training,
``steps(wait_for_strokes=True)``), takes no steps and yields
``TrainProgress(settled=True)`` a few times a second until new strokes start it again.

The napari worker and the CLI both drive this same generator.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet import __version__
from napari_unet.core.axes import (
    CANONICAL_LABELS,
    Mode,
    SampleStack,
    default_mode,
    label_axes,
    labels_from_canonical,
    labels_to_canonical,
    mode_for_spatial_dims,
    pair_axes,
    region_to_canonical,
    to_canonical,
)
from napari_unet.core.config import REGION_WEIGHT, ModelConfig, TrainConfig
from napari_unet.core.device import (
    autocast,
    autocast_dtype,
    describe_device,
    resolve_device,
    set_threads,
)
from napari_unet.core.errors import InputError
from napari_unet.core.generators import run_to_end
from napari_unet.core.labels import (
    as_label_array,
    check_class_ids,
    check_training_labels,
    default_class_names,
    painted_class_ids,
)
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.optimizer import AdamW
from napari_unet.core.sampling import IGNORE_INDEX, MixedSampler, PatchBatch, PatchSampler
from napari_unet.core.unet import build_unet

# How often a settled run yields while it waits for strokes: the delay before new strokes
# restart training, and the rate of (cheap) progress records the caller gets meanwhile.
SETTLED_POLL_S = 0.1


@dataclass(frozen=True)
class TrainProgress:
    """What one training step reports.

    Attributes
    ----------
    step
        Steps done in this run (1 after the first step).
    loss
        Loss of this step's batch.
    elapsed_s
        Seconds since the run started.
    samples_per_s
        Patches per second, averaged over the run.
    learning_rate
        Learning rate used for this step.
    device
        Device in use, e.g. ``"cpu (2 threads)"``.
    labels_version
        How many label updates have been taken in so far.
    total_steps, total_seconds
        The run's bounds, if any (for progress bars).
    notice
        A message for the user, e.g. why a label update was refused; empty if none.
    settled
        True when no step was taken: an open-ended run has trained ``settle_steps`` on
        the latest strokes and waits for new ones (``step`` and ``loss`` are the last
        step's).
    """

    step: int
    loss: float
    elapsed_s: float
    samples_per_s: float
    learning_rate: float
    device: str
    labels_version: int
    total_steps: int | None = None
    total_seconds: float | None = None
    notice: str = ""
    settled: bool = False

    @property
    def fraction_done(self) -> float | None:
        """Progress in [0, 1] for a bounded run, ``None`` for an open-ended one."""
        fractions = []
        if self.total_steps:
            fractions.append(self.step / self.total_steps)
        if self.total_seconds:
            fractions.append(self.elapsed_s / self.total_seconds)
        return min(1.0, max(fractions)) if fractions else None


Box = tuple[slice, ...]
"""A box of the labels: one ``slice(start, stop)`` per label axis."""


@dataclass(frozen=True)
class LabelUpdate:
    """New strokes for a running training, sent with ``generator.send(...)``.

    Either all the strokes (``labels``), or the boxes edited since the last update
    (``patches``: each a box and its new content, applied in order), or both (the boxes
    then go over ``labels``). Boxes spare the copy of a whole stack for a few strokes.
    """

    labels: np.ndarray | None = None
    patches: tuple[tuple[Box, np.ndarray], ...] = ()

    def __post_init__(self) -> None:
        if self.labels is None and not self.patches:
            raise InputError("a label update needs the strokes or the boxes that changed")

    def then(self, later: LabelUpdate) -> LabelUpdate:
        """Return one update that does this one, then ``later``."""
        if later.labels is not None:
            return later
        return LabelUpdate(self.labels, self.patches + later.patches)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run returns."""

    model: TrainedModel
    steps: int
    elapsed_s: float
    final_loss: float


def class_weights(counts: dict[int, int], num_classes: int) -> torch.Tensor:
    """Cross-entropy weights ~ 1/sqrt(painted pixel count), mean 1 over painted classes.

    Square root rather than plain inverse frequency: a class painted with a single short
    stroke should count more, but not so much that its few pixels dominate every step.
    """
    weights = np.zeros(num_classes, dtype=np.float32)
    for class_id, count in counts.items():
        weights[class_id - 1] = 1.0 / math.sqrt(max(count, 1))
    painted = weights > 0
    weights[painted] /= weights[painted].mean()
    return torch.from_numpy(weights)


def sparse_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None,
    dice_weight: float,
) -> torch.Tensor:
    """Cross-entropy (plus soft Dice) over painted pixels only.

    Parameters
    ----------
    logits
        ``(B, K, *spatial)``.
    targets
        ``(B, *spatial)`` class indices, :data:`IGNORE_INDEX` where unpainted.
    weights
        Per-class cross-entropy weights or ``None``.
    dice_weight
        Weight of the Dice term; 0 disables it.
    """
    logits = logits.float()
    loss = F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE_INDEX)
    if dice_weight > 0:
        painted = (targets != IGNORE_INDEX).unsqueeze(1)
        probs = logits.softmax(dim=1) * painted
        onehot = F.one_hot(targets.clamp(min=0), logits.shape[1]).movedim(-1, 1) * painted
        dims = (0, *range(2, logits.ndim))
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        present = onehot.sum(dims) > 0  # classes absent from this batch say nothing
        if present.any():
            dice = (2 * intersection + 1.0) / (denominator + 1.0)
            loss = loss + dice_weight * (1 - dice[present]).mean()
    return loss


EDGE_SIGMA = 0.1
"""Intensity step (normalised units) at which the edge term lets neighbours differ.

Normalisation maps the 1st-99.8th percentiles to 0-1; on the nuclei stack the painted
nucleus and background pixels average 0.32 and 0.08, and the first pixel outside a nucleus
0.15: a step of 0.1 between neighbours is an edge, noise of a few hundredths is not.
"""


def edge_smoothness(images: torch.Tensor, logits: torch.Tensor,
                    sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """Probability that neighbouring pixels differ in class, weighted by their likeness.

    For each pair of neighbours along every spatial axis: ``w * (1 - sum_k p_k p'_k)``,
    where ``p, p'`` are their class probabilities and
    ``w = exp(-|I - I'|^2 / (2 sigma^2))`` (the squared difference averaged over channels)
    is near 1 for neighbours of like intensity and near 0 across an edge. Averaged over
    the pairs and the axes.

    Parameters
    ----------
    images
        ``(B, C, *spatial)`` normalised network input.
    logits
        ``(B, K, *spatial)`` network output for ``images``.
    sigma
        Intensity difference at which neighbours start to count as an edge.

    Returns
    -------
    torch.Tensor
        A scalar in ``[0, 1]``.
    """
    images, probs = images.float(), logits.float().softmax(dim=1)
    spatial_axes = range(2, images.ndim)
    total = probs.new_zeros(())
    for axis in spatial_axes:
        n = images.shape[axis]
        if n < 2:
            continue
        step = images.narrow(axis, 1, n - 1) - images.narrow(axis, 0, n - 1)
        likeness = torch.exp(-step.square().mean(dim=1) / (2 * sigma**2))
        same = (probs.narrow(axis, 1, n - 1) * probs.narrow(axis, 0, n - 1)).sum(dim=1)
        total = total + (likeness * (1 - same)).mean()
    return total / len(spatial_axes)


def region_contrast(images: torch.Tensor, logits: torch.Tensor,
                    sources: np.ndarray | None = None,
                    targets: torch.Tensor | None = None) -> torch.Tensor:
    """Spread of intensity within the predicted classes, as a share of the whole spread.

    A piecewise-constant (Chan-Vese) region term. Each class's mean intensity ``mu_k`` is
    taken over the whole batch, weighted by the class probabilities and held fixed for
    the gradient; every pixel then pays ``sum_k p_k |I - mu_k|^2`` (averaged over
    channels), which pushes it toward the class whose mean intensity is nearer. Where an
    object's rim is a ramp of alike steps, the edge term (:func:`edge_smoothness`) cannot
    choose between them; this term puts the boundary where the intensity crosses half
    way between the classes' means. Over the batch, not per patch: a patch of dim
    background alone would otherwise be split in two by its own brightness (measured on
    the nuclei stack, one seed: IoU 0.78 per patch, 0.94 over the batch). Divided by the
    batch's intensity variance, so it does not depend on the image's contrast.

    With patches of several images (``sources``), the term is taken per image and
    averaged over the patches: another acquisition's background may be as bright as this
    one's dim objects, and class means over both drew B's edges by A's brightness (a
    second image's IoU 0.27-0.58 after 500 steps with both, 0.79 without the term).
    Each image's painted pixels then count with their painted class (``targets``), not
    the network's guess, which on a new image can be the first image's look turned
    round. A synthetic dark-on-bright second image, 5 seeds, 500 steps: IoU on it 0.93
    on average and never below 0.81, against 0.68 with one run at 0 from the guess
    alone and 0.78 with one at 0 from means over both images; taking the painted
    classes' means from the strokes alone, 0.87. On the nuclei benchmark's second
    image (``benchmarks/bench_images.py``) about level with the guess alone.

    Parameters
    ----------
    images
        ``(B, C, *spatial)`` normalised network input.
    logits
        ``(B, K, *spatial)`` network output for ``images``.
    sources
        ``(B,)`` which image each patch came from, or ``None`` for one image.
    targets
        ``(B, *spatial)`` class indices of painted pixels, :data:`IGNORE_INDEX` elsewhere:
        painted pixels weigh in the means as painted (given with ``sources``).

    Returns
    -------
    torch.Tensor
        A scalar, 0 when each class is of one intensity, 1 when the classes' means are
        alike.
    """
    images_in_batch = np.unique(sources) if sources is not None else ()
    if len(images_in_batch) > 1:
        terms = []
        for source in images_in_batch:
            idx = torch.as_tensor(np.flatnonzero(sources == source), device=images.device)
            terms.append(region_contrast(images[idx], logits[idx], None,
                                         None if targets is None else targets[idx])
                         * idx.numel())
        return torch.stack(terms).sum() / len(sources)
    channels, classes = images.shape[1], logits.shape[1]
    # (C, N) intensities and (K, N) probabilities of every pixel of the batch.
    x = images.float().transpose(0, 1).reshape(channels, -1)
    p = logits.float().softmax(dim=1).transpose(0, 1).reshape(classes, -1)
    with torch.no_grad():
        weights = p
        if targets is not None:  # painted pixels count as painted, not as guessed
            flat = targets.reshape(-1)
            painted = F.one_hot(flat.clamp_min(0), classes).T.to(p.dtype)
            weights = torch.where(flat >= 0, painted, p)
        means = (weights @ x.T) / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (K, C)
        spread = x.var(dim=1, unbiased=False).mean().clamp_min(1e-6)
    # |x - mu_k|^2 averaged over channels, without a (K, C, N) temporary.
    squared = (x.square().mean(dim=0, keepdim=True) - 2 * (means @ x) / channels
               + means.square().mean(dim=1, keepdim=True))
    return (p * squared).sum(dim=0).mean() / spread


@dataclass(frozen=True)
class TrainingImage:
    """Another image a run learns from, with its strokes (they do not change during the run).

    ``axes`` as for :class:`TrainingRun` (``None``: guessed from the shapes); ``name``
    says which image an error is about.
    """

    image: np.ndarray
    labels: np.ndarray
    axes: str | None = None
    name: str = ""


@dataclass(frozen=True)
class _OtherImage:
    """A :class:`TrainingImage` seen as samples for the run's model."""

    name: str
    stack: SampleStack
    label_samples: np.ndarray
    class_ids: np.ndarray


class TrainingRun:
    """One training session on an image and its strokes; set up eagerly, trained via steps.

    Other images' strokes may join it (``more``): one model for several images.

    Parameters
    ----------
    image
        The image, any numeric dtype, with axes ``axes``: 2D, a Z stack, a time-lapse, with
        or without channels.
    labels
        Painted strokes with the image's axes minus ``C``: 0 = unpainted, 1 = background,
        2.. = objects. Strokes may lie on any slices or frames; only painted ones are used.
    config
        Training settings.
    axes
        The image's axes, e.g. ``"ZYX"`` or ``"TCYX"``; ``None`` guesses from the shapes
        (see :func:`~napari_unet.core.axes.pair_axes`).
    mode
        ``"2d"``: a 2D model trained on painted slices; ``"3d"``: a 3D model trained on 3D
        patches. ``None``: the fine-tuned model's kind, else
        :func:`~napari_unet.core.axes.default_mode`.
    model_config
        Shape of a new network (its ``anisotropy`` matters for 3D). Channels come from the
        image, ``spatial_dims`` from the mode, and the class count is raised to the highest
        painted id if needed. Ignored when ``init`` is given.
    init
        A model to fine-tune instead of starting fresh; its normalisation, channel count,
        classes and kind (2D/3D) are kept, and it trains at a lower rate
        (``config.fine_tune_lr_factor``, :attr:`peak_learning_rate`).
    class_names
        Names for ids ``1..K``; defaults to ``background, class 2, ...``.
    more
        Other images to learn from at the same time, with their strokes: "the next
        images like this one" segment better when a few strokes on each teach the model
        how they differ. They are normalised as ``image`` is (as prediction will), and
        their patches drawn as :class:`~napari_unet.core.sampling.MixedSampler` says.
        Two classes must be painted over all images together; ``image`` needs some
        strokes of its own.
    leave_out_unfit
        Train without the images of ``more`` that cannot train with ``image`` (other
        channels, no Z for a 3D model, nothing painted, a class the model does not
        know), saying why in :attr:`left_out`, rather than refusing the run.

    Raises
    ------
    InputError
        For labels that cannot train (nothing or one class painted, wrong shape), an image
        that does not match the labels or the ``init`` model (or, for ``more``, the
        first image's channels and kind), or an unavailable device.
    """

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        config: TrainConfig | None = None,
        *,
        axes: str | None = None,
        mode: Mode | None = None,
        model_config: ModelConfig | None = None,
        init: TrainedModel | None = None,
        class_names: tuple[str, ...] | None = None,
        more: Sequence[TrainingImage] = (),
        leave_out_unfit: bool = False,
    ) -> None:
        self.config = config = config or TrainConfig()
        image = np.asarray(image)
        labels = as_label_array(labels)
        self.axes = pair_axes(image.shape, labels.shape, axes)
        self.label_axes = label_axes(self.axes)
        base = model_config or ModelConfig()
        canonical_labels = labels_to_canonical(labels, self.label_axes)
        if init is not None:
            init_mode = mode_for_spatial_dims(init.config.spatial_dims)
            if mode is not None and mode != init_mode:
                raise InputError(f"the model to fine-tune is {init_mode.upper()}; it cannot "
                                 f"train in {mode.upper()} mode")
            mode = init_mode
        elif mode is None:
            mode = default_mode(canonical_labels.shape, base.anisotropy)
        if mode == "3d" and canonical_labels.shape[1] == 1:
            raise InputError(f"3D mode needs a Z axis; the image's axes are {self.axes}")
        self.image = image
        self.anisotropy = base.anisotropy if init is None else init.config.anisotropy
        canonical_image = to_canonical(image, self.axes)
        is_z_stack = canonical_image.shape[2] > 1
        if init is not None:
            z_context = init.config.context_slices
        elif mode == "2d" and is_z_stack:  # neighbouring slices exist only here
            z_context = 1 if base.z_context is None else base.z_context
        else:
            z_context = 0
        self.stack = SampleStack(canonical_image, mode, z_context)
        self._canonical_labels = canonical_labels  # boxes of new strokes are written here
        self._refused_labels: LabelUpdate | None = None  # refused, yet the user's latest
        label_samples = self.stack.label_samples(canonical_labels)
        self._others: list[_OtherImage] = []
        self.left_out: list[str] = []  # why images of `more` were left out
        for number, other in enumerate(more, 2):
            try:
                seen = self._other_image(other, number, mode, z_context)
                if init is not None:
                    self._check_classes(seen.label_samples, init.num_classes, seen.name)
            except InputError as err:
                if not leave_out_unfit:
                    raise
                self.left_out.append(f"{err}; trained without it")
                continue
            self._others.append(seen)
        # Classes painted on the other images (fixed): they count toward the two needed.
        self._painted_elsewhere = np.unique(np.concatenate(
            [o.class_ids.astype(np.int64) for o in self._others] or [np.zeros(0, np.int64)]))
        num_painted_classes = check_training_labels(label_samples, label_samples.shape,
                                                    self._painted_elsewhere)
        set_threads(config.num_threads)
        self.device = resolve_device(config.device)

        if config.seed is not None:
            torch.manual_seed(config.seed)
        self._rng = np.random.default_rng(config.seed)

        channels = self.stack.num_channels
        if init is not None:
            if init.in_channels != channels:
                raise InputError(
                    f"the model to fine-tune reads {init.in_channels} channel(s) but the "
                    f"image has {channels}"
                )
            self._check_classes(labels, init.num_classes)
            network = copy.deepcopy(init.network)
            normalization = init.normalization
            names = tuple(class_names or init.class_names)
            self._previous_steps = int(init.metadata.get("steps", 0))
            self._previous_seconds = float(init.metadata.get("seconds", 0.0))
        else:
            base = replace(
                base,
                spatial_dims=self.stack.spatial_dims,
                anisotropy=base.anisotropy if mode == "3d" else 1.0,
                in_channels=channels,
                z_context=z_context,
                absolute_intensity=(is_z_stack if base.absolute_intensity is None
                                    else base.absolute_intensity),
                num_classes=max(num_painted_classes, base.num_classes),
            )
            network = build_unet(base)
            normalization = Normalization.fit(self.stack.image, channel_axis=1)
            names = tuple(class_names or default_class_names(base.num_classes))
            self._previous_steps = 0
            self._previous_seconds = 0.0
        if len(names) != network.config.num_classes:
            raise InputError(
                f"{len(names)} class names given for {network.config.num_classes} classes"
            )

        spatial_dims = self.stack.spatial_dims
        self._amp_dtype = autocast_dtype(self.device, config.mixed_precision)
        self._channels_last = self.device.type == "cuda"
        network = network.to(self.device)
        if self._channels_last:
            network = network.to(memory_format=self._memory_format(spatial_dims))
        # The optimiser trains `_network`; `model.network` is what predicts and is saved:
        # an exponential moving average of the trained weights (or the same module).
        self._network = network
        averaged = copy.deepcopy(network) if config.ema_decay is not None else network
        self.model = TrainedModel(averaged, normalization, names, {})
        self._pair_average()
        # Whether patches get random contrast/brightness; "auto" spares Z stacks, whose
        # brightness along Z tells in-focus objects from out-of-focus ones (TrainConfig).
        # A Z axis of one slice is a 2D image here, as for every other stack rule.
        self.intensity_jitter = config.intensity_jitter == "on" or (
            config.intensity_jitter == "auto" and not self.is_z_stack
        )
        patch = patch_shape(network.config, config, self.stack.sample_shape)
        self._sampler = MixedSampler([
            PatchSampler(stack, samples, patch, self._rng, config.augment,
                         normalization.per_plane(stack.planes_per_sample),
                         self.intensity_jitter, stack.planes_per_sample)
            for stack, samples in [(self.stack, label_samples)]
            + [(o.stack, o.label_samples) for o in self._others]
        ], self._rng)
        self._weights = self._class_weights()
        # Automatic: on for the 2D model over a stack's slices, the case it was measured
        # to help (TrainConfig.edge_weight).
        self.edge_weight = config.edge_weight if config.edge_weight is not None else (
            1.0 if self.mode == "2d" and self.is_z_stack else 0.0)
        # Automatic: on for every model (TrainConfig.region_weight says where it was
        # measured to help: 2D images, a stack's slices and 3D models).
        self.region_weight = config.region_weight if config.region_weight is not None \
            else REGION_WEIGHT
        # Not torch.optim.AdamW: building any torch.optim optimiser imports torch's compiler
        # (1.6-2.0 s on 2 cores), the same update without it is core.optimizer.AdamW.
        # Lower when continuing from a model: its features may not fit the new strokes
        # (TrainConfig.fine_tune_lr_factor says what the full rate did then).
        self.peak_learning_rate = config.learning_rate * (
            config.fine_tune_lr_factor if init is not None else 1.0)
        self._optimizer = AdamW(self._network.parameters(), lr=self.peak_learning_rate,
                                weight_decay=config.weight_decay)
        # Loss scaling is only needed for fp16; bf16 has fp32's exponent range.
        self._scaler = torch.amp.GradScaler(
            "cuda", enabled=self._amp_dtype == torch.float16
        )
        self._batch_size = config.batch_size  # lowered if the GPU runs out of memory
        self._prefetched: PatchBatch | None = None  # the next batch, drawn during a GPU step
        self._notice = ""
        self._stop = threading.Event()
        self._steps_done = 0
        self._samples = 0
        self._elapsed = 0.0
        self._labels_version = 0
        self._strokes_since = 0  # step at which the latest strokes arrived (settling)
        self._last_loss = float("nan")
        # Changes only with set_settle_steps; the metadata built from it every step.
        self._config_dict = asdict(config)
        self._update_metadata()

    def _other_image(self, other: TrainingImage, number: int, mode: Mode,
                     z_context: int) -> _OtherImage:
        """Check another image against the first and see it as samples for the model."""
        name = other.name or f"image {number}"
        try:
            image, labels = np.asarray(other.image), as_label_array(other.labels)
            axes = pair_axes(image.shape, labels.shape, other.axes)
            canonical_labels = labels_to_canonical(labels, label_axes(axes))
            stack = SampleStack(to_canonical(image, axes), mode, z_context)
            if mode == "3d" and stack.label_shape[1] == 1:
                raise InputError(f"a 3D model needs a Z axis; the axes are {axes}")
            if stack.num_channels != self.stack.num_channels:
                raise InputError(f"it has {stack.num_channels} channel(s), the first image "
                                 f"{self.stack.num_channels}")
            samples = stack.label_samples(canonical_labels)
            ids = painted_class_ids(samples)
            if ids.size == 0:
                raise InputError("nothing is painted on it")
            check_class_ids(ids)
        except InputError as err:
            raise InputError(f"{name}: {err}") from err
        return _OtherImage(name, stack, samples, ids)

    @property
    def mode(self) -> Mode:
        """``"2d"`` (a 2D model over slices) or ``"3d"``."""
        return self.stack.mode

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of the labels (the image's shape without channels)."""
        return tuple(self._canonical_labels.shape[CANONICAL_LABELS.index(a)]
                     for a in self.label_axes)

    @property
    def strokes(self) -> np.ndarray:
        """The strokes training uses, with the label axes (a read-only view)."""
        view = labels_from_canonical(self._canonical_labels, self.label_axes).view()
        view.flags.writeable = False
        return view

    @property
    def spacing(self) -> tuple[float, ...]:
        """Pixel size along the labels' spatial axes (Z in units of the Y/X pixel size)."""
        return tuple(self.anisotropy if a == "Z" else 1.0
                     for a in self.label_axes if a != "T")

    @property
    def settled(self) -> bool:
        """An open-ended run has trained ``settle_steps`` on the latest strokes."""
        cfg = self.config
        return (cfg.settle_steps is not None and not self._bounded
                and self._steps_done - self._strokes_since >= cfg.settle_steps)

    @property
    def is_z_stack(self) -> bool:
        """The image has a Z axis of more than one slice."""
        return self.stack.label_shape[1] > 1

    @property
    def _bounded(self) -> bool:
        return bool(self.config.max_steps or self.config.max_seconds)

    @property
    def step_bound(self) -> int | None:
        """The most steps this run takes, ``None`` for no step bound.

        ``TrainConfig.max_steps``, and for a bounded run on a Z stack also
        ``settle_steps``, where an open-ended run would pause. The learning rate decays
        over the nearer bound.
        """
        cfg = self.config
        bounds = [cfg.max_steps] if cfg.max_steps else []
        # Why: trained longer on the same strokes, a stack's model gets worse
        # (bench_volumes' strokes, 2D over slices, 7 seeds: 0.915 after 500 steps,
        # 0.897 after 860, about 60 s on 2 cores; 0.818 after 300 s). On 2D images
        # longer training helped a little, so their budget is used in full.
        if self._bounded and self.is_z_stack and cfg.settle_steps is not None:
            bounds.append(cfg.settle_steps)
        return min(bounds, default=None)

    @property
    def training_images(self) -> int:
        """How many images the run learns from: the first, and the others it was given."""
        return 1 + len(self._others)

    @property
    def other_images(self) -> tuple[str, ...]:
        """The names of the other images the run learns from (see :class:`TrainingImage`)."""
        return tuple(o.name for o in self._others)

    @property
    def painted_samples(self) -> int:
        """How many slices (2D mode) or frames (3D mode) have strokes."""
        return self._sampler.painted_samples

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to end after the current step; safe to call from any thread."""
        self._stop.set()

    def set_settle_steps(self, steps: int | None) -> None:
        """Change ``TrainConfig.settle_steps`` of this run, from the next step on.

        Raising it above the steps trained on the current strokes resumes a settled run.

        Raises
        ------
        InputError
            For a value ``TrainConfig`` refuses (below 1); the old one stays.
        """
        self.config = replace(self.config, settle_steps=steps)
        self._config_dict = asdict(self.config)

    def update_labels(self, labels: np.ndarray | None = None,
                      patches: tuple[tuple[Box, np.ndarray], ...] = ()) -> None:
        """Use new strokes from the next step on.

        Parameters
        ----------
        labels
            All the strokes, or ``None`` to keep the current ones and change only
            ``patches``.
        patches
            Boxes of the labels (one slice per label axis) and their new content, applied
            in order. They are written into the run's strokes, which are the labels array
            it was built with where that needed no conversion: a big stack's strokes are
            not held twice.

        Raises
        ------
        InputError
            If the strokes cannot train this model (shape, classes, a box outside the
            image, or nothing left to learn from); the old ones stay in use. The refused
            strokes are still the user's latest: the next update is applied on top of
            them, so boxes edited later do not bring back what the refused ones erased.
        """
        update = LabelUpdate(labels, tuple(patches))
        if self._refused_labels is not None:
            update = self._refused_labels.then(update)
        try:
            canonical = self._apply_label_update(update)
        except InputError:
            self._refused_labels = update
            raise
        self._refused_labels = None
        self._canonical_labels = canonical
        self._prefetched = None  # drawn from the old strokes
        self._weights = self._class_weights()
        self._labels_version += 1
        self._strokes_since = self._steps_done  # the pause counts from the new strokes

    def _apply_label_update(self, update: LabelUpdate) -> np.ndarray:
        """Give the sampler the strokes ``update`` leads to; return them (canonical)."""
        num_classes = self.model.num_classes
        if update.labels is not None:
            labels = as_label_array(update.labels)
            if tuple(labels.shape) != self.label_shape:
                raise InputError(f"the new strokes have shape {tuple(labels.shape)}, the "
                                 f"image's labels {self.label_shape}")
            self._check_classes(labels, num_classes)
            canonical, in_place = labels_to_canonical(labels, self.label_axes), False
        else:
            canonical, in_place = self._canonical_labels, True
        if update.patches and not canonical.flags.writeable:  # e.g. a read-only memmap
            canonical, in_place = canonical.copy(), False
        replaced: list[tuple[Box, np.ndarray]] = []  # to undo the boxes if refused
        try:
            for box, patch in update.patches:
                patch = as_label_array(patch, "the painted box")
                canonical_box = self._canonical_box(box, patch.shape)
                self._check_classes(patch, num_classes)
                if in_place:
                    replaced.append((canonical_box, canonical[canonical_box].copy()))
                canonical[canonical_box] = labels_to_canonical(patch, self.label_axes)
            samples = self.stack.label_samples(canonical)
            check_training_labels(samples, samples.shape, self._painted_elsewhere)
            if in_place:  # only the boxes changed: only they are indexed again
                self._sampler.main.update_boxes(samples, [
                    box for canonical_box, _ in replaced
                    for box in self.stack.samples_in(canonical_box)])
            else:
                self._sampler.main.set_labels(samples)
        except InputError:
            for canonical_box, old in reversed(replaced):
                canonical[canonical_box] = old
            raise
        return canonical

    def _canonical_box(self, box: Box, content_shape: tuple[int, ...]) -> Box:
        """Return ``box`` (over the label axes) over ``(T, Z, Y, X)``, checked to fit."""
        shape = self.label_shape
        fits = len(box) == len(shape) == len(content_shape) and all(
            isinstance(b, slice) and b.step in (None, 1)
            and isinstance(b.start, int | np.integer) and isinstance(b.stop, int | np.integer)
            and 0 <= b.start < b.stop <= size and b.stop - b.start == n
            for b, size, n in zip(box, shape, content_shape)
        )
        if not fits:
            raise InputError(f"a painted box {box} with content of shape "
                             f"{tuple(content_shape)} does not fit labels of shape {shape}")
        return region_to_canonical(box, self.label_axes, self._canonical_labels.shape)

    # -- the loop ------------------------------------------------------------------------

    def steps(
        self, wait_for_strokes: bool = False
    ) -> Generator[TrainProgress, LabelUpdate | None, TrainResult]:
        """Train, one step per iteration, until a bound is reached or :meth:`stop` is called.

        An open-ended run also ends when it settles (``TrainConfig.settle_steps`` steps
        after its latest strokes), unless ``wait_for_strokes``: then it takes no steps
        and every :data:`SETTLED_POLL_S` yields a ``settled`` progress record, so the
        caller can send new strokes (which start training again) or stop.

        Yields
        ------
        TrainProgress
            After every step, and while settled.

        Returns
        -------
        TrainResult
            The trained model and totals (the generator's return value).
        """
        cfg = self.config
        start = time.perf_counter() - self._elapsed
        notice = ""
        try:
            while not self._stop.is_set() and not self._bound_reached():
                settled = self.settled
                if settled and not wait_for_strokes:
                    break
                if settled:
                    # Wakes at once on stop(); waiting is not training time.
                    self._stop.wait(SETTLED_POLL_S)
                    start = time.perf_counter() - self._elapsed
                    lr = 0.0
                else:
                    lr = self._learning_rate()
                    for group in self._optimizer.param_groups:
                        group["lr"] = lr
                    self._network.train()
                    self._last_loss = self._step_within_memory()
                    self._steps_done += 1
                    self._update_average()
                    self._elapsed = time.perf_counter() - start
                    self._update_metadata()
                update = yield TrainProgress(
                    step=self._steps_done,
                    loss=self._last_loss,
                    elapsed_s=self._elapsed,
                    samples_per_s=self._samples / max(self._elapsed, 1e-9),
                    learning_rate=lr,
                    device=describe_device(self.device),
                    labels_version=self._labels_version,
                    total_steps=self.step_bound,
                    total_seconds=cfg.max_seconds,
                    notice="; ".join(n for n in (notice, self._notice) if n),
                    settled=settled,
                )
                notice = self._notice = ""
                if update is not None:
                    try:
                        self.update_labels(update.labels, update.patches)
                    except InputError as err:
                        # Keep training on the previous strokes; tell the user why.
                        notice = f"new strokes not used: {err}"
        finally:
            self._network.eval()
            self.model.network.eval()
            self._update_metadata()
        return TrainResult(self.model, self._steps_done, self._elapsed, self._last_loss)

    def run_to_end(self) -> TrainResult:
        """Iterate :meth:`steps` to its end and return the result (for scripts)."""
        return run_to_end(self.steps())

    # -- internals -----------------------------------------------------------------------

    def _step_within_memory(self) -> float:
        """One step; on GPU out-of-memory, halve the batch, then move to the CPU.

        The user is told through the next :class:`TrainProgress`'s ``notice``. Out of
        memory on the CPU itself is not recoverable here and is raised.
        """
        while True:
            batch = self._prefetched
            self._prefetched = None
            if batch is None:
                batch = self._sampler.sample(self._batch_size)
            try:
                loss = self._train_step(batch)
                if self.device.type != "cpu":
                    # The GPU runs the step's queued kernels while the CPU draws the next
                    # batch; reading the loss below waits for both. Drawing after the wait
                    # cost a quarter of the step (bench_gpu.py: 0.73 of a plain loop).
                    self._prefetched = self._sampler.sample(self._batch_size)
                value = float(loss)
            except torch.OutOfMemoryError:
                self._prefetched = None
                self._optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self._batch_size > 1:
                    self._batch_size //= 2
                    self._notice = (f"{self.device.type.upper()} out of memory: training "
                                    f"continues with {self._batch_size} patches per step")
                elif self.device.type != "cpu":
                    self._move_to_cpu()
                    self._notice = (f"{self.device.type.upper()} out of memory even with "
                                    "one patch per step: training continues on the CPU "
                                    "(slower)")
                    self.device = torch.device("cpu")
                else:
                    raise
                continue
            self._samples += len(batch.images)
            return value

    def _move_to_cpu(self) -> None:
        cpu = torch.device("cpu")
        self._network.to(cpu, memory_format=torch.contiguous_format)
        self.model.network.to(cpu, memory_format=torch.contiguous_format)
        for state in self._optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    state[key] = value.to(cpu)
        self._pair_average()  # state_dict views of the GPU weights are stale now
        self._amp_dtype = None
        self._channels_last = False
        self._scaler = torch.amp.GradScaler("cuda", enabled=False)
        if self._weights is not None:
            self._weights = self._weights.to(cpu)

    def _pair_average(self) -> None:
        """Pair each averaged tensor with the trained one it follows (see _update_average)."""
        averaged, network = self.model.network, self._network
        trained_state = network.state_dict()
        pairs = [] if averaged is network else [
            (tensor, trained_state[name]) for name, tensor in averaged.state_dict().items()
        ]
        self._average_float = ([a for a, t in pairs if t.dtype.is_floating_point],
                               [t for a, t in pairs if t.dtype.is_floating_point])
        self._average_other = [(a, t) for a, t in pairs if not t.dtype.is_floating_point]

    def _train_step(self, batch: PatchBatch) -> torch.Tensor:
        images = torch.from_numpy(batch.images).to(self.device, non_blocking=True)
        targets = torch.from_numpy(batch.targets).to(self.device, non_blocking=True)
        if self._channels_last:
            images = images.contiguous(memory_format=self._memory_format(targets.ndim - 1))
        self._optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self._amp_dtype):
            logits = self._network(images)
        loss = sparse_loss(logits, targets, self._weights, self.config.dice_weight)
        if self.edge_weight > 0:
            loss = loss + self.edge_weight * edge_smoothness(images, logits)
        if self.region_weight > 0:
            # One image keeps the means of the guess alone, as measured (session 22-24).
            loss = loss + self.region_weight * region_contrast(
                images, logits, batch.sources,
                targets if batch.sources is not None else None)
        self._scaler.scale(loss).backward()
        if self.config.grad_clip_norm is not None:
            # The norm must be of the true gradients, not the fp16 loss-scaled ones; the
            # scaler then skips its own unscaling in step().
            self._scaler.unscale_(self._optimizer)
            torch.nn.utils.clip_grad_norm_(self._network.parameters(),
                                           self.config.grad_clip_norm, foreach=True)
        self._scaler.step(self._optimizer)
        self._scaler.update()
        return loss.detach()  # not read here: on a GPU that would wait for the step

    @torch.no_grad()
    def _update_average(self) -> None:
        decay = self.config.ema_decay
        if decay is None:
            return
        # Short memory at first so the average is not dominated by the random start.
        step = self._previous_steps + self._steps_done
        decay = min(decay, (1 + step) / (10 + step))
        averaged, trained = self._average_float
        if averaged:
            torch._foreach_lerp_(averaged, trained, 1 - decay)
        for average, value in self._average_other:
            average.copy_(value)

    def _learning_rate(self) -> float:
        cfg = self.config
        warmup = min(1.0, (self._steps_done + 1) / max(cfg.warmup_steps, 1))
        fractions = []
        step_bound = self.step_bound
        if step_bound:
            fractions.append(self._steps_done / step_bound)
        if cfg.max_seconds:
            fractions.append(self._elapsed / cfg.max_seconds)
        if not fractions:
            # Open-ended (live) training: a constant rate until it settles. Decaying it
            # before the pause did not score better (docs/benchmarks.md, "Live
            # training left running on the same strokes").
            return self.peak_learning_rate * warmup
        done = min(1.0, max(fractions))
        # Cosine decay to 5 % over the budget: the last steps refine instead of jumping.
        decay = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done))
        return self.peak_learning_rate * warmup * decay

    def _bound_reached(self) -> bool:
        cfg = self.config
        step_bound = self.step_bound
        if step_bound is not None and self._steps_done >= step_bound:
            return True
        return cfg.max_seconds is not None and self._elapsed >= cfg.max_seconds

    def _class_weights(self) -> torch.Tensor | None:
        if not self.config.class_balance:
            return None
        counts = self._sampler.class_pixel_counts
        return class_weights(counts, self.model.num_classes).to(self.device)

    def _check_classes(self, labels: np.ndarray, num_classes: int, where: str = "") -> None:
        highest = int(labels.max())
        if highest > num_classes:
            raise InputError(
                f"{where + ': ' if where else ''}label {highest} is painted but the model "
                f"knows only ids 1..{num_classes}; start a new model to add a class"
            )

    @staticmethod
    def _memory_format(spatial_dims: int) -> torch.memory_format:
        return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d

    def _update_metadata(self) -> None:
        self.model.metadata = {
            "steps": self._previous_steps + self._steps_done,
            "seconds": round(self._previous_seconds + self._elapsed, 3),
            "seed": self.config.seed,
            "napari_unet_version": __version__,
            "torch_version": str(torch.__version__),
            "device": self.device.type,
            "axes": self.axes,
            "mode": self.mode,
            "train_config": self._config_dict,
            "edge_weight": self.edge_weight,  # as resolved ("train_config" may say None)
            "region_weight": self.region_weight,
            "painted_pixels": {str(k): v for k, v in self._sampler.class_pixel_counts.items()},
            "training_images": self.training_images,
            "final_loss": None if math.isnan(self._last_loss) else self._last_loss,
        }


def warm_up(device: str = "auto") -> None:
    """Pay torch's one-off start-up costs with one tiny training step, CPU and ``device``.

    On a GPU, the first step starts CUDA and its cuDNN/cuBLAS handles: 5 s of a cold 6.9 s
    wait for the first overlay on an H100 (benchmarks/bench_gpu.py). On the CPU little is
    left to pay since training stopped using ``torch.optim`` (whose import of
    ``torch._dynamo`` took 1.6-2.0 s on 2 cores; :mod:`~napari_unet.core.optimizer`): the
    first convolutions choose their kernels. Run in a worker thread while the user paints,
    this takes those seconds off the wait for the first overlay.

    Parameters
    ----------
    device
        The device training will use (as :func:`~napari_unet.core.device.resolve_device`
        takes it); its step runs under the same mixed precision training uses.
    """
    for target in dict.fromkeys([torch.device("cpu"), resolve_device(device)]):
        network = build_unet(ModelConfig(depth=1, base_channels=4)).to(target)
        optimizer = AdamW(network.parameters())
        with autocast(target, autocast_dtype(target)):
            logits = network(torch.zeros(1, 1, 16, 16, device=target))
        logits.float().mean().backward()
        optimizer.step()
        if target.type == "cuda":
            torch.cuda.synchronize(target)


def patch_shape(
    model: ModelConfig, config: TrainConfig, sample_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """Spatial shape of training patches for a model and samples of ``sample_shape``.

    2D: ``patch_size`` squared. 3D: ``patch_size_3d`` in Y and X and, in Z, that divided by
    the anisotropy, rounded up to the model's Z multiple and at most the (rounded) depth of
    the stack, so a thin stack is not mostly padding.
    """
    if model.spatial_dims == 2:
        return (config.patch_size, config.patch_size)
    mz = model.size_multiples[0]
    z = max(math.ceil(config.patch_size_3d / model.anisotropy), mz)
    z = min(z, max(sample_shape[0], mz))
    z = -(-z // mz) * mz
    return (z, config.patch_size_3d, config.patch_size_3d)


def train(
    image: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig | None = None,
    *,
    axes: str | None = None,
    mode: Mode | None = None,
    model_config: ModelConfig | None = None,
    init: TrainedModel | None = None,
    class_names: tuple[str, ...] | None = None,
    more: Sequence[TrainingImage] = (),
) -> Generator[TrainProgress, LabelUpdate | None, TrainResult]:
    """Train a U-Net on painted strokes; a generator of :class:`TrainProgress`.

    Set-up errors are raised here, at the call, not at the first ``next``. See
    :class:`TrainingRun` for the parameters.

    Returns
    -------
    Generator[TrainProgress, LabelUpdate | None, TrainResult]
        Send :class:`LabelUpdate` to change the strokes; the return value (in
        ``StopIteration.value``) is the :class:`TrainResult`.
    """
    run = TrainingRun(
        image, labels, config, axes=axes, mode=mode, model_config=model_config, init=init,
        class_names=class_names, more=more,
    )
    return run.steps()

