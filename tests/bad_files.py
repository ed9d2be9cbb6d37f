"""Files a user might be handed that must be refused: shared by the core, CLI and GUI tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from napari_unet.core.checkpoint import FORMAT_VERSION, to_dict
from napari_unet.core.model import TrainedModel


class RunsCode:
    """Unpickling this runs ``touch marker``: what a malicious model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(model: TrainedModel, path: Path, marker: Path) -> Path:
    """A real model file with a code-running object hidden in its metadata."""
    data = to_dict(model)
    data["metadata"]["payload"] = RunsCode(marker)
    torch.save(data, path)  # a plain (unsafe) pickle inside the usual zip container
    return path


def newer_checkpoint(model: TrainedModel, path: Path) -> Path:
    """A model file from a future version of napari-unet."""
    data = to_dict(model)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, path)
    return path


def corrupt_checkpoint(path: Path) -> Path:
    """The first bytes of a zip (what torch writes), then garbage."""
    path.write_bytes(b"PK\x03\x04garbage")
    return path


def corrupt_tiff(path: Path) -> Path:
    """A TIFF header followed by nothing sensible."""
    path.write_bytes(b"II*\x00\x08\x00\x00\x00" + b"\xff" * 64)
    return path
