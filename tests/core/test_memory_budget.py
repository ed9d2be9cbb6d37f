"""The memory estimate that refuses jobs too large for the computer."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import tifffile

from napari_unet.core import memory_budget
from napari_unet.core.config import get_preset
from napari_unet.core.errors import InputError
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.memory_budget import check_memory, memory_need
from napari_unet.core.training import TrainingRun
from napari_unet.core.view_first import PredictionUpdate, predict_view_first
from tests.conftest import SAMPLE_DIR, make_blobs, strokes_from_truth


def test_available_memory_is_read_from_the_system():
    available = memory_budget.available_memory()
    assert available is not None and 0 < available < 2**50


def test_need_adds_the_parts_switched_on():
    plain = memory_need(1000, 100)
    assert (plain.image, plain.confidence, plain.instances) == (1000, 0, 0)
    full = memory_need(1000, 100, confidence=True, instances=True)
    assert full.total == plain.total + full.confidence + full.instances
    assert full.instances > full.confidence > 0
    volume = memory_need(1000, 100, volumetric=True)
    assert volume.total - plain.total == memory_budget.FIXED_BYTES_3D - plain.fixed > 2**30


def test_a_job_that_fits_passes_and_one_that_does_not_says_what_would_help(monkeypatch):
    need = memory_need(3 * 2**30, 2**30, confidence=True, instances=True)
    remedies = {"instances": "switch off the instances layer",
                "confidence": "switch off the confidence layer",
                "probabilities": "leave out --probabilities"}
    check_memory(need, "training on 'x'", available=need.total)
    monkeypatch.setattr(memory_budget, "available_memory", lambda: None)
    check_memory(need, "training on 'x'")  # the system cannot tell: nothing refused
    with pytest.raises(InputError) as refused:
        check_memory(need, "training on 'slide'", available=8 * 2**30, remedies=remedies)
    assert str(refused.value) == (
        f"training on 'slide' needs about {need.total / 2**30:.1f} GiB of memory at full "
        "resolution and 8.0 GiB is free: switch off the instances layer (64.0 GiB of it); "
        "switch off the confidence layer (8.0 GiB of it); crop the image to the part you "
        "need, or close other programs")  # the largest first; no probabilities asked for
    assert need.fixed > 0
    with pytest.raises(InputError, match="needs about 0.3 GiB .* 1 MiB is free: crop"):
        check_memory(memory_need(0, 10**7), "predicting 'y'", available=2**20,
                     remedies=remedies)
    with pytest.raises(InputError, match=r"leave out --probabilities \(3.0 GiB of it\)"):
        check_memory(memory_need(0, 2**28, probability_classes=3), "predicting 'y'",
                     available=2**20, remedies=remedies)


def test_the_estimate_covers_what_a_real_job_allocates():
    """Training, prediction with confidence and object splitting on a 1536 x 1536 image:
    numpy's peak (tracemalloc sees it) stays under the estimate's figures per pixel and
    the normalisation's sample (the rest of the fixed allowance is for torch's buffers,
    which tracemalloc does not see)."""
    image, truth = make_blobs((1536, 1536))
    strokes = strokes_from_truth(truth, every=7)
    preset = get_preset("cpu-small")
    need = memory_need(image.nbytes, image.size, confidence=True, instances=True)
    tracemalloc.start()
    try:
        copy = np.array(image, copy=True)  # what the widget reads or copies
        run = TrainingRun(copy, strokes, replace(preset.train, max_steps=40, seed=0),
                          model_config=preset.model)
        for _ in run.steps():
            pass
        class_map = np.zeros(image.shape, np.uint8)
        layer = np.zeros(image.shape, np.uint8)  # the prediction layer
        confidence = np.zeros(image.shape, np.float32)  # the confidence layer
        for event in predict_view_first(run.model, copy, preset.tile, axes="YX",
                                        with_confidence=True):
            if isinstance(event, PredictionUpdate):
                class_map[event.region] = event.class_map
                layer[event.region] = event.class_map
                confidence[event.region] = event.confidence
        objects = instances_from_classes(class_map, "YX", None, InstanceConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert objects.max() > 10  # a real split, not an empty map
    sample = 2 * 8 * image.size  # float64 values and the percentile's partitioned copy
    per_pixel = need.total - need.fixed
    print(f"numpy peak {peak / image.size:.1f} B/px; per pixel {per_pixel / image.size:.1f}")
    assert peak < per_pixel + sample


def test_the_instances_figure_covers_a_3d_split():
    """3D splitting costs the most per voxel (the distance transform of each object)."""
    truth = tifffile.imread(SAMPLE_DIR / "nuclei3d_truth.tif")
    class_map = np.tile((truth > 0).astype(np.uint8) + 1, (1, 2, 2))
    tracemalloc.start()
    try:
        objects = instances_from_classes(class_map, "ZYX", (2.0, 1.0, 1.0), InstanceConfig())
        layer = np.array(objects, copy=True)  # the instances layer
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert layer.max() > 20
    assert peak < memory_budget.INSTANCES_BYTES_PER_PIXEL * class_map.size
