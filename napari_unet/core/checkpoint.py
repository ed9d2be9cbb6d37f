"""One model file: weights, model shape, normalisation, class names, training history.

The file is a ``torch.save`` of plain containers and tensors, loaded with
``torch.load(weights_only=True)``: a model file received from a colleague cannot execute code
on load. A pickle that asks for anything beyond tensors and plain containers is refused with
a :class:`~napari_unet.core.errors.CheckpointError`.

Format history (``format_version``):

1. first version.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.config import ModelConfig
from napari_unet.core.errors import CheckpointError, InputError
from napari_unet.core.io import atomic_output
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.unet import build_unet

FORMAT_NAME = "napari-unet-model"
FORMAT_VERSION = 2
"""2 added ModelConfig.z_context and absolute_intensity; version 1 files load as neither."""


def to_dict(model: TrainedModel) -> dict[str, Any]:
    """Return the checkpoint contents as plain containers and CPU tensors."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.network.state_dict().items()},
        "normalization": model.normalization.to_dict(),
        "class_names": list(model.class_names),
        # Through JSON: only plain types may reach the file, or the safe loader refuses it
        # (torch.__version__, for one, is a str subclass that weights_only rejects).
        "metadata": json.loads(json.dumps(model.metadata, default=str)),
    }


def from_dict(data: dict[str, Any], source: str = "checkpoint") -> TrainedModel:
    """Rebuild a :class:`TrainedModel` from :func:`to_dict` output.

    Raises
    ------
    CheckpointError
        If the contents are not a napari-unet model of a format this version understands.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{source} is not a napari-unet model file")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} uses model format version {version}; this napari-unet understands up "
            f"to version {FORMAT_VERSION}: please upgrade napari-unet"
        )
    try:
        config = ModelConfig.from_dict(data["model_config"])
        network = build_unet(config)
        network.load_state_dict(data["state_dict"])
        normalization = Normalization.from_dict(data["normalization"])
        class_names = tuple(str(n) for n in data["class_names"])
    except (KeyError, TypeError, ValueError, RuntimeError, InputError) as err:
        raise CheckpointError(f"{source} is damaged or incomplete: {err}") from err
    if normalization.num_channels != config.in_channels:
        raise CheckpointError(f"{source}: normalisation and model disagree on channel count")
    if len(class_names) != config.num_classes:
        raise CheckpointError(f"{source}: class names and model disagree on class count")
    network.eval()
    return TrainedModel(network, normalization, class_names, dict(data.get("metadata", {})))


def save_model(model: TrainedModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` atomically (a crash mid-write leaves any old file intact).

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(to_dict(model), tmp)
    return path


def load_model(path: str | os.PathLike[str]) -> TrainedModel:
    """Load a model file safely (no code in the file is executed).

    Raises
    ------
    CheckpointError
        If the file is missing, not a model, damaged, from a newer format, or contains
        anything other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # torch names the disallowed class/function
            raise CheckpointError(
                f"{path} was refused: it contains objects other than tensors and plain data, "
                "which could run code when loaded. Only load model files from people you "
                "trust."
            ) from err
        raise CheckpointError(f"{path} is not a readable model file (corrupt)") from err
    except Exception as err:  # noqa: BLE001 - any failure to parse means "not a model file"
        raise CheckpointError(f"{path} is not a readable model file ({err})") from err
    return from_dict(data, source=str(path))
