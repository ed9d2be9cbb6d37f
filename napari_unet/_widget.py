"""The U-Net trainer dock widget: pick layers, paint, Train, watch the overlay improve.

No torch maths here: the widget copies arrays on the main thread, hands them with core
objects to workers (``_workers``), and applies what they yield (``_on_*`` handlers) on the
main thread. UI state lives in one evented :class:`~napari_unet._state.TrainerState`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    LineEdit,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import (
    notification_manager,
    show_error,
    show_info,
    show_warning,
)
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet import _label_edits
from napari_unet._autosave import SAVED_AS_KEY, StrokeAutosave, saver_for
from napari_unet._folder_prediction import Existing, FolderPlan, FolderProgress, plan_folder
from napari_unet._gc_pause import pause_full_collections, resume_full_collections
from napari_unet._image_layers import (
    bytes_added,
    downsampling,
    full_resolution,
    pixels_for_job,
)
from napari_unet._label_edits import LabelEdits
from napari_unet._loss_plot import LossPlot
from napari_unet._outputs import (
    CONFIDENCE_LAYER,
    INSTANCES_LAYER,
    PREDICTION_LAYER,
    OutputTarget,
    clear_outputs,
    is_corrected_prediction,
    is_output,
    show_instances,
    show_prediction,
)
from napari_unet._state import PassKind, TrainerState
from napari_unet._training_set import PaintedImage, TrainingSet
from napari_unet._workers import (
    TRAINING_JOB,
    Inbox,
    RunStarted,
    folder_prediction_worker,
    live_training_worker,
    prediction_worker,
    release_freed_memory_soon,
    start_warm_up,
    wait_for_warm_up,
)
from napari_unet.core.autosave import SavedSession, load_session
from napari_unet.core.axes import (
    Mode,
    infer_axes,
    label_axes,
    pair_axes,
    parse_axes,
    shape_without_channels,
)
from napari_unet.core.batch import make_folders
from napari_unet.core.checkpoint import load_model, save_model
from napari_unet.core.config import (
    EDGE_SMOOTHING_WEIGHTS,
    INTENSITY_JITTER_CHOICES,
    PRESETS,
    ModelConfig,
    Preset,
    TrainConfig,
    get_preset,
)
from napari_unet.core.device import resolve_device
from napari_unet.core.errors import InputError, NapariUnetError
from napari_unet.core.inference import TileProgress, model_axes
from napari_unet.core.instances import InstanceConfig
from napari_unet.core.io import write_labels
from napari_unet.core.labels import default_class_names
from napari_unet.core.live import InstancesUpdate, Notice, RegionUpdate, SettleUpdate
from napari_unet.core.memory_budget import array_bytes, check_memory, memory_need
from napari_unet.core.model import TrainedModel
from napari_unet.core.predict_files import FileEvent, PredictOptions
from napari_unet.core.training import (
    LabelUpdate,
    TrainingImage,
    TrainingRun,
    TrainProgress,
    TrainResult,
)
from napari_unet.core.view_first import PassProgress, PredictionUpdate

MODES = {"auto": None, "2D over slices": "2d", "3D": "3d"}
ANNOTATION_LAYER = "annotations"
# Images up to this many pixels are predicted whole at every refresh; larger ones predict
# the field of view first.
_WHOLE_IMAGE_PIXELS = 1024 * 1024
# What to switch off when a job would not fit in memory (core.memory_budget).
_MEMORY_REMEDIES = {"instances": "switch off the instances layer",
                    "confidence": "switch off the confidence layer"}
_LABELS_QUIET_MS = 300  # send strokes this long after the last paint event


def class_names(typed: str, at_least: int, exactly: int | None = None) -> tuple[str, ...]:
    """Names typed by the user (comma-separated), padded with defaults to the class count."""
    names = [n.strip() for n in typed.split(",") if n.strip()]
    count = exactly if exactly is not None else max(at_least, len(names))
    defaults = default_class_names(count)
    return tuple(names[i] if i < len(names) else defaults[i] for i in range(count))


def describe_duration(seconds: float) -> str:
    """Say a time left the way a person would: "40 s", "3 min", "1 h 20 min"."""
    if seconds < 59.5:  # so 59.7 s reads "1 min", not "60 s"
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def viewer_camera(viewer: napari.viewer.Viewer) -> Any:
    """Return the camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def layer_axes(layer: Image) -> str:
    """Guess a layer's axes: its axis labels when they are letters, else by dimensionality.

    RGB layers get a trailing ``C``. napari's default labels (``"-3"``, ...) say nothing.
    """
    labels = [str(a).strip().upper() for a in getattr(layer, "axis_labels", ())]
    if len(labels) == layer.ndim and all(len(a) == 1 for a in labels):
        try:
            return parse_axes("".join(labels) + ("C" if layer.rgb else ""))
        except InputError:
            pass
    return infer_axes(tuple(full_resolution(layer).shape), rgb=layer.rgb)


def _compact(labels: np.ndarray) -> np.ndarray:
    """Return saved strokes as uint8 when their ids fit (a TIFF may widen them)."""
    return labels.astype(np.uint8, copy=False) if labels.max(initial=0) < 256 else labels


def _stop_workers(workers: list) -> None:
    """Stop and wait for workers; a plain function so it can run as the widget is deleted."""
    for inbox, worker in list(workers):
        if inbox is not None:
            inbox.request_stop()
        worker.quit()
    for _, worker in list(workers):
        worker.await_workers(msecs=10_000)
    workers.clear()
    wait_for_warm_up()  # never leave torch work running into interpreter shutdown


def _build_run(image: Any, strokes: Any, config: TrainConfig, *, axes: str,
               mode: Mode | None, init: TrainedModel | None, typed_names: str,
               model_config: ModelConfig,
               others: Sequence[tuple[Any, Any, str, str]] = ()) -> TrainingRun:
    """Copy the strokes and set up training: in the worker, not on the GUI thread.

    A big stack's strokes take a second to copy, and seconds more to normalise and index.
    Strokes painted meanwhile reach the run as later updates (the widget watches the layer
    from the Train press on), so a copy taken while they were painted is made whole again.
    ``others``: the other painted images' (pixels, strokes, axes, name), read and copied
    here too; one with no strokes left is passed over. Errors (one class painted, shapes
    that differ) come back through the worker.
    """
    labels = np.array(strokes, copy=True)
    more = []
    for other_image, other_strokes, other_axes, name in others:
        copied = np.array(other_strokes, copy=True)
        if copied.any():
            more.append(TrainingImage(np.asarray(other_image), copied, other_axes, name))
    painted_max = max([int(labels.max()) if labels.size else 0]
                      + [int(m.labels.max()) for m in more])
    names = class_names(typed_names, max(painted_max, 2),
                        init.num_classes if init is not None else None)
    # The image in hand is what the user trains on; another that does not fit it (other
    # channels, no Z for a 3D model) is left out with a notice, not a refusal.
    return TrainingRun(image, labels, config, axes=axes, mode=mode, init=init,
                       class_names=names, more=more, leave_out_unfit=True,
                       model_config=replace(model_config, num_classes=len(names)))


