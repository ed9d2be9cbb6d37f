"""The engine: no Qt, no napari. Safe to import on a headless server.

Modules, one job each:

- :mod:`~napari_unet.core.config`     frozen dataclasses for model, training and tiling, presets
- :mod:`~napari_unet.core.labels`     the label convention (0 = unpainted, 1 = background, ...)
- :mod:`~napari_unet.core.normalization` robust percentile intensity normalisation
- :mod:`~napari_unet.core.unet`       the U-Net
- :mod:`~napari_unet.core.device`     device choice, threads, mixed precision
- :mod:`~napari_unet.core.sampling`   patches drawn around painted pixels, augmentation
- :mod:`~napari_unet.core.training`   training as a generator of progress records
- :mod:`~napari_unet.core.inference`  tiled prediction
- :mod:`~napari_unet.core.checkpoint` one safe model file
- :mod:`~napari_unet.core.io`         TIFF reading and writing
- :mod:`~napari_unet.core.metrics`    IoU and friends
"""
