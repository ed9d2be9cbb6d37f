"""The engine: no Qt, no napari. Safe to import on a headless server.

Modules, one job each:

- :mod:`~napari_unet.core.config`     frozen dataclasses for model, training and tiling, presets
- :mod:`~napari_unet.core.labels`     the label convention (0 = unpainted, 1 = background, ...)
- :mod:`~napari_unet.core.normalization` robust percentile intensity normalisation
- :mod:`~napari_unet.core.unet`       the U-Net
- :mod:`~napari_unet.core.device`     device choice, threads, mixed precision
- :mod:`~napari_unet.core.sampling`   patches drawn around painted pixels, augmentation
- :mod:`~napari_unet.core.training`   training as a generator of progress records
- :mod:`~napari_unet.core.optimizer`  AdamW without importing torch's compiler
- :mod:`~napari_unet.core.inference`  tiled prediction
- :mod:`~napari_unet.core.checkpoint` one safe model file
- :mod:`~napari_unet.core.io`         TIFF reading and writing
- :mod:`~napari_unet.core.metrics`    IoU and friends
- :mod:`~napari_unet.core.axes`       what an image's axes mean; the model's two views of it
- :mod:`~napari_unet.core.model`      a trained model: network plus what it needs on new images
- :mod:`~napari_unet.core.view_first` a whole image predicted in parts, where the user looks first
- :mod:`~napari_unet.core.live`       training interleaved with predictions for an overlay
- :mod:`~napari_unet.core.instances`  one id per object, from a class map
- :mod:`~napari_unet.core.autosave`   strokes and model kept on disk so nothing is lost
- :mod:`~napari_unet.core.host_memory` freed memory handed back to the operating system
- :mod:`~napari_unet.core.memory_budget` will an image fit: a job's memory against what is free
- :mod:`~napari_unet.core.generators` helpers for the generator-shaped jobs
- :mod:`~napari_unet.core.errors`     "we cannot use what the user gave us"
"""
