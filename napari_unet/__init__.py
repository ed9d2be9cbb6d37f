"""napari-unet: train a U-Net from a few painted strokes, in napari or headless.

Importing this package is cheap on purpose: napari loads the plugin manifest at start-up,
and nothing here may pull in torch or Qt. The engine lives in :mod:`napari_unet.core`.
"""

__version__ = "0.1.0"