class UNetTrainerWidget(QWidget):
    """Dock widget that trains a U-Net on painted strokes in the background."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = napari_viewer
        self.state = TrainerState()
        self.model: TrainedModel | None = None
        self._run: TrainingRun | None = None  # set once the worker has built it
        self._inbox: Inbox | None = None
        self._preset_name = ""
        self._worker: Any = None
        self._worker_failed = False
        self._folder = FolderProgress(Path(), 0)  # the last folder prediction
        self._painted = TrainingSet()  # images painted in this window, for Train
        # (kind, parts in all, monotonic time, parts done then): the pass being timed
        self._pass_timing: tuple[PassKind, int, float, int] | None = None
        self._labels_source: Labels | None = None
        self._label_edits: LabelEdits | None = None  # edits of _labels_source while training
        # Where outputs go: the image layers last trained on or predicted.
        self._target = OutputTarget()
        # (inbox or None, worker) pairs, shared with the deletion hook below.
        self._active: list = []
        self._strokes_autosave = StrokeAutosave(self, lambda: bool(self.autosave.value),
                                                settings=self._settings)
        self._offered_restore: set = set()  # session folders already offered
        self.destroyed.connect(functools.partial(_stop_workers, self._active))

        self._build_ui()
        # A setting changed and never trained with is kept too (saved after a quiet moment).
        for setting in self._setting_widgets().values():
            setting.changed.connect(self._strokes_autosave.settings_changed)
        self.state.events.connect(self._render_state)
        self.state.events.settled.connect(self._name_training_job)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                      napari_viewer.layers.events.renamed):
            event.connect(self._reset_layer_choices)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        napari_viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for layer in napari_viewer.layers:
            self._watch_output_edits(layer)
        self._labels_timer = QTimer(self)
        self._labels_timer.setSingleShot(True)
        self._labels_timer.setInterval(_LABELS_QUIET_MS)
        self._labels_timer.timeout.connect(self._send_labels)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(200)
        self._view_timer.timeout.connect(self._send_region)
        camera = viewer_camera(napari_viewer)
        camera.events.center.connect(self._on_view_changed)
        camera.events.zoom.connect(self._on_view_changed)
        napari_viewer.dims.events.current_step.connect(self._on_view_changed)
        napari_viewer.dims.events.ndisplay.connect(self._on_view_changed)
        self._render_state()
        self._on_image_chosen()  # layers that were there before the widget
        start_warm_up()  # while the user paints: the first Train then starts sooner

    # -- UI --------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.image_picker = Select(
            label="image", choices=self._image_choices,
            tooltip="The image to segment. Select several layers (Ctrl/Cmd-click) to use "
                    "them as channels, as napari's channel_axis splits them.",
        )
        self.image_picker.native.setMaximumHeight(80)
        self.labels_picker = ComboBox(label="annotations", choices=self._labels_choices)
        self.axes = LineEdit(
            value="YX", label="axes",
            tooltip="Meaning of each image axis: T time, Z, C channel, Y, X (e.g. ZYX, TYX, "
                    "TZYX, YXC for RGB). Guessed from the layer; correct it if wrong.",
        )
        self.mode = ComboBox(
            choices=list(MODES), value="auto", label="3D stacks",
            tooltip="2D over slices: fast, good for coarse Z (auto picks it: ahead after "
                    "a minute of CPU training on strokes on a few slices). 3D: a 3D U-Net "
                    "on 3D patches, slower per step.",
        )
        self.intensity_jitter = ComboBox(
            choices=list(INTENSITY_JITTER_CHOICES), value="auto", label="vary brightness",
            tooltip="Random contrast and brightness of training patches. auto: on for 2D "
                    "images and time-lapses, off for Z stacks, where brightness tells "
                    "in-focus objects from out-of-focus blur.",
        )
        self.edge_smoothing = ComboBox(
            choices=list(EDGE_SMOOTHING_WEIGHTS), value="auto", label="edge smoothing",
            tooltip="Keep neighbouring pixels of like brightness in one class, and draw "
                    "each object's edge where its brightness is half way between the "
                    "classes', in the unpainted band between your strokes and the edge. "
                    "auto: both on for Z stacks in 2D mode, where they steadied training "
                    "and drew nuclei tighter; only the half-way edge for 2D images, "
                    "time-lapses (the smoothing takes texture for edges) and 3D models. "
                    "Turn it off for classes that brightness does not tell apart.",
        )
        self.anisotropy = FloatSpinBox(
            value=1.0, min=0.1, max=100.0, step=0.1, label="Z spacing / pixel",
            tooltip="Z step divided by the XY pixel size, from the layer's scale. A 3D model "
                    "pools Z later when it is coarse.",
        )
        self._reset_layer_choices()
        self.new_labels_button = QPushButton("New annotation layer")
        self.new_labels_button.setToolTip("An empty Labels layer of the image's size, "
                                          "ready to paint: 1 = background, 2.. = objects")
        self.class_names = LineEdit(
            value="background, object", label="class names",
            tooltip="Names of label 1, 2, 3, ... separated by commas",
        )
        self.preset = ComboBox(
            choices=["auto", *PRESETS], value="auto", label="model size",
            tooltip="auto: cpu-small on the CPU, gpu on CUDA/MPS",
        )
        self.refresh = FloatSpinBox(
            value=2.0, min=0.2, max=60.0, step=0.5, label="refresh every (s)",
            tooltip="How often the prediction overlay refreshes while training",
        )
        self.settle_steps = SpinBox(
            value=TrainConfig().settle_steps or 0, min=0, max=1_000_000, step=100,
            label="pause after (steps)",
            tooltip="Training pauses this many steps after your latest strokes; painting "
                    "more, or raising this number, starts it again. Left running on the "
                    "same strokes, a model can get worse (on a nuclei stack, after ~1,000 "
                    "steps). 0: never pause.",
        )
        self.show_confidence = CheckBox(value=False, text="show confidence layer")
        self.test_time_augmentation = CheckBox(
            value=True, text="best quality for full predictions (8x slower)",
            tooltip="Average over flips and rotations when predicting the whole image "
                    "(Predict, after Stop, and when training pauses: the paused overlay is "
                    "redrawn this way, view first; not in 3D mode). The overlay during "
                    "training never does.",
        )
        self.show_instances = CheckBox(
            value=False, text="instances layer (one id per object)",
            tooltip="Split touching objects with a distance-transform watershed. Live for "
                    "images up to a megapixel, else after training and on Predict.",
        )
        self.learn_from_others = CheckBox(
            value=True, text="learn from the strokes on other images too",
            tooltip="Train also on the other images in this window that you trained on "
                    "or made an annotation layer for (their strokes as they are when you "
                    "press Train), so the model does not forget them while it learns "
                    "this one: paint a few strokes on each kind of image you will "
                    "segment. Closing an image or its annotations leaves it out.",
        )
        self.autosave = CheckBox(
            value=True, text="autosave strokes and model",
            tooltip="Strokes after each pause in painting, the model every 30 s and on "
                    "Stop: next to the image file (<name>.napari-unet), else in the user "
                    "data folder. Reopening the image offers to restore them.",
        )
        self.form = Container(widgets=[
            self.image_picker, self.axes, self.mode, self.intensity_jitter,
            self.edge_smoothing, self.anisotropy, self.labels_picker,
            self.class_names, self.preset, self.refresh, self.settle_steps,
            self.show_confidence,
            self.show_instances, self.test_time_augmentation, self.learn_from_others,
            self.autosave,
        ])
        self.image_picker.changed.connect(self._on_image_chosen)
        self.settle_steps.changed.connect(self._send_settle_steps)
        self.labels_picker.changed.connect(self._watch_strokes)

        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop training after this step; the model is kept and "
                                    "the whole image predicted. Pressed again, or while "
                                    "Predict runs: stop predicting, keeping the parts done")
        self.predict_button = QPushButton("Predict")
        self.reset_button = QPushButton("Reset")
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        self.export_button = QPushButton("Export masks…")
        self.folder_button = QPushButton("Predict folder…")
        self.folder_button.setToolTip(
            "Segment every TIFF in a folder with the current model, writing each mask "
            "as <name>.tif to a folder you choose (and its objects to instances/ with "
            "the instances layer on); runs in the background, Stop ends it")
        self.export_button.setToolTip("Write the selected output layer (prediction or "
                                      "instances; default the prediction) as an ImageJ TIFF")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.loss_plot = LossPlot()

        buttons = QGridLayout()
        for i, b in enumerate([self.train_button, self.stop_button, self.predict_button,
                               self.reset_button, self.save_button, self.load_button,
                               self.export_button, self.folder_button]):
            buttons.addWidget(b, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.new_labels_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.model_label)
        layout.addStretch()

        self.new_labels_button.clicked.connect(self.new_annotation_layer)
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.predict_button.clicked.connect(self.predict)
        self.reset_button.clicked.connect(self.reset)
        self.save_button.clicked.connect(self.save_model_dialog)
        self.load_button.clicked.connect(self.load_model_dialog)
        self.export_button.clicked.connect(self.export_masks_dialog)
        self.folder_button.clicked.connect(self.predict_folder_dialog)

    # Choices are functions, not lists: magicgui (and napari, on layer changes) calls
    # reset_choices, which would otherwise restore the list given at construction.
    def _image_choices(self, widget: Any = None) -> list[tuple[str, Image]]:
        # our own confidence layer is no image to train on
        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, Image) and not is_output(layer)]

    def _labels_choices(self, widget: Any = None) -> list[tuple[str, Labels]]:
        # napari's Labels is not an Image subclass, so each picker lists only its own kind;
        # our own outputs are no annotations to train on, unless the user corrected them.
        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, Labels)
                and (not is_output(layer) or is_corrected_prediction(layer))]

    def _on_layer_inserted(self, event: Any) -> None:
        self._watch_output_edits(event.value)

    def _watch_output_edits(self, layer: Layer) -> None:
        if isinstance(layer, Labels) and is_output(layer):
            layer.events.paint.connect(self._on_output_edited)

    def _on_output_edited(self, event: Any) -> None:
        # A prediction the user corrects becomes something to train on: list it now, not
        # only when a layer is next added or removed.
        layer = event.source
        if is_corrected_prediction(layer) and layer not in self.labels_picker.choices:
            self._reset_layer_choices()

    def _reset_layer_choices(self, event: Any = None) -> None:
        images, labels = list(self.image_picker.value or []), self.labels_picker.value
        # magicgui keeps a choice by its text: a chosen layer renamed since (a prediction
        # set aside, a layer the user renamed) was dropped for the first in the list, or
        # for another layer now under its old name. Keep the chosen layers themselves,
        # and let the pickers' listeners hear only of a real change.
        with self.image_picker.changed.blocked(), self.labels_picker.changed.blocked():
            self.image_picker.reset_choices()
            self.labels_picker.reset_choices()
            kept = [layer for layer in images if layer in self.image_picker.choices]
            if not kept and self.image_picker.choices:
                kept = [self.image_picker.choices[0]]
            self.image_picker.value = kept
            if labels is not None and labels in self.labels_picker.choices:
                self.labels_picker.value = labels
        if list(self.image_picker.value or []) != images:
            self.image_picker.changed.emit(self.image_picker.value)
        if self.labels_picker.value is not labels:
            self.labels_picker.changed.emit(self.labels_picker.value)

    def _render_state(self, event: Any = None) -> None:
        s = self.state
        busy = s.busy
        self.train_button.setEnabled(not busy)
        self.stop_button.setEnabled(s.status in ("training", "stopping", "predicting"))
        for b in (self.predict_button, self.save_button, self.folder_button):
            b.setEnabled(not busy and self.model is not None)
        self.reset_button.setEnabled(not busy and self.model is not None)
        self.load_button.setEnabled(not busy)
        if s.status == "training" and self._run is None:
            self.status.setText("setting up: reading the strokes, building the model…")
        elif s.status == "training" and s.settled:
            redraw = ""
            if s.pass_kind == "redraw" and s.pass_done < s.pass_total:
                redraw = (" Redrawing the overlay at best quality: "
                          f"{self._pass_position()}.")
            self.status.setText(f"paused after {s.step} steps: the model has settled on these "
                                "strokes. Paint more (or raise 'pause after') to train on, "
                                f"or press Stop to finish.{redraw}")
        elif s.status == "training":
            images = f" · {s.training_images} images" if s.training_images > 1 else ""
            self.status.setText(f"training · step {s.step} · loss {s.loss:.4f} · "
                                f"{s.steps_per_s:.1f} steps/s ({s.samples_per_s:.0f} "
                                f"patches/s) · {s.device}{images}")
        elif s.status == "stopping" and s.pass_kind == "final":
            self.status.setText(f"predicting the whole image with the final model: "
                                f"{self._pass_position()}…" if s.pass_done < s.pass_total
                                else "finishing…")
        elif s.status == "stopping":
            self.status.setText("stopping after this step, then predicting the whole image…")
        elif s.status == "predicting" and s.pass_kind == "predict" and \
                s.pass_done < s.pass_total:
            self.status.setText(f"predicting the whole image: "
                                f"{100 * s.pass_done // s.pass_total} %{self._time_left()}…")
        elif s.status == "predicting" and s.pass_kind == "folder":
            self.status.setText(f"segmenting a folder: image {s.folder_number} of "
                                f"{s.folder_total} ({s.folder_image}){self._time_left()}…")
        elif s.status == "predicting":
            self.status.setText("predicting…")
        elif s.status == "cancelling" and s.pass_kind == "folder":
            self.status.setText("stopping; the images done are kept…")
        elif s.status == "cancelling":
            self.status.setText("stopping the prediction; the parts done are kept…")
        else:
            self.status.setText("ready")
        self.model_label.setText(s.model_summary)

    def _pass_position(self) -> str:
        """Say how far the pass running is: "part k of n · about T left"."""
        return f"part {self.state.pass_done + 1} of {self.state.pass_total}{self._time_left()}"

    def _time_left(self) -> str:
        """Return " · about T left" for the pass running; nothing while it cannot be told."""
        left = self.state.pass_left_s
        return "" if math.isnan(left) else f" · about {describe_duration(left)} left"

    # -- layers ------------------------------------------------------------------------------

    def _on_image_chosen(self, event: Any = None) -> None:
        """Fill in the axes and Z spacing guessed from the newly chosen layer."""
        layers = self.image_picker.value
        if not layers:
            return
        # Pending strokes and settings belong to the image chosen until now: save them
        # before its settings are replaced by the new image's, and stop watching, or the
        # settings changes below would schedule another save of the new image's
        # settings into the old image's folder (a race seen in CI).
        self._strokes_autosave.unwatch()
        layer = layers[0]
        try:
            axes = layer_axes(layer)
        except InputError as err:  # e.g. 6 dimensions: say so now, refuse at Train
            show_warning(f"'{layer.name}': {err}")
            axes = ""
        self.axes.value = axes
        spatial = [a for a in axes if a != "C"] if not layer.rgb else list(axes[:-1])
        scale = list(layer.scale)
        if "Z" in spatial and len(scale) == len(spatial):
            ratio = scale[spatial.index("Z")] / scale[spatial.index("X")]
            self.anisotropy.value = float(min(max(ratio, 0.1), 100.0))
        else:
            self.anisotropy.value = 1.0
        self._offer_restore(layers)
        # Back to an image painted before: its own strokes, not the last image's (images
        # of one camera share a shape, so the picker would keep the other's layer).
        paired = self._painted.labels_for(layers)
        if paired is not None and paired in self.labels_picker.choices:
            with self.labels_picker.changed.blocked():
                self.labels_picker.value = paired
        self._watch_strokes()

    # -- autosave ----------------------------------------------------------------------------

    def _watch_strokes(self, event: Any = None) -> None:
        """Autosave the chosen annotation layer into the chosen image's session folder."""
        layers, labels = list(self.image_picker.value or []), self.labels_picker.value
        if not layers or labels is None:
            self._strokes_autosave.unwatch()
            return
        try:
            saver = saver_for(layers[0])
            axes = label_axes(self._image_axes(layers)[1])
        except NapariUnetError:
            saver, axes = None, None  # no autosave for this image; nothing else changes
        self._strokes_autosave.watch(labels, saver, axes)

    def _offer_restore(self, layers: list[Image]) -> None:
        """If this image has autosaved strokes or a model, offer to bring them back."""
        if not self.autosave.value or self.state.busy:
            return
        try:
            saver = saver_for(layers[0])
            shape, _, placement = self._label_geometry(layers)
        except NapariUnetError:
            return
        # Once per folder and widget: a folder that appears later holds this session's own
        # autosaves, nothing to restore.
        if saver.folder in self._offered_restore:
            return
        self._offered_restore.add(saver.folder)
        if not saver.folder.is_dir():
            return
        session = load_session(saver.folder, shape)
        for note in session.notes:
            show_warning(note)
        if session.empty or not self._ask_restore(session):
            return
        # Layers chosen before the latest one first, so the latest ends up on top.
        # Each remembers the name it was saved under: its next save is its own again.
        for name, strokes in session.earlier_annotations.items():
            self._viewer.add_labels(_compact(strokes), name=f"{name} (restored)",
                                    metadata={SAVED_AS_KEY: [name]}, **placement)
        if session.annotations is not None:
            name = session.annotation_layer or ANNOTATION_LAYER
            layer = self._viewer.add_labels(_compact(session.annotations),
                                            name=f"{name} (restored)",
                                            metadata={SAVED_AS_KEY: [name]}, **placement)
            for candidate in self.labels_picker.choices:
                if candidate.name == layer.name:
                    self.labels_picker.value = candidate
        skipped = self._apply_settings(session.settings)
        if skipped:
            show_warning(f"saved settings not restored (not valid here): {', '.join(skipped)}")
        restored = self.labels_picker.value
        if session.annotations is not None and restored is not None:
            with contextlib.suppress(NapariUnetError):  # axes that do not fit: not paired
                self._painted.remember(layers, restored, self._image_axes(layers)[1])
        if session.model is not None:
            self.model = session.model
            self.class_names.value = ", ".join(self.model.class_names)
            self._describe_model()
            self._render_state()
        show_info(f"restored from {session.folder}")

    def _setting_widgets(self) -> dict[str, Any]:
        """Return the widgets whose values are kept with the autosave, by saved name."""
        return {
            "axes": self.axes, "mode": self.mode, "vary_brightness": self.intensity_jitter,
            "edge_smoothing": self.edge_smoothing,
            "z_spacing": self.anisotropy, "class_names": self.class_names,
            "model_size": self.preset, "refresh_s": self.refresh,
            "pause_after_steps": self.settle_steps, "confidence": self.show_confidence,
            "instances": self.show_instances, "best_quality": self.test_time_augmentation,
            "learn_from_other_images": self.learn_from_others,
        }

    def _settings(self) -> dict[str, Any]:
        return {name: widget.value for name, widget in self._setting_widgets().items()}

    def _apply_settings(self, settings: dict[str, Any]) -> list[str]:
        """Set the saved settings; return the names of those the widgets refused.

        A session folder may come from another version of the plugin or be edited by
        hand: a value that no longer fits (an unknown choice, out of range) is skipped.
        """
        skipped = []
        for name, widget in self._setting_widgets().items():
            if name not in settings:
                continue
            value = settings[name]
            if isinstance(widget.value, bool) != isinstance(value, bool) or \
                    isinstance(widget.value, str) != isinstance(value, str):
                skipped.append(name)
                continue
            try:
                widget.value = value
            except (ValueError, TypeError):
                skipped.append(name)
        return skipped

    def _ask_restore(self, session: SavedSession) -> bool:
        parts = []
        if session.annotations is not None:
            parts.append(f"strokes ({int((session.annotations > 0).sum())} painted pixels)")
        if session.earlier_annotations:
            names = ", ".join(f"'{name}'" for name in session.earlier_annotations)
            parts.append(f"the strokes of earlier annotation layers ({names})")
        if session.model is not None:
            parts.append(f"a model ({session.model.metadata.get('steps', 0)} steps)")
        if session.settings:
            parts[-1] += " with the settings they were made with"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.saved_at))
        answer = QMessageBox.question(
            self, "Restore autosaved work?",
            f"Autosaved {' and '.join(parts)} for this image, from {when}, are in "
            f"{session.folder}. Restore them?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _chosen_layers(self) -> tuple[list[Image], Labels | None]:
        image_layers = list(self.image_picker.value or [])
        if not image_layers:
            raise InputError("open an image first (File > Open, or File > Open Sample)")
        return image_layers, self.labels_picker.value

    def _image_axes(self, layers: list[Image]) -> tuple[tuple[int, ...], str]:
        """Shape and axes of the image the chosen layers make (several layers: ``C`` first).

        Raises
        ------
        InputError
            If the axes do not fit the data or channel layers differ.
        """
        first = layers[0]
        layer_shape = tuple(full_resolution(first).shape)
        shape = (len(layers), *layer_shape) if len(layers) > 1 else layer_shape
        if len(shape) > 5:
            raise InputError(f"'{first.name}' has {len(shape)} dimensions (shape {shape}); "
                             f"up to 5 are supported: T, Z, C, Y, X")
        axes = parse_axes(self.axes.value)
        if len(layers) > 1:
            if "C" in axes or any(layer.rgb for layer in layers):
                raise InputError("several layers are used as channels: each must be a "
                                 "single-channel layer, with no C in the axes")
            shapes = {tuple(full_resolution(layer).shape) for layer in layers}
            if len(shapes) > 1:
                raise InputError(f"layers used as channels must have the same shape, got "
                                 f"{', '.join(map(str, sorted(shapes)))}")
            axes = "C" + axes
        if len(axes) != len(shape):
            raise InputError(f"axes {axes} do not fit '{first.name}' (shape "
                             f"{layer_shape}); correct the axes field")
        return shape, axes

    def _image_for_job(self, layers: list[Image], job: str,
                       others: Sequence[PaintedImage] = ()) -> tuple[Any, str]:
        """Return the chosen layers' full-resolution pixels for a worker, and their axes.

        Several layers become channels (axis ``C`` first), as napari's ``channel_axis``
        splits one multichannel image into layers. Nothing is copied or read here: the
        worker reads them (:mod:`napari_unet._image_layers`).

        Raises
        ------
        InputError
            If the axes do not fit, or the ``job`` ("training on", "predicting") would
            need more memory than is free; nothing has been read then.
        """
        shape, axes = self._image_axes(layers)
        label_pixels = int(np.prod(shape_without_channels(shape, axes), dtype=np.int64))
        volumetric = (self.model.config.spatial_dims == 3 if self.model is not None
                      else MODES[self.mode.value] == "3d")
        # Other painted images train too: what reading them and copying their strokes adds.
        # (From shapes only: lazy strokes are not read on the GUI thread.)
        added = bytes_added(layers) + sum(
            bytes_added(list(p.image_layers)) + array_bytes(p.labels.data.shape,
                                                            p.labels.data.dtype)
            for p in others)
        need = memory_need(added, label_pixels,
                           confidence=self.show_confidence.value,
                           instances=self.show_instances.value, volumetric=volumetric)
        check_memory(need, f"{job} '{layers[0].name}'", remedies=_MEMORY_REMEDIES)
        return pixels_for_job(layers), axes

    def _label_geometry(self, layers: list[Image]) -> tuple[tuple[int, ...], str, dict]:
        """Shape, axes and scale/translate of labels for the chosen image layers."""
        shape, axes = self._image_axes(layers)
        layer = layers[0]
        per_layer = axes[1:] if len(layers) > 1 else axes
        # napari gives RGB layers no scale entry for the colour axis; others have one per axis.
        keep = list(range(layer.ndim)) if layer.rgb else [
            i for i, a in enumerate(per_layer) if a != "C"]
        placement = {"scale": np.asarray(layer.scale)[keep],
                     "translate": np.asarray(layer.translate)[keep]}
        return shape_without_channels(shape, axes), label_axes(axes), placement

    def new_annotation_layer(self) -> Labels | None:
        """Add an empty Labels layer of the image's shape, selected and in paint mode."""
        try:
            image_layers, _ = self._chosen_layers()
            shape, _, placement = self._label_geometry(image_layers)
        except InputError as err:
            show_error(str(err))
            return None
        layer = self._viewer.add_labels(
            np.zeros(shape, dtype=np.uint8), name=ANNOTATION_LAYER, **placement
        )
        # The viewer we were given is napari's public proxy; select the picker's own entry
        # (and pair that with the image: layers are told apart by identity).
        for candidate in self.labels_picker.choices:
            if candidate.name == layer.name:
                self.labels_picker.value = candidate
                self._painted.remember(image_layers, candidate,
                                       self._image_axes(image_layers)[1])
        layer.brush_size = 4
        layer.selected_label = 1
        layer.mode = "paint"
        self._viewer.layers.selection.active = layer
        show_info("Paint background with label 1 and objects with label 2, 3, … on any "
                  "slices or frames")
        return layer

    def _apply_prediction(self, update: PredictionUpdate) -> None:
        colours = self._labels_source or self.labels_picker.value
        num_classes = self.model.num_classes if self.model else 8
        layers = self._viewer.layers
        corrected = layers[PREDICTION_LAYER] if PREDICTION_LAYER in layers and \
            is_corrected_prediction(layers[PREDICTION_LAYER]) else None
        if show_prediction(self._viewer, self._target, update, colours, num_classes):
            self.state.overlay_updates += 1
        if corrected is not None and corrected.name != PREDICTION_LAYER:
            # The rename is the only trace of why a new layer appeared: say where the
            # edits went and what they are good for, or they may seem lost.
            if corrected in (self._labels_source, self.labels_picker.value):
                show_info(f"your corrected prediction, which you train on, is now "
                          f"'{corrected.name}'; new results go to 'prediction'")
            else:
                show_info(f"your corrections are kept in '{corrected.name}'; choose it "
                          "as annotations to train on them")

    def _apply_instances(self, update: InstancesUpdate) -> None:
        if show_instances(self._viewer, self._target, update):
            self.state.instance_updates += 1

    def _remember_target(self, layers: list[Image]) -> None:
        """Record where outputs go: the label shape, axes and placement of ``layers``."""
        label_shape, _, placement = self._label_geometry(layers)
        self._target = OutputTarget(tuple(layers), label_shape, self._image_axes(layers)[1],
                                    placement)

    # -- training ----------------------------------------------------------------------------

    def _preset(self) -> Preset:
        """Return the chosen preset; ``auto`` decides by the device torch would use."""
        return get_preset(self.preset.value, resolve_device("auto").type)

    def _instance_config(self) -> InstanceConfig | None:
        return InstanceConfig() if self.show_instances.value else None

    def train(self) -> None:
        """Start (or continue, from the current model) training in a worker thread."""
        if self.state.busy:
            return
        try:
            image_layers, labels_layer = self._chosen_layers()
            if labels_layer is None:
                raise InputError("paint on an annotation layer first "
                                 "('New annotation layer' makes one)")
            others = (self._painted.others(image_layers, labels_layer)
                      if self.learn_from_others.value else [])
            image, axes = self._image_for_job(image_layers, "training on", others)
            strokes = labels_layer.data
            # Shapes only, so cheap enough for the GUI thread; outputs are placed by it.
            axes = pair_axes(image.shape, tuple(strokes.shape), axes)
            preset = self._preset()
            edge_weight, region_weight = EDGE_SMOOTHING_WEIGHTS[self.edge_smoothing.value]
            config = replace(preset.train, max_steps=None, max_seconds=None,
                             settle_steps=self.settle_steps.value or None,
                             # leave a core for the GUI: painting must stay fluid
                             num_threads=max(1, (os.cpu_count() or 2) - 1),
                             intensity_jitter=self.intensity_jitter.value,
                             edge_weight=edge_weight, region_weight=region_weight)
            build_run = functools.partial(
                _build_run, image, strokes, config, axes=axes,
                mode=MODES[self.mode.value] if self.model is None else None,
                init=self.model, typed_names=self.class_names.value,
                model_config=replace(preset.model, anisotropy=float(self.anisotropy.value)),
                others=[(pixels_for_job(list(p.image_layers)), p.labels.data, p.axes, p.name)
                        for p in others],
            )
            self._remember_target(image_layers)
            self._painted.remember(image_layers, labels_layer, axes)
        except NapariUnetError as err:
            show_error(str(err))
            return
        checkpoint = None
        if self.autosave.value:
            try:
                saver = saver_for(image_layers[0])
            except NapariUnetError as err:
                show_warning(f"the model will not be autosaved: {err}")
            else:
                checkpoint = saver.save_model
                try:
                    saver.save_settings(self._settings())  # a few hundred bytes of JSON
                except NapariUnetError as err:
                    show_warning(f"the settings were not autosaved: {err}")
        inbox = Inbox()
        worker = live_training_worker(
            build_run, inbox, refresh_s=self.refresh.value, region=self._region_in_view(),
            tiles=preset.tile,
            with_confidence=self.show_confidence.value,
            final_test_time_augmentation=self.test_time_augmentation.value,
            instances=self._instance_config(), checkpoint=checkpoint,
        )
        worker.yielded.connect(self._on_training_yielded)
        worker.returned.connect(self._on_trained)
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_training_finished)
        self._run, self._inbox, self._worker, self._worker_failed = None, inbox, worker, False
        self._labels_source = labels_layer
        # Painting, filling, undo and redo all count; the strokes go out once they pause.
        self._label_edits = LabelEdits(labels_layer, self._labels_timer.start)
        self._active.append((inbox, worker))
        self._preset_name = preset.name
        self.state.step = 0
        self.state.settled = False
        self.state.labels_version = 0
        self.state.status = "training"
        self._start(worker)

    def _on_run_started(self, run: TrainingRun) -> None:
        self._run = run
        self.state.training_images = run.training_images
        for note in run.left_out:
            show_warning(note)
        kind = "2D over slices" if run.mode == "2d" and run.stack.num_samples > 1 else \
            run.mode.upper()
        also = f"; also learning from {', '.join(run.other_images)}" if run.other_images \
            else ""
        self.state.model_summary = (
            f"continuing the model ({self.model.metadata.get('steps', 0)} steps so far)"
            if self.model is not None else f"training a new {kind} {self._preset_name} model"
        ) + also
        self._render_state()

    def stop(self) -> None:
        """Stop training after the current step; the model is kept.

        Pressed again while the image is predicted after training, or while Predict runs,
        stop that: on a large image at best quality it takes minutes, and the user may
        have seen what they need. The parts done stay on screen; so does the model.
        """
        if self._inbox is not None and self.state.status == "training":
            # Before the run is built this cancels it; after, training ends after this step.
            self._inbox.request_stop()
            self.state.status = "stopping"
        elif self.state.status in ("stopping", "predicting") and self._worker is not None:
            # As the activity dock's cancel: the job ends at its next yield, and its
            # finished handler keeps the model.
            self._worker.quit()
            self.state.status = "cancelling"

    def _on_view_changed(self, event: Any = None) -> None:
        self._view_timer.start()

    def _send_labels(self) -> None:
        edits = self._label_edits
        if self._inbox is None or edits is None or self.state.status != "training":
            return
        boxes = edits.take()
        if boxes == []:
            return
        # Copied here, on the main thread, so the worker never reads a layer being painted:
        # small strokes whole, a big stack's only where they were edited.
        data = edits.layer.data
        if boxes is None or data.nbytes <= _label_edits.COPIED_WHOLE_BYTES:
            update = LabelUpdate(np.array(data, copy=True))
        else:
            update = LabelUpdate(patches=tuple((box, np.array(data[box], copy=True))
                                               for box in boxes))
        self._inbox.put(update)

    def _stop_watching_edits(self) -> None:
        if self._label_edits is not None:
            self._label_edits.disconnect()
            self._label_edits = None

    def _name_training_job(self, event: Any = None) -> None:
        # The activity dock's bar keeps moving either way; its name says the run waits.
        pbar = getattr(self._worker, "pbar", None)
        if pbar is not None and self.state.status == "training":
            pbar.set_description(f"{TRAINING_JOB} (paused: paint to go on)"
                                 if self.state.settled else TRAINING_JOB)

    def _send_settle_steps(self, value: int = 0) -> None:
        # A running training follows the setting at once: raising it resumes a paused run.
        if self._inbox is not None and self.state.status == "training":
            self._inbox.put(SettleUpdate(self.settle_steps.value or None))

    def _region_in_view(self) -> tuple[slice, ...] | None:
        """Return the part of the labels to predict first: the slice/frame and field in view.

        ``None`` (everything) for a single image small enough to predict whole at every
        refresh. Otherwise the current index along every axis not on screen, and along the
        on-screen axes the visible range (plus a margin) when a plane is large.
        """
        target = self._target
        layers = target.sources
        if not layers or not target.label_axes:
            return None
        layer = layers[0]
        lab_axes, shape = target.label_axes, target.label_shape
        plane = int(np.prod(shape[-2:]))
        if lab_axes in ("YX",) and plane <= _WHOLE_IMAGE_PIXELS:
            return None
        # Layer axes are the image's without a stacked C; RGB layers have no C dimension.
        per_layer = target.axes[1:] if len(layers) > 1 else target.axes
        if layer.rgb:
            per_layer = per_layer.replace("C", "")
        if len(per_layer) != layer.ndim:
            return None
        position = np.asarray(layer.world_to_data(self._viewer.dims.point))
        # A pyramid gives them in the level on screen, not at full resolution.
        corners = np.asarray(layer.corner_pixels) * downsampling(layer)
        offset = self._viewer.dims.ndim - layer.ndim
        displayed = {d - offset for d in self._viewer.dims.displayed}
        margin = 64
        region = []
        for i, a in enumerate(per_layer):
            if a == "C":
                continue
            size = shape[lab_axes.index(a)]
            if i not in displayed:
                index = int(np.clip(round(float(position[i])), 0, size - 1))
                region.append(slice(index, index + 1))
            elif a in "YX" and plane > _WHOLE_IMAGE_PIXELS:
                lo, hi = int(corners[0, i]), int(corners[1, i])
                region.append(slice(max(lo - margin, 0), min(hi + margin, size)))
            else:
                region.append(slice(0, size))
        return tuple(region)

    def _send_region(self) -> None:
        # Also after Stop and while Predict runs: the parts left of the image follow the view.
        following = self.state.status in ("training", "stopping", "predicting")
        if self._inbox is None or not following or not self._target.sources:
            return
        region = self._region_in_view()
        if region is not None:
            self._inbox.put(RegionUpdate(region))

    def _on_training_yielded(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self._on_run_started(event.run)
        elif isinstance(event, TrainProgress):
            self.state.settled = event.settled
            if event.settled:
                return  # no step taken: nothing new to plot or count
            if self.state.pass_total:
                self._forget_pass()  # training resumed: the paused model's redraw is over
            self.loss_plot.append(event.loss)
            self.state.step = event.step
            self.state.loss = event.loss
            self.state.samples_per_s = event.samples_per_s
            self.state.steps_per_s = event.step / max(event.elapsed_s, 1e-9)
            self.state.device = event.device
            self.state.labels_version = event.labels_version
            if event.notice:
                show_warning(event.notice)
        elif isinstance(event, PredictionUpdate):
            self._apply_prediction(event)
            if event.pass_progress is not None:
                self._on_pass_progress(event.pass_progress)
        elif isinstance(event, InstancesUpdate):
            self._apply_instances(event)
        elif isinstance(event, Notice):
            show_warning(event.message)

    def _on_pass_progress(self, event: PassProgress) -> None:
        self._report_pass("final" if event.final else "redraw", event.done, event.total)

    def _report_pass(self, kind: PassKind, done: int, total: int) -> None:
        # On a large image with test-time augmentation a pass takes minutes: say how far it
        # is and, from the parts done since the first report, how long is left.
        now = time.monotonic()
        timing = self._pass_timing
        if timing is None or timing[:2] != (kind, total) or done < timing[3]:
            timing = self._pass_timing = (kind, total, now, done)
        _, _, started, done_then = timing
        parts = done - done_then
        self.progress.setMaximum(total)
        self.progress.setValue(done if done < total else 0)
        self.state.pass_left_s = (now - started) / parts * (total - done) if parts \
            else float("nan")
        self.state.pass_kind = kind
        self.state.pass_total, self.state.pass_done = total, done

    def _forget_pass(self) -> None:
        """No long pass is running any more (training resumed, or the job ended)."""
        self._pass_timing = None
        self.progress.setValue(0)
        self.state.pass_kind = ""
        self.state.pass_total = self.state.pass_done = 0

    def _on_trained(self, result: TrainResult | None) -> None:
        if result is not None:
            self.model = result.model

    def _on_worker_error(self, error: Exception) -> None:
        # napari's create_worker means to relay errors to notifications, but in napari 0.9
        # its notifying mixin is never initialised (it sits after QRunnable in the MRO), so
        # we relay ourselves; the notification keeps the traceback ("View traceback").
        self._worker_failed = True
        if isinstance(error, NapariUnetError):
            show_error(str(error))  # bad input, found while setting up: the message says it all
            return
        notification_manager.receive_error(type(error), error, error.__traceback__)

    def _on_training_finished(self) -> None:
        run = self._run
        if run is not None and not self._worker_failed and run.model.metadata.get("steps"):
            self.model = run.model  # also after a cancel from the activity dock
        self._stop_watching_edits()
        self._forget_worker()
        self._run = self._inbox = None
        self._labels_timer.stop()
        self._describe_model()
        self._forget_pass()
        self.state.status = "idle"
        release_freed_memory_soon()

    def _describe_model(self) -> None:
        m = self.model
        if m is None:
            self.state.model_summary = "no model yet: paint, then press Train"
            return
        meta = m.metadata
        self.state.model_summary = (
            f"model: {m.num_classes} classes ({', '.join(m.class_names)}), "
            f"{meta.get('steps', 0)} steps, {meta.get('seconds', 0):.0f} s trained"
        )

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        self._painted.forget_layer(layer)
        if self.state.status == "training" and (
            layer is self._labels_source or layer in self._target.sources
        ):
            show_warning(f"'{layer.name}' was removed: training stops, the model is kept")
            self.stop()

    # -- prediction --------------------------------------------------------------------------

    def predict(self) -> None:
        """Predict the whole image with the current model in a worker thread.

        The overlay fills in from the part in view outwards, as after Stop: on a large
        image the user sees where they look after seconds, not after minutes, and Stop
        (or a cancel from the activity dock) keeps the parts done.
        """
        if self.state.busy:
            return
        if self.model is None:
            show_error("no model yet: train one or load one")
            return
        try:
            image_layers, _ = self._chosen_layers()
            image, axes = self._image_for_job(image_layers, "predicting")
            axes = model_axes(self.model, image.shape, axes)
            self._remember_target(image_layers)
        except NapariUnetError as err:
            show_error(str(err))
            return
        preset = self._preset()
        z = self.model.config.anisotropy if self.model.config.spatial_dims == 3 else float(
            self.anisotropy.value)
        spacing = tuple(z if a == "Z" else 1.0 for a in self._target.label_axes if a != "T")
        # Emptied first: if Predict is stopped, the parts it did not reach read as not
        # predicted instead of showing (and exporting) an older model's answer.
        clear_outputs(self._viewer, self._target, [PREDICTION_LAYER]
                      + [CONFIDENCE_LAYER] * self.show_confidence.value
                      + [INSTANCES_LAYER] * self.show_instances.value)
        inbox = Inbox()  # the view, as the user moves it: the parts left follow it
        worker = prediction_worker(
            self.model, image, axes, preset.tile, self._region_in_view(), inbox,
            self.show_confidence.value, self.test_time_augmentation.value,
            self._instance_config(), spacing,
        )
        worker.yielded.connect(self._on_prediction_yielded)
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_prediction_finished)
        self._worker, self._worker_failed, self._inbox = worker, False, inbox
        self._active.append((None, worker))
        self.state.status = "predicting"
        self._start(worker)

    def _start(self, worker: Any) -> None:
        # Full garbage collections would freeze the window for a quarter of a second while
        # the job runs (see _gc_pause). Resumed by the worker's own signal, so also when
        # this widget is gone before the job ends.
        worker.finished.connect(resume_full_collections)
        pause_full_collections()
        worker.start()

    def _on_tile(self, progress: TileProgress) -> None:
        self._report_pass("predict", progress.tiles_done, progress.tiles_total)
        if progress.notice:
            show_warning(progress.notice)

    def _on_prediction_yielded(self, event: Any) -> None:
        if isinstance(event, TileProgress):
            self._on_tile(event)
        elif isinstance(event, PredictionUpdate):
            self._apply_prediction(event)
        elif isinstance(event, InstancesUpdate):
            self._apply_instances(event)

    def _forget_worker(self) -> None:
        self._active[:] = [(r, w) for r, w in self._active if w is not self._worker]
        self._worker = None

    def _on_prediction_finished(self) -> None:
        self._forget_worker()
        self._inbox = None
        self._forget_pass()
        self.state.status = "idle"
        release_freed_memory_soon()

    # -- a folder of images -------------------------------------------------------------------

    def predict_folder(self, source: str | Path, out: str | Path,
                       existing: Existing | None = None) -> bool:
        """Segment every TIFF in ``source`` with the current model, into ``out``, in a worker.

        Each mask is written as ``out/<name>.tif`` (objects, with the instances layer on,
        to ``out/instances``), exactly what ``napari-unet predict`` writes. Files without
        axes of their own are read with the trainer's, where they fit. ``existing`` says
        what to do with images whose results are there already; ``None`` asks.
        Returns whether the job started.
        """
        if self.state.busy:
            return False
        if self.model is None:
            show_error("no model yet: train one or load one")
            return False
        try:
            plan = plan_folder(Path(source), Path(out), instances=self.show_instances.value)
            if plan.existing and existing is None:
                existing = self._ask_existing(plan)
            items = plan.items(existing or "replace")
            if plan.existing and existing == "skip" and not items:
                show_info(f"every image in {plan.source} has its results in {plan.out}")
            if not items:
                return False
            make_folders(plan.out, None, plan.instances)
        except (NapariUnetError, OSError) as err:
            show_error(str(err))
            return False
        options = PredictOptions(
            fallback_axes=self._fallback_axes(),
            test_time_augmentation=self.test_time_augmentation.value,
            instances=self._instance_config(), overwrite=existing == "replace",
            axes_hint="files without axes of their own are read with the trainer's "
                      "'axes' where they fit",
            memory_remedies=_MEMORY_REMEDIES)
        worker = folder_prediction_worker(self.model, items, self._preset().tile, options)
        self._folder = FolderProgress(plan.out, len(items))
        worker.yielded.connect(self._on_folder_yielded)
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_folder_finished)
        self._worker, self._worker_failed = worker, False
        self._active.append((None, worker))
        self.state.folder_total, self.state.folder_number = len(items), 0
        self.state.pass_kind = "folder"
        self.state.status = "predicting"
        self._start(worker)
        return True

    def _fallback_axes(self) -> str | None:
        """Return the trainer's image axes, for files that do not say theirs (or None)."""
        try:
            return self._image_axes(self._chosen_layers()[0])[1]
        except NapariUnetError:
            return None

    def _on_folder_yielded(self, event: FileEvent) -> None:
        run = self._folder
        for warning in run.record(event):
            show_warning(warning)
        self.state.folder_image, self.state.folder_number = run.image, run.number
        self._report_pass("folder", run.parts_done, run.parts_total)

    def _on_folder_finished(self) -> None:
        run = self._folder
        self._forget_worker()
        self._forget_pass()
        self.state.folder_image, self.state.folder_number = "", 0
        # Also after an error ended the job (notified already): what was done is kept.
        (show_warning if run.failed or run.stopped else show_info)(run.summary())
        self.state.status = "idle"
        release_freed_memory_soon()

    # -- model management --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the current model; the next Train starts a fresh one."""
        if self.state.busy:
            return
        self.model = None
        self.loss_plot.clear()
        self._describe_model()
        self._render_state()

    def save_model_to(self, path: str | Path) -> None:
        if self.model is None:
            show_error("no model to save yet")
            return
        save_model(self.model, path)
        show_info(f"model saved to {path}")

    def load_model_from(self, path: str | Path) -> None:
        try:
            self.model = load_model(path)
        except NapariUnetError as err:
            show_error(str(err))
            return
        self.class_names.value = ", ".join(self.model.class_names)
        self.loss_plot.clear()
        self._describe_model()
        self._render_state()
        show_info(f"model loaded from {path}")

    def export_masks_to(self, path: str | Path, layer: Labels | None = None) -> bool:
        """Write a Labels layer (default: the prediction) as an ImageJ TIFF.

        Returns False, writing nothing, if the file exists and the user declines.
        """
        layer = layer or self._export_layer()
        if layer is None:
            show_error("nothing to export: predict first, or choose an annotation layer")
            return False
        path = Path(path)
        if path.exists() and not self._confirm_overwrite(path):
            return False
        try:
            data = np.asarray(layer.data)
            lab_axes = self._target.label_axes
            axes = lab_axes if len(lab_axes) == data.ndim else None
            write_labels(path, data, axes=axes, overwrite=True)
        except NapariUnetError as err:
            show_error(str(err))
            return False
        show_info(f"'{layer.name}' written to {path}")
        return True

    def _export_layer(self) -> Labels | None:
        active = self._viewer.layers.selection.active
        if isinstance(active, Labels) and is_output(active):
            return active
        if PREDICTION_LAYER in self._viewer.layers:
            return self._viewer.layers[PREDICTION_LAYER]
        return self.labels_picker.value

    # Dialogs are separate methods so tests (and scripts) can answer them.
    def _confirm_overwrite(self, path: Path) -> bool:
        answer = QMessageBox.question(self, "Replace file?",
                                      f"{path.name} already exists. Replace it?")
        return answer == QMessageBox.StandardButton.Yes

    def _ask_save_path(self, title: str, name_filter: str) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self, title, "", name_filter,
            options=QFileDialog.Option.DontConfirmOverwrite,  # we ask ourselves
        )
        return path

    def _ask_open_path(self, title: str, name_filter: str) -> str:
        path, _ = QFileDialog.getOpenFileName(self, title, "", name_filter)
        return path

    def _ask_folder(self, title: str, start: str = "") -> str:
        return QFileDialog.getExistingDirectory(self, title, start)

    def _ask_existing(self, plan: FolderPlan) -> Existing:
        box = QMessageBox(QMessageBox.Icon.Question, "Results exist",
                          f"{len(plan.existing)} of the {len(plan.images)} images in "
                          f"{plan.source.name} have results in {plan.out} already.", parent=self)
        replace_button = box.addButton("Replace them", QMessageBox.ButtonRole.AcceptRole)
        skip_button = box.addButton("Skip those images", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(skip_button)
        box.exec()
        clicked = box.clickedButton()
        return ("replace" if clicked is replace_button else
                "skip" if clicked is skip_button else "cancel")

    def predict_folder_dialog(self) -> None:
        source = self._ask_folder("Folder of images to segment (its TIFFs)")
        if not source:
            return
        out = self._ask_folder("Folder for the masks (not the images' own)", source)
        if out:
            self.predict_folder(source, out)

    def save_model_dialog(self) -> None:
        path = self._ask_save_path("Save model", "napari-unet model (*.pt)")
        if path and (not Path(path).exists() or self._confirm_overwrite(Path(path))):
            self.save_model_to(path)

    def load_model_dialog(self) -> None:
        path = self._ask_open_path("Load model", "napari-unet model (*.pt)")
        if path:
            self.load_model_from(path)

    def export_masks_dialog(self) -> None:
        path = self._ask_save_path("Export masks", "TIFF (*.tif *.tiff)")
        if path:
            self.export_masks_to(path)

    def shutdown(self) -> None:
        """Stop any running worker and wait for it (also runs when the widget is deleted)."""
        _stop_workers(self._active)
        self._stop_watching_edits()  # the layer outlives the widget: let go of it
        self._strokes_autosave.unwatch()  # writes strokes still waiting for a pause
        self._strokes_autosave.wait()
