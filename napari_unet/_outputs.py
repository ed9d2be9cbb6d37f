"""The layers results are shown in: prediction, instances and confidence.

Each is made once over the image it was computed from (same scale and translate), then
filled in place as updates arrive. None of them takes the user's selected layer away.
Each remembers, in its metadata, the image layers it was computed from: results for one
image are never written over another's, which is kept under a name that says whose it is.
Nor over results the user corrected by hand (painted, filled, erased): those are kept
too, renamed, and new results go to a new layer; a corrected prediction may then be
picked as annotations to train on (the widget says so). Called on the GUI thread only,
with records the workers yielded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import napari.viewer
import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap

from napari_unet.core.axes import label_axes
from napari_unet.core.live import InstancesUpdate
from napari_unet.core.view_first import PredictionUpdate

PREDICTION_LAYER = "prediction"
INSTANCES_LAYER = "instances"
CONFIDENCE_LAYER = "confidence"
OUTPUT_LAYERS = (PREDICTION_LAYER, INSTANCES_LAYER)
_METADATA_KEY = "napari_unet_output"


@contextlib.contextmanager
def selection_kept(viewer: napari.viewer.Viewer) -> Iterator[None]:
    """Add layers inside this block without taking the user's selected layer away.

    napari makes every added layer the only selected, active one. An overlay that appears
    while the user paints would then receive their next brush stroke, or turn it into a
    pan of the view, so the selection before the block is put back after it.
    """
    # Selecting the new layer and then the old one again would switch napari's layer
    # controls and layer list twice, ~55 ms of the ~200 ms add_labels (512 x 512, Xvfb;
    # session 21 probe). The layer list's switch against selecting is private (napari's
    # plugin proxy warns on it and will refuse it), so instead nobody hears of the
    # selection while the block runs: it is put back before its events are unblocked,
    # and the controls and the list, which follow those events, never leave the user's
    # layer. The add got ~19 ms faster (70 -> 51 ms, 8 adds, session 23 probe).
    layers = viewer.layers
    active = layers.selection.active
    selected = set(layers.selection)
    with layers.selection.events.blocker_all():
        try:
            yield
        finally:
            kept = {layer for layer in selected if layer in layers}
            if layers.selection.active is not active or set(layers.selection) != kept:
                if active in layers:
                    layers.selection.active = active  # also selects it alone
                else:
                    layers.selection.clear()
                layers.selection.update(kept)


@dataclass(frozen=True)
class OutputTarget:
    """Where outputs go: the image layers they come from and the labels' geometry.

    ``axes`` are the image's (``C`` first when several layers are its channels),
    ``label_shape`` the labels' (no ``C``), ``placement`` the labels' ``scale`` and
    ``translate`` over the image.
    """

    sources: tuple[Image, ...] = ()
    label_shape: tuple[int, ...] = ()
    axes: str = ""
    placement: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label_axes(self) -> str:
        """The labels' axes: the image's without ``C``."""
        return label_axes(self.axes) if self.axes else ""

    def present(self, viewer: napari.viewer.Viewer) -> bool:
        """Whether the source layers are all still in the viewer."""
        return bool(self.sources) and all(layer in viewer.layers for layer in self.sources)

    @property
    def source_key(self) -> tuple[str, ...]:
        """Identifies the source layers (not their names, which the user may reuse)."""
        return tuple(str(layer.unique_id) for layer in self.sources)


def is_output(layer: Layer) -> bool:
    """Whether ``layer`` holds results this plugin computed (under any name)."""
    return _METADATA_KEY in layer.metadata or layer.name in (*OUTPUT_LAYERS, CONFIDENCE_LAYER)


def is_corrected_prediction(layer: Layer) -> bool:
    """Whether ``layer`` is a prediction (class map) the user has edited by hand.

    Its ids are the annotations' (1 background, 2, 3, … objects; 0 not predicted), so it
    can be trained on as annotations: every pixel the prediction reached counts. The
    instances layer holds object numbers, not classes, and never qualifies.
    """
    made_for = layer.metadata.get(_METADATA_KEY, {})
    return made_for.get("kind") == PREDICTION_LAYER and _edited(layer)


def _edited(layer: Layer) -> bool:
    """Whether the user's hand edits of ``layer`` still stand (not all undone).

    napari's paint event marks an edit (:func:`_mark_edited`), but its undo emits no
    event: an edit undone shows only in the layer's undo history. That history is
    private; should napari rename it, every marked edit counts as standing.
    """
    if not layer.metadata.get(_METADATA_KEY, {}).get("edited"):
        return False
    history = getattr(layer, "_undo_history", None)
    return history is None or len(history) > 0


def clear_outputs(
    viewer: napari.viewer.Viewer, target: OutputTarget, names: Iterable[str]
) -> None:
    """Empty the named output layers of ``target``'s image before a job writes them anew.

    Predict fills its layers in part by part and may be stopped half way: the parts not
    reached must read as not predicted (0), not as an older model's answer that an export
    would then mix in silently. Layers of other images are left alone.
    """
    for name in names:
        layer = _own_layer(viewer, target, name)
        if layer is not None:
            layer.data[...] = 0
            layer.refresh()


def show_prediction(
    viewer: napari.viewer.Viewer, target: OutputTarget, update: PredictionUpdate,
    colours: Labels | None, num_classes: int,
) -> bool:
    """Write a class-map update (and its confidence) into the output layers.

    ``colours`` is the painting layer whose colours the classes take. Returns ``False``,
    changing nothing, when the source image is gone.
    """
    if not target.present(viewer):
        return False
    layer = _own_layer(viewer, target, PREDICTION_LAYER)
    if layer is None:
        # Given its colours when made: set afterwards they cost another 10 ms of the GUI
        # thread while napari rebuilds them (session 21 probe).
        layer = _new_labels(viewer, target, PREDICTION_LAYER, np.uint8,
                            colormap=_colours_like(colours, num_classes))
    # Written into the layer's array, also for the whole image: assigning a new ``data``
    # also makes napari reset the layer's state, which froze the window 6-12 ms longer per
    # overlay of 0.25-4 MP, a tenth of the update (benchmarks/bench_overlay.py).
    layer.data[update.region] = update.class_map
    layer.refresh()
    if update.confidence is not None:
        _show_confidence(viewer, target, update)
    return True


def show_instances(
    viewer: napari.viewer.Viewer, target: OutputTarget, update: InstancesUpdate
) -> bool:
    """Replace the instances layer's objects; ``False`` when the source image is gone."""
    if not target.present(viewer):
        return False
    layer = _own_layer(viewer, target, INSTANCES_LAYER)
    if layer is None:
        layer = _new_labels(viewer, target, INSTANCES_LAYER, np.int32)
    layer.data[...] = update.instances  # in place, as show_prediction says why
    layer.refresh()
    return True


