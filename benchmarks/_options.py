"""Command-line options shared by the step-matched sweep scripts."""

from __future__ import annotations

import argparse
from typing import Any


def add_grad_clip_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--grad-clip-norm`` (a number, or ``none``; default: the preset's)."""
    parser.add_argument("--grad-clip-norm", default=None,
                        help="a number, or 'none' for no clipping (default: the preset's)")


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``TrainConfig`` fields the parsed options change (empty: the preset as it is)."""
    if args.grad_clip_norm is None:
        return {}
    clip = args.grad_clip_norm
    return {"grad_clip_norm": None if clip.lower() == "none" else float(clip)}
