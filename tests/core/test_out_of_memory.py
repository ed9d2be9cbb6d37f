"""GPU out of memory, simulated: smaller batches first, then the CPU, and the user is told."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.core import inference
from napari_unet.core.config import TileConfig
from napari_unet.core.inference import TileProgress, iter_predict, predict
from napari_unet.core.live import Notice, live_training
from napari_unet.core.training import TrainingRun
from napari_unet.core.unet import UNet
from napari_unet.core.view_first import PredictionUpdate, predict_view_first
from tests.core.test_training import FAST, TINY_MODEL


def _oom_above(monkeypatch, largest_batch: int, devices: set[str] | None = None) -> list[int]:
    """Make the U-Net raise OutOfMemoryError for batches larger than ``largest_batch``."""
    seen: list[int] = []
    forward = UNet.forward

    def limited(self, x):
        seen.append(x.shape[0])
        if x.shape[0] > largest_batch:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x)

    monkeypatch.setattr(UNet, "forward", limited)
    return seen


def test_training_halves_the_batch_until_it_fits(blobs, monkeypatch):
    image, strokes, _ = blobs
    seen = _oom_above(monkeypatch, largest_batch=1)
    run = TrainingRun(image, strokes, replace(FAST, batch_size=4, max_steps=3),
                      model_config=TINY_MODEL)
    records = list(run.steps())
    assert seen[:3] == [4, 2, 1] and set(seen[3:]) == {1}
    assert "1 patches per step" in records[0].notice
    assert records[1].notice == ""  # told once
    assert [r.step for r in records] == [1, 2, 3]


def test_training_moves_to_the_cpu_when_one_patch_does_not_fit(blobs, monkeypatch):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, batch_size=2, max_steps=3),
                      model_config=TINY_MODEL)
    # Pretend the run is on a GPU (its tensors are on the CPU, where a move costs nothing),
    # and that the GPU fits nothing.
    run.device = torch.device("mps")
    real_step = run._train_step

    def gpu_full(batch):
        if run.device.type != "cpu":
            raise torch.OutOfMemoryError("MPS out of memory (simulated)")
        return real_step(batch)

    monkeypatch.setattr(run, "_train_step", gpu_full)
    records = list(run.steps())
    assert run.device.type == "cpu"
    assert "continues on the CPU" in records[0].notice
    assert [r.step for r in records] == [1, 2, 3]
    assert all(p.device.type == "cpu" for p in run.model.network.parameters())


def test_cpu_out_of_memory_is_not_swallowed(blobs, monkeypatch):
    image, strokes, _ = blobs
    _oom_above(monkeypatch, largest_batch=0)
    run = TrainingRun(image, strokes, replace(FAST, max_steps=2), model_config=TINY_MODEL)
    with pytest.raises(torch.OutOfMemoryError):
        run.run_to_end()


def test_prediction_splits_tile_batches_and_says_so(blobs, monkeypatch):
    image, strokes, _ = blobs
    model = TrainingRun(image, strokes, replace(FAST, max_steps=2),
                        model_config=TINY_MODEL).run_to_end().model
    tiles = TileConfig(tile_size=32, halo=8, batch_size=4)
    expected = predict(model, image, tiles).class_map
    _oom_above(monkeypatch, largest_batch=1)
    gen = iter_predict(model, image, tiles)
    notices = []
    while True:
        try:
            notices.append(next(gen).notice)
        except StopIteration as done:
            result = done.value
            break
    assert "1 tile(s) per pass" in notices[0] and not any(notices[1:])
    np.testing.assert_array_equal(result.class_map, expected)


def _gpu_that_fits_nothing(monkeypatch) -> list[int]:
    """Pretend predictions run on a GPU (the "meta" device) on which no window fits.

    The U-Net raises OutOfMemoryError for input on that device; its CPU copy, made by
    the fallback, runs normally. Returns the batch sizes that ran out of memory.
    """
    failed: list[int] = []
    forward, runner_init = UNet.forward, inference._Runner.__init__

    def gpu_full(self, x):
        if x.device.type == "meta":
            failed.append(x.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x)

    def on_the_gpu(self, network, device, amp, limits, *more):
        runner_init(self, network, torch.device("meta"), amp, limits, *more)

    monkeypatch.setattr(UNet, "forward", gpu_full)
    monkeypatch.setattr(inference._Runner, "__init__", on_the_gpu)
    return failed


def test_a_job_in_parts_learns_once_that_the_gpu_is_full(blobs, monkeypatch):
    # Predict and Stop go view first, block by block; without a lesson shared by the
    # blocks, every block would fail on the GPU first and tell the user again.
    image, strokes, _ = blobs
    model = TrainingRun(image, strokes, replace(FAST, max_steps=2),
                        model_config=TINY_MODEL).run_to_end().model
    tiles = TileConfig(tile_size=32, halo=8, batch_size=4)
    expected = np.zeros(image.shape, np.uint8)  # the same job with room on the device
    for part in predict_view_first(model, image, tiles, test_time_augmentation=True):
        if isinstance(part, PredictionUpdate):
            expected[part.region] = part.class_map
    failed = _gpu_that_fits_nothing(monkeypatch)
    events = list(predict_view_first(model, image, tiles, test_time_augmentation=True))
    parts = [e for e in events if isinstance(e, PredictionUpdate)]
    notices = [e.notice for e in events if isinstance(e, TileProgress) and e.notice]
    assert len(parts) >= 4
    assert failed == [1] and len(notices) == 1 and "on the CPU" in notices[0]
    assembled = np.zeros_like(expected)
    for part in parts:
        assembled[part.region] = part.class_map
    np.testing.assert_array_equal(assembled, expected)


def test_live_overlays_say_once_that_they_moved_to_the_cpu(blobs, monkeypatch):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=4), model_config=TINY_MODEL)
    failed = _gpu_that_fits_nothing(monkeypatch)  # training itself stays on the CPU
    events = list(live_training(run, refresh_s=0.0, view_share=1.0))
    notices = [e.message for e in events if isinstance(e, Notice)]
    overlays = [e for e in events if isinstance(e, PredictionUpdate)]
    assert len(overlays) == 5  # one per step, then the final pass
    # (the simulated GPU is torch's "meta" device; a real one reads "CUDA" or "MPS")
    assert notices == ["overlays: META out of memory even for one tile: "
                       "predicting on the CPU (slower)"]
    # the final pass is a job of its own: it tries the GPU again (training's memory
    # may be free now), once
    assert failed == [1, 1]