def _own_layer(viewer: napari.viewer.Viewer, target: OutputTarget, name: str) -> Layer | None:
    """Return the layer called ``name`` if it holds ``target``'s results, in their shape."""
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    made_for = layer.metadata.get(_METADATA_KEY, {})
    if made_for.get("source") == target.source_key and not _edited(layer) \
            and layer.data.shape == target.label_shape:
        return layer
    return None


def _mark_edited(event: Any) -> None:
    """Note that the user changed an output layer by hand (napari's paint event).

    Our own writes go straight into the array and emit no paint event; every brush,
    fill, erase or polygon edit does (napari's undo history).
    """
    event.source.metadata[_METADATA_KEY]["edited"] = True


def _set_aside(viewer: napari.viewer.Viewer, name: str) -> None:
    """Rename the layer called ``name`` after the image it came from, so it is kept.

    It holds another image's results, results the user corrected, or a layer of the
    user's that happens to be called so: a new layer takes the name, and nothing the user
    has not exported is lost.
    """
    layer = viewer.layers[name]
    made_for = layer.metadata.get(_METADATA_KEY, {})
    whose = made_for.get("image") or "earlier"
    if _edited(layer):
        whose += ", edited"
    layer.name = f"{name} ({whose})"  # napari adds a number if that is taken too


def _new_layer(viewer: napari.viewer.Viewer, target: OutputTarget, name: str,
               add: Callable[..., Layer], dtype: type, **kwargs: Any) -> Any:
    """Add an empty output layer for ``target``'s image with ``add``; rename a namesake.

    ``add`` is ``viewer.add_labels`` or ``viewer.add_image``.
    """
    if name in viewer.layers:
        _set_aside(viewer, name)
    with selection_kept(viewer):
        return add(np.zeros(target.label_shape, dtype=dtype), name=name, opacity=0.5,
                   metadata=_made_for(target, name), **target.placement, **kwargs)


def _new_labels(viewer: napari.viewer.Viewer, target: OutputTarget, name: str,
                dtype: type, **kwargs: Any) -> Labels:
    """Add an empty output Labels layer that notes when the user edits it."""
    layer = _new_layer(viewer, target, name, viewer.add_labels, dtype, **kwargs)
    # first: whoever else hears of the edit (the widget's pickers) finds it marked
    layer.events.paint.connect(_mark_edited, position="first")
    return layer


def _made_for(target: OutputTarget, kind: str) -> dict[str, Any]:
    """Return an output layer's metadata: what it is and whose results it holds."""
    return {_METADATA_KEY: {"kind": kind, "source": target.source_key,
                            "image": ", ".join(layer.name for layer in target.sources)}}


def _colours_like(reference: Labels | None, num_classes: int) -> DirectLabelColormap:
    """Colour ids as ``reference`` does; background (1) transparent so the image shows.

    Without a reference (no painting layer), napari's default label colours.
    """
    colours: dict[int | None, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0, 0, 0, 0)}
    ids = np.arange(2, max(num_classes, 8) + 1)
    colormap = reference.colormap if reference is not None else Labels(
        np.zeros((1, 1), np.uint8)).colormap
    for k, rgba in zip(ids, np.asarray(colormap.map(ids))):
        colours[int(k)] = rgba
    return DirectLabelColormap(color_dict=colours)


def _show_confidence(
    viewer: napari.viewer.Viewer, target: OutputTarget, update: PredictionUpdate
) -> None:
    layer = _own_layer(viewer, target, CONFIDENCE_LAYER)
    if layer is None:
        layer = _new_layer(viewer, target, CONFIDENCE_LAYER, viewer.add_image, np.float32,
                           colormap="inferno", contrast_limits=(0.0, 1.0),
                           blending="additive")
    layer.data[update.region] = update.confidence
    layer.refresh()
