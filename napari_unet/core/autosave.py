"""Autosave: strokes and the current model, kept on disk so that nothing is lost.

A *session folder* belongs to one image:

- next to the image when it came from a file: ``<folder>/<image name>.napari-unet/``;
- otherwise (an image from a plugin, the clipboard, a script) in the per-user data folder,
  under a fingerprint of the pixels: ``<data>/napari-unet/sessions/<fingerprint>/``.

It holds ``annotations.tif`` (the strokes, ImageJ TIFF with their axes), ``model.pt`` (a
normal model file, loaded safely) and ``session.json`` (what they belong to, when they
were saved, and the settings the plugin trained with, so a restore brings those back
too). When the strokes come from another annotation layer than before (the user chose
another one, e.g. a corrected prediction), the last save of the previous layer is kept
as ``annotations (<its name>).tif`` and restored with the rest. Every file is written
atomically, so a crash or a kill mid-write leaves the previous good copy. Reopening the
same image finds the folder again and the plugin offers to restore it.

Set ``NAPARI_UNET_DATA_DIR`` to move the per-user folder (tests do).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet import __version__
from napari_unet.core.checkpoint import load_model, save_model
from napari_unet.core.errors import NapariUnetError
from napari_unet.core.io import (
    atomic_output,
    fit_length_one_axes,
    read_tiff,
    write_labels,
)
from napari_unet.core.model import TrainedModel

ANNOTATIONS = "annotations.tif"
EARLIER_ANNOTATIONS = "annotations ({}).tif"
MODEL = "model.pt"
MANIFEST = "session.json"

# Strokes (a writer thread), the model (the training worker) and settings (the GUI) each
# update session.json by read-modify-write; one lock keeps one from undoing another's.
_MANIFEST_LOCK = threading.Lock()


def user_data_dir() -> Path:
    """Return the per-user folder for sessions of images that have no file.

    ``NAPARI_UNET_DATA_DIR`` if set; else the platform's convention (XDG on Linux,
    ``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%`` on Windows).
    """
    override = os.environ.get("NAPARI_UNET_DATA_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "napari-unet"


def fingerprint(image: np.ndarray) -> str:
    """Return a short stable hash of an image's shape, dtype and (subsampled) pixels.

    Subsampled so that a multi-gigabyte stack is fingerprinted in milliseconds; the same
    image gives the same fingerprint in every session.
    """
    data = np.ascontiguousarray(np.asarray(image).ravel()[:: max(1, image.size // 1_000_000)])
    digest = hashlib.sha1(f"{image.shape}|{image.dtype}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:16]


def session_dir(
    image: np.ndarray | None, source: str | os.PathLike[str] | None = None
) -> Path:
    """Where the autosaves of an image live (see the module docstring).

    Parameters
    ----------
    image
        The pixels, used for the fingerprint when there is no usable ``source``; ``None``
        for lazily loaded data that should not be read whole.
    source
        The file the image was opened from, if any. Its folder must be writable; if not,
        the per-user folder is used.

    Raises
    ------
    NapariUnetError
        If there is neither a usable source nor pixels to fingerprint.
    """
    if source is not None:
        path = Path(source)
        if path.parent.is_dir() and os.access(path.parent, os.W_OK):
            return path.parent / f"{path.name}.napari-unet"
    if image is None:
        raise NapariUnetError("this image has no file and is not in memory: no autosave")
    return user_data_dir() / "sessions" / fingerprint(image)


@dataclass(frozen=True)
class SavedSession:
    """What a session folder holds.

    Attributes
    ----------
    folder
        The session folder.
    annotations
        The strokes, or ``None`` if none were saved.
    annotation_axes
        Their axes (``"YX"``, ``"ZYX"``, ...).
    model
        The model, or ``None`` if none was saved (or it could not be read).
    saved_at
        Unix time of the last save.
    notes
        Problems met while reading (e.g. a damaged model file), for the user.
    settings
        What :meth:`Autosaver.save_settings` recorded (the caller's own keys), or empty.
    annotation_layer
        The name of the layer ``annotations`` were saved from (``None``: not recorded).
    earlier_annotations
        Strokes of annotation layers saved before that one, by layer name.
    """

    folder: Path
    annotations: np.ndarray | None
    annotation_axes: str | None
    model: TrainedModel | None
    saved_at: float
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    annotation_layer: str | None = None
    earlier_annotations: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing to restore."""
        return self.annotations is None and self.model is None and \
            not self.earlier_annotations


class Autosaver:
    """Writes strokes and models of one image into its session folder.

    Parameters
    ----------
    folder
        The session folder (created on the first save).
    image_name, image_shape
        Recorded in ``session.json`` so a restore can say what it restores.
    """

    def __init__(self, folder: Path, image_name: str, image_shape: tuple[int, ...]) -> None:
        self.folder = Path(folder)
        self._info: dict[str, Any] = {"image": image_name, "image_shape": list(image_shape),
                                      "napari_unet_version": __version__}

    def save_annotations(self, labels: np.ndarray, axes: str | None = None,
                         layer_name: str | None = None,
                         aliases: tuple[str, ...] = ()) -> Path:
        """Write the strokes atomically; returns the file written.

        Parameters
        ----------
        labels, axes
            The strokes and their axes.
        layer_name
            The annotation layer they come from. If the strokes saved so far came from
            another layer, that layer's file is kept under its name first: choosing
            another annotation layer must not overwrite the only copy of the first.
        aliases
            Other names the same layer was saved under (it was renamed, or restored
            from them): those saves are this layer's, not another's to keep.

        Raises
        ------
        NapariUnetError
            If the folder cannot be created or written.
        """
        self._ensure_folder()
        current = self.folder / ANNOTATIONS
        with _MANIFEST_LOCK:
            manifest = read_manifest(self.folder)
        fields: dict[str, Any] = {}
        superseded: list[Any] = []
        if layer_name is not None:
            previous = manifest.get("annotation_layer")
            listed = manifest.get("earlier_annotations")
            earlier = dict(listed) if isinstance(listed, dict) else {}
            same = {layer_name, *aliases}
            if isinstance(previous, str) and previous not in same and current.is_file():
                # Copied (atomically) and listed before the new strokes replace it: a
                # crash at any point leaves every layer's last save where a restore
                # finds it.
                kept = self._kept_file(previous, earlier)
                try:
                    with atomic_output(kept) as tmp:
                        shutil.copyfile(current, tmp)
                except OSError as err:
                    raise NapariUnetError(f"cannot keep {current} as {kept}: {err}") from err
                earlier[previous] = kept.name
                self._update_manifest(earlier_annotations=earlier)
            # This layer's own older file (it was chosen before, then another one) is
            # superseded by what is written now.
            superseded = [earlier.pop(name) for name in same if name in earlier]
            fields.update(annotation_layer=layer_name, earlier_annotations=earlier)
        path = write_labels(current, labels, axes=axes, overwrite=True)
        self._update_manifest(annotation_axes=axes or "", annotations_saved_at=time.time(),
                              **fields)
        for file_name in superseded:
            if isinstance(file_name, str):
                (self.folder / Path(file_name).name).unlink(missing_ok=True)
        return path

    def _kept_file(self, layer_name: str, earlier: dict[str, Any]) -> Path:
        """Return the file ``layer_name``'s strokes are kept in, unused by other layers."""
        taken = {str(f) for name, f in earlier.items() if name != layer_name}
        safe = _file_safe(layer_name)
        candidate, number = EARLIER_ANNOTATIONS.format(safe), 1
        while candidate in taken:  # two names the same once made safe ("a/b", "a_b")
            number += 1
            candidate = EARLIER_ANNOTATIONS.format(f"{safe} {number}")
        return self.folder / candidate

    def save_model(self, model: TrainedModel) -> Path:
        """Write the model atomically; returns the file written."""
        self._ensure_folder()
        path = save_model(model, self.folder / MODEL)
        self._update_manifest(model_saved_at=time.time(),
                              model_steps=int(model.metadata.get("steps", 0)))
        return path

    def save_settings(self, settings: dict[str, Any]) -> None:
        """Record ``settings`` (JSON-serialisable values) with the session.

        Raises
        ------
        NapariUnetError
            If the folder cannot be created or written.
        """
        self._ensure_folder()
        try:
            self._update_manifest(settings=settings)
        except OSError as err:
            raise NapariUnetError(f"cannot write {self.folder / MANIFEST}: {err}") from err

    def _ensure_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise NapariUnetError(
                f"cannot create the autosave folder {self.folder}: {err}") from err

    def _update_manifest(self, **fields: Any) -> None:
        with _MANIFEST_LOCK:
            manifest = read_manifest(self.folder)
            manifest.update(self._info, **fields)
            with atomic_output(self.folder / MANIFEST) as tmp:
                tmp.write_text(json.dumps(manifest, indent=1))


def _file_safe(name: str) -> str:
    """Return ``name`` with characters that some file systems refuse replaced by ``_``."""
    return "".join("_" if c in '<>:"/\\|?*' or ord(c) < 32 else c for c in name)[:100]


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read the folder's ``session.json`` (an empty dict if missing or unreadable)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_session(folder: Path, expected_shape: tuple[int, ...] | None = None) -> SavedSession:
    """Read what a session folder holds; damaged parts are skipped with a note.

    Parameters
    ----------
    folder
        A session folder (it need not exist).
    expected_shape
        The annotations' shape for the current image; saved strokes of another shape are
        not offered.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    notes: list[str] = []
    annotations = axes = None
    if (folder / ANNOTATIONS).is_file():
        saved = _read_strokes(folder / ANNOTATIONS, expected_shape, "saved strokes", notes)
        if saved is not None:
            annotations, file_axes = saved
            axes = manifest.get("annotation_axes") or file_axes
    earlier: dict[str, np.ndarray] = {}
    listed = manifest.get("earlier_annotations")
    for name, file_name in (listed.items() if isinstance(listed, dict) else ()):
        path = folder / Path(str(file_name)).name  # never outside the folder
        if path.is_file():
            kept = _read_strokes(path, expected_shape, f"saved strokes of '{name}'", notes)
            if kept is not None:
                earlier[str(name)] = kept[0]
    model = None
    if (folder / MODEL).is_file():
        try:
            model = load_model(folder / MODEL)
        except NapariUnetError as err:
            notes.append(f"saved model unreadable: {err}")
    saved_at = max(float(manifest.get("annotations_saved_at", 0)),
                   float(manifest.get("model_saved_at", 0)))
    settings = manifest.get("settings")
    layer = manifest.get("annotation_layer")
    return SavedSession(folder, annotations, axes, model, saved_at, tuple(notes),
                        settings if isinstance(settings, dict) else {},
                        layer if isinstance(layer, str) and annotations is not None else None,
                        earlier)


def _read_strokes(path: Path, expected_shape: tuple[int, ...] | None, what: str,
                  notes: list[str]) -> tuple[np.ndarray, str] | None:
    """Read saved strokes and the axes in their file.

    ``None``, with a note, if unreadable or of another shape than ``expected_shape``
    (length-1 axes aside: the strokes then take the expected shape).
    """
    try:
        saved = read_tiff(path)
    except NapariUnetError as err:
        notes.append(f"{what} unreadable: {err}")
        return None
    if expected_shape is None:
        return saved.data, saved.axes
    fitted = fit_length_one_axes(saved.data, tuple(expected_shape))
    if fitted is not None:
        return fitted, saved.axes
    notes.append(f"{what} have shape {saved.data.shape}, the image needs "
                 f"{tuple(expected_shape)}: not restored")
    return None
