"""Command line: ``napari-unet train | predict | demo``.

Built on :mod:`napari_unet.core` only (``demo`` imports napari lazily). User errors end with a
one-line message and exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from napari_unet import __version__
from napari_unet.core.axes import MODE_CHOICES
from napari_unet.core.config import (
    DEVICE_CHOICES,
    INTENSITY_JITTER_CHOICES,
    MAX_Z_CONTEXT,
    PRESETS,
    ModelConfig,
    get_preset,
)
from napari_unet.core.errors import InputError, NapariUnetError
from napari_unet.core.io import ImageData

if TYPE_CHECKING:  # imported where used: `--help` should not wait for torch
    from napari_unet.core.predict_files import FileDone, FileEvent

_R = TypeVar("_R")

EXIT_USER_ERROR = 2
# Seconds between redraws of a progress bar written to a file rather than a terminal (a
# batch job's log): each redraw adds a line's worth of text there, and a bar redrawn at
# every step filled a log with hundreds per run.
LOG_REDRAW_S = 10.0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="Train a U-Net from a few painted strokes and segment images with it.",
        epilog="Labels: 0 = not painted (ignored), 1 = background, 2, 3, ... = object classes.",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model from an image and painted strokes")
    train.add_argument("--image", required=True, type=Path, nargs="+",
                       help="image TIFF: 2D, Z stack, time-lapse, optionally multichannel; "
                            "or several, to learn from the strokes on each (the first "
                            "sets the normalisation and, with --anisotropy, Z spacing)")
    train.add_argument("--labels", required=True, type=Path, nargs="+",
                       help="strokes TIFF with the image's axes minus C: 0 unpainted, "
                            "1 background, 2.. objects; paint any slices or frames. One "
                            "per --image, in the same order")
    train.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="train for this long (default 60)")
    budget.add_argument("--steps", type=int, help="train for this many steps")
    train.add_argument("--init", type=Path, help="fine-tune this model instead of a new one")
    train.add_argument("--preset", default="auto", choices=["auto", *PRESETS],
                       help="model/training size (default: auto, by device)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--mode", default="auto", choices=["auto", *MODE_CHOICES],
                       help="for Z stacks: a 2D model over slices or a true 3D model "
                            "(default auto: 2D over slices, ~8x the steps per second on a CPU)")
    train.add_argument("--intensity-jitter", default="auto", choices=INTENSITY_JITTER_CHOICES,
                       help="random contrast/brightness of training patches (default auto: "
                            "on for 2D images and time-lapses, off for Z stacks, where "
                            "brightness tells in-focus objects from out-of-focus blur)")
    train.add_argument("--z-context", type=int, choices=range(MAX_Z_CONTEXT + 1),
                       metavar=f"0..{MAX_Z_CONTEXT}",
                       help="for Z stacks in 2D mode: neighbouring slices on each side the "
                            "model sees with each slice (default 1)")
    train.add_argument("--absolute-intensity", default="auto", choices=["auto", "on", "off"],
                       help="let the model see how bright a region is, not only its "
                            "contrast (default auto: on for Z stacks, where brightness tells "
                            "in-focus objects from blur; off for 2D images)")
    train.add_argument("--edge-weight", type=float, metavar="W",
                       help="weight of the term that keeps neighbouring pixels of like "
                            "brightness in one class, between strokes and the edge; it "
                            "steadies training on stacks, and costs textured objects "
                            "(default: 1 for Z stacks in 2D mode, 0 otherwise)")
    train.add_argument("--region-weight", type=float, metavar="W",
                       help="weight of the term that draws an object's edge where its "
                            "brightness is half way between the classes'; 0 for classes "
                            "that brightness does not tell apart (default: 0.25)")
    train.add_argument("--stack-steps", type=int, metavar="N",
                       help="for Z stacks: stop after at most N steps, whatever the time "
                            "budget; trained longer on the same strokes, stack models got "
                            "worse (default 500, as the widget's pause; 0: no limit)")
    train.add_argument("--anisotropy", type=float,
                       help="Z spacing / XY pixel size (default: from ImageJ metadata, else 1)")
    _add_common(train)

    predict = sub.add_parser("predict", help="segment an image with a trained model")
    predict.add_argument("--model", required=True, type=Path, help="model file (.pt)")
    predict.add_argument("--image", required=True, type=Path, nargs="+",
                         help="image TIFF; or several, folders of them, or patterns such "
                              "as 'data/*.tif' (then the outputs are folders, each file "
                              "named after its image)")
    predict.add_argument("--out", required=True, type=Path,
                         help="class map TIFF to write (ids as painted, 1 = background); "
                              "a folder for several images")
    predict.add_argument("--probabilities", type=Path,
                         help="also write per-class probabilities (float32 TIFF, classes "
                              "as ImageJ channels); a folder for several images")
    predict.add_argument("--instances", type=Path,
                         help="also write instance labels (one id per object, 0 = "
                              "background; touching objects split by watershed); a "
                              "folder for several images")
    predict.add_argument("--min-size", type=int, metavar="N",
                         help="instances: drop objects smaller than this many pixels "
                              "(voxels); default 16 in 2D, 64 in 3D (4 pixels across)")
    predict.add_argument("--seed-depth", type=float, metavar="H",
                         help="instances: a distance peak must rise H pixels above the "
                              "saddle to a higher one to become its own object; larger "
                              "merges more (default 1 in 2D, 3 in 3D)")
    predict.add_argument("--tile-size", type=int, help="tile side in pixels (default by device)")
    predict.add_argument("--no-tta", dest="tta", action="store_false",
                         help="skip test-time augmentation (8x faster, slightly less accurate)")
    predict.add_argument("--skip-existing", action="store_true",
                         help="leave out images whose results exist (to finish a batch "
                              "that was stopped)")
    _add_common(predict)

    demo = sub.add_parser("demo", help="open napari with the sample image, strokes and trainer")
    demo.add_argument("--no-show", action="store_true", help=argparse.SUPPRESS)
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--axes", help="axes of the image from T, C, Z, Y, X, e.g. ZYX, TYX, CYX, "
                                  "YXC (default: from the file, else guessed and reported)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where to compute (default auto: CUDA, then MPS, then CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


_AXES_SOURCE = {"file": "from the file", "given": "from --axes"}


def _axes_note(image: ImageData, axes: str, how: str) -> str:
    shape = "x".join(map(str, image.data.shape))
    return f"axes {axes} ({shape}, {how})"


@contextlib.contextmanager
def _explaining_axes(path: Path, note: str) -> Iterator[None]:
    """Name the axes in any set-up error (which stays one line)."""
    try:
        yield
    except NapariUnetError as err:
        raise type(err)(f"{err} [{path.name}: {note}; use --axes to change]") from err


# What to leave out when a job would not fit in memory (core.memory_budget).
_MEMORY_REMEDIES = {"instances": "leave out --instances",
                    "probabilities": "leave out --probabilities"}


def _announce_axes(args: argparse.Namespace, path: Path, image: ImageData, axes: str,
                   how: str) -> None:
    """Say which axes were used; a plain 2D image (YX) needs no note."""
    if len(axes) > 2:
        _say(args, f"{path.name}: {_axes_note(image, axes, how)}; use --axes to change")


def _check_init_agrees(config: ModelConfig, z_context: int | None,
                       absolute: bool | None) -> None:
    """Refuse input settings a model being fine-tuned cannot change (its first layer)."""
    if z_context not in (None, config.context_slices):
        raise InputError(f"--z-context {z_context}: the model to fine-tune sees "
                         f"{config.context_slices} neighbouring slice(s) on each side; "
                         "leave --z-context out, or train a new model")
    if absolute not in (None, config.sees_absolute_intensity):
        raise InputError(f"--absolute-intensity {'on' if absolute else 'off'}: the model to "
                         f"fine-tune was trained with it "
                         f"{'on' if config.sees_absolute_intensity else 'off'}; leave "
                         "--absolute-intensity out, or train a new model")


def _redraw_interval() -> float:
    """Seconds between progress-bar redraws: every step in a terminal, else LOG_REDRAW_S."""
    return 0.0 if sys.stderr.isatty() else LOG_REDRAW_S


def _cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_unet.core.checkpoint import load_model, save_model
    from napari_unet.core.device import describe_device, resolve_device
    from napari_unet.core.io import check_output_path
    from napari_unet.core.training import TrainingImage, TrainingRun

    if len(args.labels) != len(args.image):
        raise InputError(f"{len(args.image)} image(s) but {len(args.labels)} strokes "
                         "file(s): give one --labels file per --image, in the same order")
    check_output_path(args.out, args.overwrite)  # fail now, not after a minute of training
    device = resolve_device(args.device)
    preset = get_preset(args.preset, device.type)
    init = load_model(args.init) if args.init else None
    volumetric = init.config.spatial_dims == 3 if init is not None else args.mode == "3d"
    pairs = [_read_training_pair(args, image_path, labels_path, volumetric)
             for image_path, labels_path in zip(args.image, args.labels)]
    image, labels, axes, how = pairs[0]
    more = [TrainingImage(other.data, other_labels, other_axes, name=path.name)
            for (other, other_labels, other_axes, _), path in zip(pairs[1:], args.image[1:])]
    absolute = {"auto": None, "on": True, "off": False}[args.absolute_intensity]
    if init is not None:
        _check_init_agrees(init.config, args.z_context, absolute)
    anisotropy = args.anisotropy or image.anisotropy or 1.0
    seconds = args.seconds if args.seconds is not None or args.steps else 60.0
    if args.stack_steps is not None and args.stack_steps < 0:
        raise InputError(f"--stack-steps must be 0 (no limit) or more, got {args.stack_steps}")
    stack_steps = preset.train.settle_steps if args.stack_steps is None else (
        args.stack_steps or None)
    config = replace(preset.train, max_seconds=seconds, max_steps=args.steps, seed=args.seed,
                     device=args.device, intensity_jitter=args.intensity_jitter,
                     edge_weight=args.edge_weight, region_weight=args.region_weight,
                     settle_steps=stack_steps)
    with _explaining_axes(args.image[0], _axes_note(image, axes, how)):
        run = TrainingRun(
            image.data, labels, config, axes=axes,
            mode=None if args.mode == "auto" else args.mode,
            model_config=replace(preset.model, anisotropy=anisotropy,
                                 z_context=args.z_context, absolute_intensity=absolute),
            init=init, more=more,
        )
    for path, (read, _, read_axes, read_how) in zip(args.image, pairs):
        _announce_axes(args, path, read, read_axes, read_how)
    where = f", {len(pairs)} images" if more else ""
    if run.stack.num_samples > 1:
        if run.mode == "3d" or "Z" not in axes:
            unit = "frames"
        else:
            unit = "planes" if "T" in axes else "slices"
        where += f", strokes on {run.painted_samples} of {run.stack.num_samples} {unit}"
        where += " of the first" if more else ""
    stack_limit = run.step_bound if run.step_bound != args.steps else None
    if stack_limit is not None:
        where += f"; at most {stack_limit} steps on a Z stack, --stack-steps to change"
    # The lower rate of a continued run is said: a user comparing runs should know it.
    what = (f"fine-tuning {args.init} at {config.fine_tune_lr_factor:g} x the learning rate"
            if init else "new model")
    _say(args, f"training a {run.mode.upper()} model on {describe_device(run.device)} with "
               f"preset {preset.name} ({what}{where})")

    # Percent of whichever bound comes first (steps, seconds, or a stack's step limit), so
    # the bar reaches the end when training does.
    bar = tqdm(total=100, disable=args.quiet, file=sys.stderr,
               bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]{postfix}")
    redraw_every = _redraw_interval()
    last_redraw = -redraw_every
    interrupted = False
    steps_taken = 0
    steps = run.steps()
    try:
        for progress in steps:
            steps_taken = progress.step
            bar.n = round(100 * (progress.fraction_done or 0.0), 1)
            bar.set_postfix(step=progress.step, loss=f"{progress.loss:.3f}", refresh=False)
            if time.monotonic() - last_redraw >= redraw_every:
                bar.refresh()
                last_redraw = time.monotonic()
            if progress.notice and not args.quiet:
                bar.write(progress.notice, file=sys.stderr)
    except KeyboardInterrupt:
        # Ctrl-C ends training early; the model trained so far is still worth keeping.
        interrupted = True
        steps.close()
    finally:
        bar.close()
    model = run.model
    if model.metadata.get("steps", 0) == 0:
        _say(args, "stopped before the first step; no model written")
        return 130
    save_model(model, args.out)
    meta = model.metadata
    if stack_limit is not None and steps_taken >= stack_limit and not interrupted:
        _say(args, f"stopped at {stack_limit} steps, the limit for Z stacks: trained longer "
                   "on the same strokes, stack models got worse (--stack-steps 0 lifts it)")
    _say(args, f"{'stopped early: ' if interrupted else ''}trained {meta['steps']} steps in "
               f"{meta['seconds']:.1f} s, final loss {meta['final_loss']:.4f}; wrote {args.out}")
    return 130 if interrupted else 0


def _read_training_pair(args: argparse.Namespace, image_path: Path, labels_path: Path,
                        volumetric: bool) -> tuple[ImageData, np.ndarray, str, str]:
    """Read an image and its strokes; return them, the axes, and where the axes came from."""
    from napari_unet.core.axes import pair_axes, shape_without_channels
    from napari_unet.core.io import read_labels, read_tiff
    from napari_unet.core.memory_budget import check_before_reading

    image = read_tiff(image_path, args.axes, check_before_reading(
        f"training on {image_path}", volumetric=volumetric, remedies=_MEMORY_REMEDIES))
    guessed = image.axes_source == "guessed"
    how = "guessed from the shapes" if guessed else _AXES_SOURCE[image.axes_source]
    with _explaining_axes(image_path, _axes_note(image, image.axes, how)):
        if guessed:
            # The strokes' shape tells channels from slices better than the image alone.
            labels = read_labels(labels_path)
            axes = pair_axes(image.data.shape, labels.shape)
        else:
            axes = image.axes
            labels = read_labels(labels_path, shape_without_channels(image.data.shape, axes))
    return image, labels, axes, how


def _cmd_predict(args: argparse.Namespace) -> int:
    from napari_unet.core.batch import (
        BatchItem,
        image_paths,
        is_batch,
        make_folders,
        plan_batch,
    )
    from napari_unet.core.checkpoint import load_model
    from napari_unet.core.device import resolve_device
    from napari_unet.core.instances import InstanceConfig, check_instance_options
    from napari_unet.core.io import check_output_path
    from napari_unet.core.predict_files import PredictOptions, predict_file, predict_files

    batch = is_batch(args.image, args.out)
    images = image_paths(args.image)
    if batch:
        items, skipped = plan_batch(images, args.out, args.probabilities, args.instances,
                                    overwrite=args.overwrite,
                                    skip_existing=args.skip_existing)
    else:
        items, skipped = [BatchItem(images[0], args.out, args.probabilities,
                                    args.instances)], []
        outputs = items[0].outputs
        if len(set(outputs)) != len(outputs):
            raise InputError("--out, --probabilities and --instances must be different files")
        if args.skip_existing and not args.overwrite and all(p.exists() for p in outputs):
            _say(args, f"{images[0]}: its results exist; left out (--skip-existing)")
            return 0
        for path in outputs:
            check_output_path(path, args.overwrite)
    # Checked before predicting, not after minutes of it, and named as they were typed.
    check_instance_options(args.min_size, args.seed_depth, ("--min-size", "--seed-depth"))
    device = resolve_device(args.device)
    tiles = get_preset("auto", device.type).tile
    if args.tile_size:
        tiles = replace(tiles, tile_size=args.tile_size)
    options = PredictOptions(
        axes=args.axes, test_time_augmentation=args.tta, device=device,
        instances=InstanceConfig(min_size=args.min_size, h=args.seed_depth),
        overwrite=args.overwrite, axes_hint="use --axes to change",
        memory_remedies=_MEMORY_REMEDIES)
    model = load_model(args.model)
    if not batch:
        _report_written(args, _show_progress(args, predict_file(model, items[0], tiles,
                                                                options)))
        return 0

    make_folders(args.out, args.probabilities, args.instances)
    if skipped:
        _say(args, f"{len(skipped)} of {len(images)} images already have their results; "
                   "left out")
    if not items:
        return 0
    shown = _FilesShown()
    try:
        summary = _show_progress(args, predict_files(model, items, tiles, options), shown)
    except KeyboardInterrupt:
        print(f"napari-unet predict: stopped at {items[shown.finished].image}; the "
              f"{shown.finished} result(s) before it are complete (each file is written "
              "whole or not at all); run again with --skip-existing to do the rest",
              file=sys.stderr)
        return 130
    described = f"segmented {len(summary.done)} of {len(items)} images into {args.out}"
    if summary.failed:
        print(f"napari-unet predict: {described}; {len(summary.failed)} failed: "
              f"{', '.join(f.item.image.name for f in summary.failed)}", file=sys.stderr)
        return EXIT_USER_ERROR
    _say(args, described)
    return 0


@dataclass
class _FilesShown:
    """How many files a prediction has finished (written or failed), for a Ctrl-C."""

    finished: int = 0


def _show_progress(args: argparse.Namespace, gen: Generator[FileEvent, None, _R],
                   shown: _FilesShown | None = None) -> _R:
    """Run a prediction, with a progress bar per file and a line per file written."""
    from tqdm import tqdm

    from napari_unet.core.inference import TileProgress
    from napari_unet.core.predict_files import FileDone, FileFailed, FileStarted

    shown = shown or _FilesShown()
    bar: tqdm | None = None
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as finished:
                return finished.value
            if isinstance(event, FileStarted):
                if event.total > 1:
                    _say(args, f"[{event.number}/{event.total}] {event.item.image}")
                if len(event.axes) > 2:  # a plain 2D image (YX) needs no note
                    _say(args, f"{event.item.image.name}: {event.axes_note}; "
                               "use --axes to change")
                # Given its total up front: a bar without one first prints an empty
                # "0tile [00:00, ?]" line, one per image in a batch's log.
                bar = tqdm(total=event.tiles_total, unit="tile", disable=args.quiet,
                           file=sys.stderr, mininterval=_redraw_interval() or 0.1)
            elif isinstance(event, TileProgress) and bar is not None:
                bar.total = event.tiles_total
                bar.update(event.tiles_done - bar.n)
                if event.notice and not args.quiet:
                    bar.write(event.notice, file=sys.stderr)
            elif isinstance(event, FileDone | FileFailed):
                if bar is not None:
                    bar.close()
                    bar = None
                shown.finished += 1
                if isinstance(event, FileDone):
                    _report_written(args, event)
                else:
                    # One bad file (unreadable, other channels) does not end the batch.
                    said = event.describe(str(event.item.image))
                    print(f"napari-unet predict: error: {said}", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
        gen.close()


def _report_written(args: argparse.Namespace, done: FileDone) -> None:
    shares = ", ".join(f"{name} {100 * share:.1f}%" for name, share in done.class_shares.items())
    _say(args, f"wrote {done.item.out} ({'x'.join(map(str, done.shape))}; {shares})")
    if done.objects is not None:
        fullest = " in the fullest frame" if "T" in done.axes else ""
        _say(args, f"wrote {done.item.instances} ({done.objects} objects{fullest})")


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_unet._demo import run_demo

    return run_demo(show=not args.no_show)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _build_parser().parse_args(argv)
    commands = {"train": _cmd_train, "predict": _cmd_predict, "demo": _cmd_demo}
    try:
        return commands[args.command](args)
    except NapariUnetError as err:
        print(f"napari-unet {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
