"""``napari-unet demo``: napari with the sample image, its strokes and the trainer docked."""

from __future__ import annotations


def run_demo(show: bool = True) -> int:
    """Open the demo; blocks until the window is closed (unless ``show`` is False)."""
    import os
    import tempfile

    import napari

    if not show:
        # A smoke run: nobody can answer the "restore your last session?" dialog that an
        # earlier session on the sample would bring up, and it must not write autosaves
        # into the user's folder either.
        os.environ["NAPARI_UNET_DATA_DIR"] = tempfile.mkdtemp(prefix="napari-unet-demo-")
    viewer = napari.Viewer(title="napari-unet demo", show=show)
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.class_names.value = "background, nucleus"
    viewer.layers.selection.active = viewer.layers["strokes"]
    if show:
        napari.run()
    else:
        viewer.close()
    return 0
