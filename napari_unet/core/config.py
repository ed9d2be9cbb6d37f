"""Settings as frozen dataclasses, with presets sized for the hardware.

Every setting that changes what a model is or how it learns lives here, so that the CLI,
the widget and the checkpoint all speak the same language (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from napari_unet.core.errors import InputError

NormName = Literal["layer", "group", "batch", "none"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_CHOICES: tuple[str, ...] = get_args(DeviceName)
IntensityJitter = Literal["auto", "on", "off"]
INTENSITY_JITTER_CHOICES: tuple[str, ...] = get_args(IntensityJitter)
"""What ``TrainConfig.intensity_jitter`` accepts (the CLI and the widget offer the same)."""
REGION_WEIGHT = 0.25
"""``TrainConfig.region_weight`` where it is on: every model, automatically.

Small enough that strokes win where brightness does not tell the classes apart: at 1.0,
objects whose ends are as bright as their middles but painted background
(tests/core/test_stacks.py) scored IoU 0.33 instead of 1.0; at 0.25 (and 0.1) they are
right, and it kept most of the term's gain (docs/benchmarks.md, "A region term").
"""

EDGE_SMOOTHING_WEIGHTS: dict[str, tuple[float | None, float | None]] = {
    "auto": (None, None), "on": (1.0, REGION_WEIGHT), "off": (0.0, 0.0)}
"""The widget's *edge smoothing* choices, as ``TrainConfig`` ``(edge_weight,
region_weight)``: *off* switches both intensity terms off, for classes that brightness
does not tell apart."""

MAX_Z_CONTEXT = 3
"""Most neighbouring slices per side a 2D model may read (``ModelConfig.z_context``)."""

_T = TypeVar("_T")


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    """Build ``cls`` from a dict, refusing unknown keys with a readable message."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    return cls(**data)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the U-Net.

    Parameters
    ----------
    in_channels
        Number of image channels the model reads.
    num_classes
        Number of classes K, background included. The model predicts label ids ``1..K``.
    depth
        Number of 2x downsamplings. Inputs are padded internally to a multiple of
        ``2**depth``.
    base_channels
        Feature channels of the first level; each level doubles them.
    residual
        Use residual conv blocks instead of plain double convs.
    norm
        ``"layer"`` normalises across channels at each pixel. It is independent of batch size
        and of the tile extent, so tiled prediction equals untiled prediction exactly.
        ``"group"`` (GroupNorm) is also batch independent but its statistics span the whole
        tile, so tiles differ slightly from whole-image prediction. ``"batch"`` is offered for
        large batches only.
    spatial_dims
        2 for images, 3 for volumes.
    anisotropy
        For 3D models: Z spacing divided by XY spacing (e.g. 0.5 um / 0.1 um = 5). The
        network then pools along Z only once the in-plane resolution has come down to about
        the Z resolution, so coarse Z sampling is not thrown away early.
    z_context
        For 2D models on Z stacks: how many neighbouring slices on each side the network
        sees with each slice, as extra input channels (slices beyond the stack's ends
        repeat the end slice). A 2D model that sees one slice can tell an in-focus nucleus
        from its out-of-focus blur only by brightness; the neighbours show which of the
        two is sharpest. ``None`` (automatic): 1 for a Z stack in 2D mode; always 0 for
        3D models and images without Z. Training resolves it; a model file holds a number.
    absolute_intensity
        Give the first convolution a bias, so the network sees how bright a region is and
        not only its contrast (``layer`` normalisation divides out the scale of what the
        first convolution sees; see :class:`~napari_unet.core.unet.ConvBlock`). In a Z
        stack, brightness is what separates in-focus objects from out-of-focus blur; in 2D
        images of objects of varied brightness, contrast alone generalised better from a
        few strokes (docs/benchmarks.md). ``None`` (automatic): on for Z stacks, off
        otherwise. Training resolves it; a model file holds a boolean.
    """

    in_channels: int = 1
    num_classes: int = 2
    depth: int = 3
    base_channels: int = 16
    residual: bool = False
    norm: NormName = "layer"
    spatial_dims: int = 2
    anisotropy: float = 1.0
    z_context: int | None = None
    absolute_intensity: bool | None = None

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise InputError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.num_classes < 2:
            raise InputError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 1 <= self.depth <= 6:
            raise InputError(f"depth must be between 1 and 6, got {self.depth}")
        if self.base_channels < 4:
            raise InputError(f"base_channels must be >= 4, got {self.base_channels}")
        if self.norm not in ("layer", "group", "batch", "none"):
            raise InputError(f"norm must be layer, group, batch or none, got {self.norm!r}")
        if self.spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if not 0.1 <= self.anisotropy <= 100:
            raise InputError(f"anisotropy must be between 0.1 and 100, got {self.anisotropy}")
        if self.z_context is not None and not 0 <= self.z_context <= MAX_Z_CONTEXT:
            raise InputError(
                f"z_context must be between 0 and {MAX_Z_CONTEXT}, got {self.z_context}"
            )
        if self.z_context and self.spatial_dims == 3:
            raise InputError("z_context is for 2D models; a 3D model sees Z itself")

    @property
    def context_slices(self) -> int:
        """``z_context`` as a number: neighbouring slices per side (unset: none)."""
        return self.z_context or 0

    @property
    def planes_per_sample(self) -> int:
        """Slices the network sees per sample: the slice and ``z_context`` on each side."""
        return 2 * self.context_slices + 1

    @property
    def sees_absolute_intensity(self) -> bool:
        """Whether the first convolution has a bias (``absolute_intensity``; unset: no)."""
        return bool(self.absolute_intensity)

    @property
    def network_in_channels(self) -> int:
        """Input channels of the first convolution: image channels x planes per sample."""
        return self.in_channels * self.planes_per_sample

    @property
    def pool_factors(self) -> tuple[tuple[int, ...], ...]:
        """Per level, the pooling factor along each spatial axis (1 or 2).

        An axis is pooled while its current spacing is at most twice the finest one (the
        rule nnU-Net uses), so a stack 5x coarser in Z keeps its Z resolution for the first
        levels. 2D models and isotropic volumes pool every axis at every level.
        """
        if self.spatial_dims == 2:
            return tuple((2, 2) for _ in range(self.depth))
        factors = []
        z_spacing, xy_spacing = self.anisotropy, 1.0
        for _ in range(self.depth):
            pool_z = z_spacing <= 2 * xy_spacing
            pool_xy = xy_spacing <= 2 * z_spacing
            factors.append((2 if pool_z else 1, 2 if pool_xy else 1, 2 if pool_xy else 1))
            z_spacing *= 2 if pool_z else 1
            xy_spacing *= 2 if pool_xy else 1
        return tuple(factors)

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Per spatial axis, inputs are padded to a multiple of this."""
        multiples = [1] * self.spatial_dims
        for level in self.pool_factors:
            multiples = [m * f for m, f in zip(multiples, level)]
        return tuple(multiples)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Parameters
    ----------
    patch_size
        Side of the square patches drawn around painted pixels (2D models).
    patch_size_3d
        Y and X side of the patches of 3D models; their Z side is this divided by the
        model's anisotropy (fewer, coarser slices cover the same depth).
    batch_size
        Patches per step.
    learning_rate
        Peak learning rate of AdamW.
    weight_decay
        AdamW weight decay.
    warmup_steps
        Linear warm-up; avoids the first large steps wrecking a fine-tuned model.
    fine_tune_lr_factor
        The learning rate is this times ``learning_rate`` when training continues from a
        model (``init``: Train again, a reloaded model, ``train --init``). Why: a model of
        one image that sees a new one as featureless (a raised background) was driven to
        predicting background everywhere, for good, by the full rate in 3 of 8 seeds, at
        0.5 times it in 2, at 0.3 times in none (docs/benchmarks.md, "A second image that
        looks different").
    max_steps, max_seconds
        Stop after this many steps or this much wall-clock time, whichever comes first.
        Both ``None`` means open-ended (the widget's live mode): until stopped or, with
        ``settle_steps``, paused. When a bound is set, the learning rate follows a cosine
        decay over it.
    settle_steps
        Open-ended (live) training: this many steps after the latest strokes arrived,
        training waits, taking no steps, until new strokes arrive and start it again.
        ``None``: train until stopped. Why: left training on the same few strokes, a model
        can get worse; on a nuclei stack its IoU fell from 0.94 after 500 steps to 0.68
        after 4,000 as the nuclei shrink. At 500 steps every stroke set measured was
        within 0.03 of its best (docs/benchmarks.md, "Live training left running on the
        same strokes"). A bounded run on a Z stack ends after this many steps, whatever
        its budget, and its learning rate decays over them: on a stack the 2D model
        scored 0.915 after 500 decayed steps, 0.897 after 860 (60 s on 2 cores) and 0.818
        after 300 s (docs/benchmarks.md, "Time budgets on stacks"). A bounded run on a 2D
        image or time-lapse uses its whole budget: there longer training helped a
        little.
    dice_weight
        Weight of a soft Dice term on painted pixels, added to the cross-entropy. Off by
        default: on sparse strokes it lowered recall (docs/benchmarks.md).
    edge_weight
        Weight of an edge-aware smoothness term over every pixel of a patch, painted or
        not. Strokes stop short of an object's edge, so nothing else says where in the
        unpainted band the edge falls. Neighbouring pixels of similar intensity are
        pushed toward the same class, neighbours across a sharp change in intensity are
        let go (a relaxed Potts term gated by intensity, as in scribble-supervised
        segmentation).
        ``None`` (automatic): 1.0 for the 2D model over the slices of a Z stack.
        There it draws the outline about half a pixel further in (nuclei had come out a
        pixel too large with one stroke set) and, above all, steadies training: over 12
        step-matched runs on two stroke sets of a nuclei stack, IoU 0.917 +- 0.023
        (worst 0.881) against 0.877 +- 0.072 (worst 0.722) without it; weights 0.3 and
        0.5 did no better. 0 for 2D images and time-lapses, where it cost 0.06 (DSB2018
        nuclei, whose texture it takes for edges), and for 3D models (on the same stack,
        3 runs: 0.852 against 0.894 after 150 steps, level after 300).
        docs/benchmarks.md, "What changed the defaults".
    region_weight
        Weight of a region term over every pixel of a patch: each pixel is pushed toward
        the class whose mean intensity over the batch is nearer (Chan-Vese), which puts a
        rim's boundary half way up its ramp (docs/benchmarks.md, "A region term").
        ``None`` (automatic): :data:`REGION_WEIGHT` for every model (2D images,
        time-lapses, a Z stack's slices, 3D models). Step-matched, 500 steps: the
        nuclei stack's slices 0.910 -> 0.939 (3 seeds, with the edge term); 2D DSB2018
        nuclei (4 seeds x 3/5/10/20 objects) 0.806 +- 0.050 (worst 0.641) -> 0.846 +-
        0.019 (worst 0.804), better in 12 of 16, and after 250 steps no near-empty
        overlay (worst 0.738, without it 0.014); 3D models on the nuclei stack (3 seeds
        x 3/10 objects) 0.932 -> 0.954 after 250 steps, better in all 6, and 0.938 ->
        0.953 after 500.
    class_balance
        Weight cross-entropy by inverse square-root frequency of painted pixels per class,
        so a few strokes of a rare class are not drowned by long background strokes.
    ema_decay
        The model that predicts and is saved is an exponential moving average of the
        trained weights with this decay (``None``: the raw weights). With a handful of
        strokes, single steps swing the weights a lot; the average is steadier and
        generalises better.
    grad_clip_norm
        Scale each step's gradient down to at most this total norm (``None``: never).
        Gradient norms on sparse strokes range over two orders of magnitude from batch to
        batch (2D DSB, 10 objects: median 3-7, peaks of 35-120); unclipped, one such batch
        early on could throw the network into predicting only background for a hundred
        steps (an empty first overlay). At 1.0 nearly every step is scaled to norm 1 and
        AdamW's per-weight scaling does the rest; measured in docs/benchmarks.md
        ("What changed the defaults").
    augment
        Flips and 90 degree rotations, plus intensity jitter where ``intensity_jitter``
        allows it.
    intensity_jitter
        Random contrast scale and brightness shift of each patch: ``"on"``, ``"off"`` or
        ``"auto"``, which is on for 2D images and time-lapses and off for Z stacks (a Z
        axis of more than one slice; one slice is a 2D image). In a stack, brightness
        along Z says what is in focus: out-of-focus nuclei are dim and not foreground,
        and jitter teaches the model to call them foreground. (Measured
        before stack models saw absolute intensity and Z context: over the stroke sets
        measured, on and off tied, and off kept the out-of-focus slices clean;
        docs/benchmarks.md, "Stacks".)
    seed
        Seeds patch sampling, augmentation and weight initialisation. ``None`` for fresh
        randomness.
    device
        ``"auto"`` picks CUDA, then Apple MPS, then CPU.
    mixed_precision
        Use bf16 (or fp16 with loss scaling) autocast on CUDA. Never used on CPU, where
        bf16 convolutions are far slower than fp32.
    num_threads
        Torch CPU threads; ``None`` keeps torch's default.
    """

    patch_size: int = 128
    patch_size_3d: int = 48
    batch_size: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    fine_tune_lr_factor: float = 0.3
    max_steps: int | None = None
    max_seconds: float | None = None
    settle_steps: int | None = 500
    dice_weight: float = 0.0
    edge_weight: float | None = None
    region_weight: float | None = None
    class_balance: bool = True
    ema_decay: float | None = 0.995
    grad_clip_norm: float | None = 1.0
    augment: bool = True
    intensity_jitter: IntensityJitter = "auto"
    seed: int | None = 0
    device: DeviceName = "auto"
    mixed_precision: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.patch_size < 16 or self.patch_size_3d < 16:
            raise InputError(
                f"patch sizes must be >= 16, got {self.patch_size} and {self.patch_size_3d}"
            )
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.fine_tune_lr_factor <= 1:
            raise InputError(
                f"fine_tune_lr_factor must be in (0, 1], got {self.fine_tune_lr_factor}")
        if self.edge_weight is not None and not self.edge_weight >= 0:
            raise InputError(f"edge_weight must be >= 0 or None, got {self.edge_weight}")
        if self.region_weight is not None and not self.region_weight >= 0:
            raise InputError(
                f"region_weight must be >= 0 or None, got {self.region_weight}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise InputError(f"grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.settle_steps is not None and self.settle_steps < 1:
            raise InputError(f"settle_steps must be >= 1 or None, got {self.settle_steps}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.intensity_jitter not in INTENSITY_JITTER_CHOICES:
            raise InputError(
                f"intensity_jitter must be one of {', '.join(INTENSITY_JITTER_CHOICES)}, "
                f"got {self.intensity_jitter!r}"
            )
        if self.device not in DEVICE_CHOICES:
            raise InputError(f"device must be one of {', '.join(DEVICE_CHOICES)}, "
                             f"got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TileConfig:
    """How to cut a large image into tiles for prediction.

    Parameters
    ----------
    tile_size
        Side of the square tile fed to a 2D network, rounded up to the model's size
        multiple.
    tile_size_3d
        ``(Z, Y, X)`` extent of the tiles fed to a 3D network. Tiles are at least twice the
        halo plus one size multiple along each axis, whatever is asked here.
    halo
        Context cropped away around each tile's core. ``None`` uses the network's receptive
        field radius, which makes tiled prediction identical to whole-image prediction; for
        3D models that radius (43 voxels at depth 3) would make every tile mostly halo, so
        it is capped at ``halo_3d_cap`` (the outermost voxels of a receptive field carry
        little weight; tiles of a 3D prediction then agree to within a few voxels).
    halo_3d_cap
        Largest automatic halo for 3D models.
    batch_size
        Tiles per forward pass.
    """

    tile_size: int = 512
    tile_size_3d: tuple[int, int, int] = (64, 256, 256)
    halo: int | None = None
    halo_3d_cap: int = 24
    batch_size: int = 2

    def __post_init__(self) -> None:
        if self.tile_size < 16:
            raise InputError(f"tile_size must be >= 16, got {self.tile_size}")
        if len(self.tile_size_3d) != 3 or min(self.tile_size_3d) < 1:
            raise InputError(f"tile_size_3d must be 3 positive sizes, got {self.tile_size_3d}")
        if self.halo is not None and self.halo < 0:
            raise InputError(f"halo must be >= 0, got {self.halo}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Preset:
    """A named model + training + tiling combination sized for some hardware."""

    name: str
    description: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tile: TileConfig = field(default_factory=TileConfig)


PRESETS: dict[str, Preset] = {
    "cpu-small": Preset(
        name="cpu-small",
        description="16 base channels, depth 3: trains usefully in a minute on 2 CPU cores.",
        model=ModelConfig(depth=3, base_channels=16),
        train=TrainConfig(patch_size=96, patch_size_3d=40, batch_size=4, learning_rate=1e-3),
        tile=TileConfig(tile_size=512, tile_size_3d=(64, 256, 256), batch_size=1),
    ),
    "gpu": Preset(
        name="gpu",
        description="32 base channels, depth 4, residual blocks: for a CUDA or MPS GPU.",
        model=ModelConfig(depth=4, base_channels=32, residual=True),
        train=TrainConfig(patch_size=256, patch_size_3d=96, batch_size=16,
                          learning_rate=2e-3),
        tile=TileConfig(tile_size=1024, tile_size_3d=(64, 256, 256), batch_size=4),
    ),
}


def preset_for_device(device_type: str) -> Preset:
    """Return the preset that suits a device type (``"cpu"``, ``"cuda"``, ``"mps"``)."""
    return PRESETS["cpu-small" if device_type == "cpu" else "gpu"]


def get_preset(name: str, device_type: str = "cpu") -> Preset:
    """Look a preset up by name; ``"auto"`` chooses by device type.

    Raises
    ------
    InputError
        If the name is unknown.
    """
    if name == "auto":
        return preset_for_device(device_type)
    try:
        return PRESETS[name]
    except KeyError:
        choices = ", ".join(["auto", *PRESETS])
        raise InputError(f"unknown preset {name!r}; choose one of: {choices}") from None
