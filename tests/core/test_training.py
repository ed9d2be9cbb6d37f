import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.core import training
from napari_unet.core.config import PRESETS, REGION_WEIGHT, ModelConfig, TrainConfig
from napari_unet.core.errors import InputError
from napari_unet.core.inference import predict
from napari_unet.core.metrics import foreground_iou
from napari_unet.core.sampling import IGNORE_INDEX
from napari_unet.core.training import (
    LabelUpdate,
    TrainingRun,
    edge_smoothness,
    region_contrast,
    sparse_loss,
    train,
)
from tests.conftest import strokes_from_truth

TINY_MODEL = ModelConfig(depth=2, base_channels=8)
FAST = TrainConfig(patch_size=32, batch_size=4, learning_rate=5e-3, warmup_steps=5, seed=0,
                   device="cpu")


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.network.parameters()]


def test_learns_nuclei_from_a_few_strokes(sample):
    """The headline promise: a handful of strokes -> a useful segmentation of the rest."""
    preset = PRESETS["cpu-small"]
    config = replace(preset.train, max_steps=200, seed=0, device="cpu")
    result = TrainingRun(sample["image"], sample["strokes"], config,
                         model_config=preset.model).run_to_end()
    prediction = predict(result.model, sample["image"], preset.tile)
    unpainted = sample["strokes"] == 0
    score = foreground_iou(prediction.class_map, sample["truth"], unpainted)
    print(f"foreground IoU on unpainted pixels after 200 steps: {score:.3f}")
    assert score > 0.65  # all-foreground scores ~0.2; the forest 0.81 (docs/benchmarks.md)
    assert set(np.unique(prediction.class_map)) == {1, 2}


def test_loss_ignores_unpainted_pixels():
    logits = torch.randn(1, 2, 4, 4)
    targets = torch.full((1, 4, 4), -1)
    targets[0, 0, 0] = 1
    changed = logits.clone()
    changed[0, :, 2:, 2:] = 100 * torch.randn(2, 2, 2)  # only unpainted pixels differ
    for dice in (0.0, 0.5):
        assert torch.allclose(sparse_loss(logits, targets, None, dice),
                              sparse_loss(changed, targets, None, dice))


def test_steps_yield_typed_progress(blobs):
    image, strokes, _ = blobs
    records = list(train(image, strokes, replace(FAST, max_steps=3), model_config=TINY_MODEL))
    assert [r.step for r in records] == [1, 2, 3]
    assert all(np.isfinite(r.loss) and r.samples_per_s > 0 for r in records)
    assert records[-1].device.startswith("cpu")
    assert records[-1].fraction_done == 1.0


def test_labels_sent_mid_training_are_used(blobs):
    """Invert the strokes mid-run: the model must end up predicting the inverted classes."""
    image, strokes, truth = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=240), model_config=TINY_MODEL)
    gen = run.steps()
    for _ in range(80):
        next(gen)
    before = predict(run.model, image).class_map
    assert foreground_iou(before, truth) > 0.7  # learned "bright squares are class 2"
    inverted = np.where(strokes > 0, 3 - strokes, 0).astype(np.uint8)
    progress = gen.send(LabelUpdate(inverted))
    assert progress.labels_version == 1
    for _ in gen:
        pass
    after = predict(run.model, image).class_map
    assert foreground_iou(after, 1 - truth) > 0.7  # now the dark background is class 2


def test_invalid_update_keeps_training_on_old_strokes(blobs):
    image, strokes, _ = blobs
    gen = train(image, strokes, replace(FAST, max_steps=3), model_config=TINY_MODEL)
    next(gen)
    progress = gen.send(LabelUpdate(np.zeros_like(strokes)))
    assert "no painted pixels" in progress.notice
    assert progress.labels_version == 0
    progress = gen.send(LabelUpdate(np.where(strokes == 2, 5, strokes)))
    assert "label 5" in progress.notice


def test_stop_between_steps_returns_result(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, FAST, model_config=TINY_MODEL)  # open-ended
    gen = run.steps()
    for progress in gen:
        if progress.step == 4:
            run.stop()
    # the for loop swallowed StopIteration; the result is reachable through the run too
    assert run.model.metadata["steps"] == 4
    result = TrainingRun(image, strokes, FAST, model_config=TINY_MODEL)
    gen2 = result.steps()
    next(gen2)
    result.stop()
    with pytest.raises(StopIteration) as finished:
        next(gen2)
    assert finished.value.value.steps == 1


def test_a_bounded_run_on_a_stack_stops_at_settle_steps_with_its_rate_decayed(blobs):
    """A stack's model gets worse trained long on the same strokes (bench_volumes: 0.898
    after 60 s, 0.818 after 300 s), so a time or step budget on a stack ends at
    ``settle_steps`` too, and the cosine decay runs over those steps. A 2D image keeps its
    whole budget."""
    image, strokes, _ = blobs
    stack = np.stack([image] * 3)
    stack_strokes = np.zeros(stack.shape, np.uint8)
    stack_strokes[1] = strokes
    config = replace(FAST, max_steps=10, settle_steps=4, warmup_steps=1)
    run = TrainingRun(stack, stack_strokes, config, axes="ZYX", model_config=TINY_MODEL)
    assert run.step_bound == 4
    records = list(run.steps())
    assert [r.step for r in records] == [1, 2, 3, 4]
    assert records[-1].total_steps == 4 and records[-1].fraction_done == 1.0
    rates = [r.learning_rate for r in records]
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.2 * rates[0]
    assert run.model.metadata["steps"] == 4

    by_time = TrainingRun(stack, stack_strokes, replace(config, max_steps=None,
                                                        max_seconds=600.0),
                          axes="ZYX", mode="3d", model_config=TINY_MODEL)
    assert by_time.step_bound == 4 and by_time.run_to_end().steps == 4  # not 10 minutes

    unlimited = TrainingRun(stack, stack_strokes, replace(config, settle_steps=None),
                            axes="ZYX", model_config=TINY_MODEL)
    assert unlimited.step_bound == 10 and unlimited.run_to_end().steps == 10
    image_run = TrainingRun(image, strokes, config, model_config=TINY_MODEL)
    assert image_run.step_bound == 10 and image_run.run_to_end().steps == 10
    live = TrainingRun(stack, stack_strokes, replace(config, max_steps=None), axes="ZYX",
                       model_config=TINY_MODEL)
    assert live.step_bound is None  # open-ended: it pauses (settles) instead


def test_live_training_settles_on_old_strokes_and_new_strokes_restart_it(
    blobs, monkeypatch
):
    """Left on the same strokes, an open-ended run stops taking steps until new ones come."""
    image, strokes, _ = blobs
    config = replace(FAST, settle_steps=12, warmup_steps=1)
    run = TrainingRun(image, strokes, config, model_config=TINY_MODEL)
    gen = run.steps(wait_for_strokes=True)  # as live training does
    trained = [next(gen) for _ in range(12)]
    assert [p.step for p in trained] == list(range(1, 13))
    assert not any(p.settled for p in trained)
    assert {p.learning_rate for p in trained} == {FAST.learning_rate}  # no decay
    weights = _weights(run.model)

    waiting = [next(gen) for _ in range(3)]
    assert all(p.settled and p.step == 12 and p.learning_rate == 0.0 for p in waiting)
    assert waiting[-1].elapsed_s == trained[-1].elapsed_s  # waiting is not training time
    assert all(torch.equal(a, b) for a, b in zip(weights, _weights(run.model)))
    assert run.model.metadata["steps"] == 12

    refused = gen.send(LabelUpdate(np.zeros_like(strokes)))  # unusable: still settled
    assert refused.settled and "no painted pixels" in refused.notice
    more = strokes.copy()
    more[1::9] = 1
    resumed = gen.send(LabelUpdate(more))
    assert not resumed.settled and resumed.step == 13 and resumed.labels_version == 1
    assert resumed.learning_rate == FAST.learning_rate
    assert any(not torch.equal(a, b) for a, b in zip(weights, _weights(run.model)))

    while not resumed.settled:
        resumed = next(gen)
    assert resumed.step == 24  # the new round ran its 12 steps, then settled again
    run.set_settle_steps(15)  # a higher limit resumes the run, up to the new limit
    records = [next(gen) for _ in range(4)]
    assert [(p.step, p.settled) for p in records] == [(25, False), (26, False), (27, False),
                                                      (27, True)]
    with pytest.raises(InputError, match="settle_steps"):
        run.set_settle_steps(0)
    assert run.config.settle_steps == 15

    # A stop from another thread (the GUI's) wakes a waiting run at once.
    monkeypatch.setattr(training, "SETTLED_POLL_S", 60.0)
    threading.Timer(0.05, run.stop).start()
    t0 = time.perf_counter()
    assert next(gen).settled
    assert time.perf_counter() - t0 < 30
    with pytest.raises(StopIteration) as finished:
        next(gen)
    assert finished.value.value.steps == 27


def test_settling_is_for_open_ended_runs_only(blobs):
    image, strokes, _ = blobs
    # A script that cannot send strokes: an open-ended run ends where it settles.
    settled = TrainingRun(image, strokes, replace(FAST, settle_steps=7),
                          model_config=TINY_MODEL)
    assert [p.step for p in settled.steps()] == list(range(1, 8))
    assert settled.run_to_end().steps == 7  # and stays ended
    # A bounded run follows its own schedule, whatever settle_steps says.
    bounded = TrainingRun(image, strokes, replace(FAST, settle_steps=3, max_steps=9),
                          model_config=TINY_MODEL).run_to_end()
    assert bounded.steps == 9
    # None: train until stopped.
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=None),
                      model_config=TINY_MODEL)
    gen = run.steps()
    records = [next(gen) for _ in range(30)]
    assert not any(p.settled for p in records) and records[-1].step == 30
    gen.close()
    with pytest.raises(InputError, match="settle_steps"):
        TrainConfig(settle_steps=0)


def test_bounded_by_seconds(blobs):
    image, strokes, _ = blobs
    t0 = time.perf_counter()
    result = TrainingRun(image, strokes, replace(FAST, max_seconds=1.0),
                         model_config=TINY_MODEL).run_to_end()
    assert 1.0 <= result.elapsed_s < 5.0
    assert time.perf_counter() - t0 < 10


def test_fine_tuning_starts_from_the_given_weights(blobs):
    image, strokes, _ = blobs
    first = TrainingRun(image, strokes, replace(FAST, max_steps=5),
                        model_config=TINY_MODEL).run_to_end().model
    frozen = _weights(first)
    run = TrainingRun(image, strokes, replace(FAST, max_steps=3, seed=1), init=first)
    for a, b in zip(_weights(run.model), frozen):
        assert torch.equal(a, b)  # starts exactly where the init model was
    result = run.run_to_end()
    assert any(not torch.equal(a, b) for a, b in zip(_weights(result.model), frozen))
    for a, b in zip(_weights(first), frozen):
        assert torch.equal(a, b)  # and the init model itself was not modified
    assert result.model.metadata["steps"] == 8
    assert result.model.normalization == first.normalization


def test_a_continued_run_trains_at_the_lower_fine_tuning_rate(blobs):
    # The full rate drove a model continued on a new image's strokes to background
    # everywhere in 3 of 8 seeds (docs/benchmarks.md, "A second image that looks
    # different"): continuing runs follow the same schedule, scaled down.
    image, strokes, _ = blobs
    config = replace(FAST, max_steps=8)
    fresh = TrainingRun(image, strokes, config, model_config=TINY_MODEL)
    fresh_rates = [p.learning_rate for p in fresh.steps()]
    continued = TrainingRun(image, strokes, config, init=fresh.model)
    assert continued.peak_learning_rate == pytest.approx(
        config.learning_rate * config.fine_tune_lr_factor)
    continued_rates = [p.learning_rate for p in continued.steps()]
    assert continued_rates == pytest.approx(
        [rate * config.fine_tune_lr_factor for rate in fresh_rates])
    assert max(continued_rates) > 0
    with pytest.raises(InputError, match="fine_tune_lr_factor"):
        replace(config, fine_tune_lr_factor=0.0)


def test_reproducible_with_a_seed(blobs):
    image, strokes, _ = blobs
    runs = [TrainingRun(image, strokes, replace(FAST, max_steps=6),
                        model_config=TINY_MODEL) for _ in range(2)]
    losses = [[p.loss for p in run.steps()] for run in runs]
    assert losses[0] == losses[1]
    for a, b in zip(_weights(runs[0].model), _weights(runs[1].model)):
        assert torch.equal(a, b)
    other = TrainingRun(image, strokes, replace(FAST, max_steps=6, seed=7),
                        model_config=TINY_MODEL)
    assert [p.loss for p in other.steps()] != losses[0]


def test_each_steps_gradient_is_clipped_to_the_configured_norm(blobs):
    """grad_clip_norm bounds the gradient the optimiser steps with; None leaves it."""
    image, strokes, _ = blobs

    def gradient_norm_after_one_step(clip: float | None) -> float:
        run = TrainingRun(image, strokes, replace(FAST, max_steps=1, grad_clip_norm=clip),
                          model_config=TINY_MODEL)
        run.run_to_end()
        # The gradients stay on the trained network until the next step zeroes them.
        grads = [p.grad for p in run._network.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    unclipped = gradient_norm_after_one_step(None)
    assert unclipped > 0.05  # so that the bound below is a real cut
    assert gradient_norm_after_one_step(0.01) <= 0.01 * (1 + 1e-4)
    with pytest.raises(InputError, match="grad_clip_norm"):
        TrainConfig(grad_clip_norm=0.0)


def test_edge_term_is_cheapest_where_the_intensity_changes():
    """A class boundary on the image's edge costs less than one two pixels beside it."""
    image = torch.zeros(1, 1, 16, 16)
    image[..., 8:] = 0.5  # a step edge between columns 7 and 8

    def logits_with_boundary_at(column: int) -> torch.Tensor:
        logits = torch.full((1, 2, 16, 16), -10.0)
        logits[:, 0, :, :column] = 10.0
        logits[:, 1, :, column:] = 10.0
        return logits.requires_grad_()

    on_edge, beside = logits_with_boundary_at(8), logits_with_boundary_at(10)
    with torch.no_grad():
        at_edge = edge_smoothness(image, on_edge).item()
        assert at_edge < 1e-4
        assert edge_smoothness(image, beside).item() > 100 * at_edge
        uniform = torch.zeros(1, 2, 16, 16)  # one class everywhere would be cheap too...
        uniform[:, 0] = 10.0
        assert edge_smoothness(image, uniform).item() < 1e-4  # ...it acts with the strokes
    edge_smoothness(image, beside).backward()
    assert beside.grad is not None and beside.grad.abs().sum() > 0
    with pytest.raises(InputError, match="edge_weight"):
        TrainConfig(edge_weight=-1.0)
    with pytest.raises(InputError, match="region_weight"):
        TrainConfig(region_weight=-0.5)


def test_region_term_pushes_each_pixel_toward_the_class_of_nearer_intensity():
    image = torch.zeros(2, 1, 8, 8)
    image[..., 4:] = 1.0  # dark left, bright right, in both patches of the batch
    image[0, 0, 0, 3] = 0.8  # a bright pixel on the dark side
    logits = torch.full((2, 2, 8, 8), -10.0)
    logits[:, 0, :, :4] = 10.0
    logits[:, 1, :, 4:] = 10.0
    logits[0, :, 0, 3] = 0.0  # undecided there
    logits.requires_grad_()
    value = region_contrast(image, logits)
    assert value.item() < 0.02  # nearly every pixel has its class's intensity
    value.backward()
    assert logits.grad is not None
    # Raising the bright class at the bright pixel lowers the cost (0.8 is nearer 1 than 0).
    assert logits.grad[0, 1, 0, 3] < 0 < logits.grad[0, 0, 0, 3]
    with torch.no_grad():  # classes of alike intensity: the whole spread is within them
        assert region_contrast(image, torch.zeros(2, 2, 8, 8)).item() > 0.99


def test_region_term_takes_class_means_over_the_batch_not_per_patch():
    """A patch of dim background alone is not split in two by its own brightness."""
    objects = torch.zeros(1, 1, 16, 16)
    objects[..., 8:] = 1.0
    dim = 0.1 * torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    confident = torch.full((1, 2, 16, 16), -10.0)
    confident[0, 0, :, :8] = 10.0
    confident[0, 1, :, 8:] = 10.0
    # Leaning toward background, not evenly (even odds would give the classes one mean).
    undecided = torch.zeros(1, 2, 16, 16)
    undecided[0, 1] = -0.5 + 0.1 * torch.randn(16, 16, generator=torch.Generator().manual_seed(1))

    def pull_toward_objects(images, logits):
        """Where raising the object class lowers the cost, in the dim patch (the last)."""
        logits = logits.clone().requires_grad_()
        region_contrast(images, logits).backward()
        return logits.grad[-1, 1] < 0

    # In a batch with objects, every dim pixel is pulled toward background...
    assert not pull_toward_objects(torch.cat([objects, dim]),
                                   torch.cat([confident, undecided])).any()
    # ...whereas alone, the patch's own brighter pixels would be pulled toward objects.
    assert pull_toward_objects(dim, undecided).any()


def test_region_term_of_several_images_takes_each_images_own_class_means():
    """Another acquisition's bright background is not pulled toward objects by A's."""
    half = torch.zeros(1, 1, 16, 16)
    half[..., 8:] = 1.0
    a = half.repeat(3, 1, 1, 1)  # image A: background 0, objects 1 (three patches)
    b = 0.6 + 0.3 * half  # image B: background 0.6, objects 0.9
    b_background = torch.full((1, 1, 16, 16), 0.6)
    confident = torch.full((1, 2, 16, 16), -10.0)
    confident[0, 0, :, :8] = 10.0
    confident[0, 1, :, 8:] = 10.0
    undecided = torch.zeros(1, 2, 16, 16)
    undecided[0, 1] = -0.5
    images = torch.cat([a, b, b_background])
    logits = torch.cat([confident.repeat(4, 1, 1, 1), undecided])
    sources = np.array([0, 0, 0, 1, 1])

    def pull_toward_objects(groups):
        grad_logits = logits.clone().requires_grad_()
        region_contrast(images, grad_logits, groups).backward()
        return grad_logits.grad[-1, 1] < 0

    assert pull_toward_objects(None).all()  # A's means: 0.6 is nearer A's objects
    assert not pull_toward_objects(sources).any()  # B's own: 0.6 is B's background
    each = (3 * region_contrast(images[:3], logits[:3])
            + 2 * region_contrast(images[3:], logits[3:])) / 5
    torch.testing.assert_close(region_contrast(images, logits, sources), each)
    torch.testing.assert_close(region_contrast(images, logits, np.zeros(5, int)),
                               region_contrast(images, logits))


def test_a_second_images_class_means_follow_its_strokes_not_a_turned_round_guess():
    """On a new image the network may guess the first image's look, inverted here."""
    half = torch.zeros(1, 1, 16, 16)
    half[..., 8:] = 1.0
    a = half  # image A: objects bright
    b = 1.0 - half  # image B: background bright (left), objects dark (right)
    right = torch.full((1, 2, 16, 16), -10.0)
    right[0, 0, :, :8] = 10.0
    right[0, 1, :, 8:] = 10.0
    turned = right.flip(-1)  # on B: bright called object, as on A
    images, logits = torch.cat([a, b]), torch.cat([right, turned])
    targets = torch.full((2, 16, 16), IGNORE_INDEX)
    targets[1, :, 11:] = 1  # B's strokes: object on the dark side...
    targets[1, :, :5] = 0  # ...and background on the bright side
    sources = np.array([0, 1])

    def pull_toward_objects(anchored):
        grad_logits = logits.clone().requires_grad_()
        region_contrast(images, grad_logits, sources,
                        targets if anchored else None).backward()
        return grad_logits.grad[1, 1, :, 8:11] < 0  # B's unpainted dark side

    assert not pull_toward_objects(False).any()  # the guess's means keep the guess
    assert pull_toward_objects(True).all()  # the strokes' means turn it round


def test_edge_term_is_on_for_stacks_in_2d_mode_only(blobs):
    image, strokes, _ = blobs
    stack, stack_strokes = np.stack([image] * 3), np.stack([strokes] * 3)
    config = replace(FAST, max_steps=1)
    assert TrainingRun(image, strokes, config, model_config=TINY_MODEL).edge_weight == 0
    assert TrainingRun(stack, stack_strokes, config, axes="ZYX", mode="2d",
                       model_config=TINY_MODEL).edge_weight == 1.0
    assert TrainingRun(stack, stack_strokes, config, axes="ZYX", mode="3d",
                       model_config=TINY_MODEL).edge_weight == 0
    explicit = TrainingRun(image, strokes, replace(config, edge_weight=0.5),
                           model_config=TINY_MODEL)
    assert explicit.edge_weight == 0.5
    assert explicit.run_to_end().model.metadata["edge_weight"] == 0.5


def test_region_term_is_on_for_every_model_and_has_its_own_weight(blobs):
    image, strokes, _ = blobs
    stack, stack_strokes = np.stack([image] * 3), np.stack([strokes] * 3)
    config = replace(FAST, max_steps=1)
    movie = TrainingRun(stack, stack_strokes, config, axes="TYX", model_config=TINY_MODEL)
    slices = TrainingRun(stack, stack_strokes, config, axes="ZYX", mode="2d",
                         model_config=TINY_MODEL)
    volume = TrainingRun(stack, stack_strokes, config, axes="ZYX", mode="3d",
                         model_config=TINY_MODEL)
    flat = TrainingRun(image, strokes, config, model_config=TINY_MODEL)
    assert flat.region_weight == movie.region_weight == slices.region_weight == REGION_WEIGHT
    assert volume.region_weight == REGION_WEIGHT
    assert volume.edge_weight == 0  # the edge term stays off for 3D models
    # set apart from the edge term: either one can be off while the other is on
    off = TrainingRun(stack, stack_strokes, replace(config, region_weight=0.0), axes="ZYX",
                      mode="2d", model_config=TINY_MODEL)
    assert (off.edge_weight, off.region_weight) == (1.0, 0.0)
    assert off.run_to_end().model.metadata["region_weight"] == 0.0
    # and the loss really carries it: same start, same batch, only the weight differs
    losses = []
    for weight in (0.0, 1.0):
        run = TrainingRun(image, strokes, replace(config, region_weight=weight),
                          model_config=TINY_MODEL)
        losses.append(next(run.steps()).loss)
    assert losses[1] > losses[0]


def test_intensity_terms_put_the_boundary_on_the_edge_strokes_stop_short_of():
    """Strokes 5 px inside and outside a blurred disk: either intensity term finds its rim."""
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:64, :64]
    radius = np.hypot(yy - 32, xx - 32)
    truth = (radius <= 14).astype(np.uint8)
    rng = np.random.default_rng(0)
    image = ndi.gaussian_filter(truth.astype(np.float32), 1.0) + rng.normal(0, 0.03, (64, 64))
    strokes = np.zeros((64, 64), np.uint8)
    strokes[radius <= 9] = 2
    strokes[(radius >= 19) & (radius <= 24)] = 1
    config = replace(FAST, max_steps=150, intensity_jitter="off")
    ious = {}
    # (edge, region): neither, the edge term alone, the region term alone (2D's default)
    for weights in ((0.0, 0.0), (1.0, 0.0), (0.0, None)):
        run = TrainingRun(image.astype(np.float32), strokes,
                          replace(config, edge_weight=weights[0], region_weight=weights[1]),
                          model_config=TINY_MODEL)
        class_map = predict(run.run_to_end().model, image.astype(np.float32)).class_map
        ious[weights] = foreground_iou(class_map, truth)
    print("IoU of the disk without either term / edge term / region term: "
          + " / ".join(f"{iou:.3f}" for iou in ious.values()))
    # measured 0.763 / 0.977 / 0.992 (torch 2.13, CPU)
    assert ious[1.0, 0.0] > 0.9 and ious[0.0, None] > 0.9
    assert min(ious[1.0, 0.0], ious[0.0, None]) > ious[0.0, 0.0] + 0.05


def test_multichannel_and_more_classes():
    rng = np.random.default_rng(0)
    image = rng.random((3, 40, 40)).astype(np.float32)
    strokes = np.zeros((40, 40), dtype=np.uint8)
    strokes[5, 5:30], strokes[20, 5:30], strokes[35, 5:30] = 1, 2, 4
    run = TrainingRun(image, strokes, replace(FAST, max_steps=2), model_config=TINY_MODEL)
    assert run.model.in_channels == 3
    assert run.model.num_classes == 4  # id 3 unpainted so far, but ids keep their meaning
    assert run.model.class_names == ("background", "class 2", "class 3", "class 4")
    run.run_to_end()
    assert predict(run.model, image).class_map.shape == (40, 40)


@pytest.mark.parametrize(
    ("strokes", "message"),
    [
        (np.zeros((64, 64), np.uint8), "no painted pixels"),
        (np.ones((64, 64), np.uint8), "only one class"),
        (np.ones((32, 64), np.uint8), "must cover the same pixels"),
        (np.full((64, 64), -1, np.int16), "negative"),
        (np.full((64, 64), 0.5, np.float32), "whole numbers"),
        # one number per object (instance labels), not classes
        (np.arange(64 * 64, dtype=np.int32).reshape(64, 64) // 64,
         r"^the labels go up to 63 \(63 different values\), but classes are 1 "
         r"\(background\) and 2 to 50 \(objects\); a mask with one number per object "
         "must first become classes: every object 2, the rest 1$"),
    ],
)
def test_unusable_strokes_are_explained(blobs, strokes, message):
    image = blobs[0]
    with pytest.raises(InputError, match=message):
        TrainingRun(image, strokes, FAST)


def test_fine_tuning_refuses_other_channels(blobs):
    image, strokes, _ = blobs
    model = TrainingRun(image, strokes, replace(FAST, max_steps=1),
                        model_config=TINY_MODEL).run_to_end().model
    with pytest.raises(InputError, match="channel"):
        TrainingRun(np.stack([image, image]), strokes, FAST, init=model)


def test_on_a_gpu_the_next_batch_is_drawn_during_the_step_and_redrawn_after_new_strokes(
    blobs, monkeypatch
):
    """Overlapping sampling with the GPU's work must not train on stale or skipped batches."""
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=6), model_config=TINY_MODEL)
    events: list[tuple[str, int]] = []
    real_sample, real_set_labels, real_step = (run._sampler.sample, run._sampler.main.set_labels,
                                               run._train_step)

    kept = []  # keeps every batch alive, so no two share an id()

    def sample(n):
        batch = real_sample(n)
        kept.append(batch)
        events.append(("draw", id(batch)))
        return batch

    def set_labels(samples):
        events.append(("new strokes", 0))
        real_set_labels(samples)

    def on_cpu(method):
        # Pretend to be a GPU run (the prefetch path) while computing on the CPU; the
        # OOM tests pretend the same way.
        def call(*args):
            run.device = torch.device("cpu")
            try:
                return method(*args)
            finally:
                run.device = torch.device("mps")
        return call

    def step(batch):
        events.append(("train", id(batch)))
        return on_cpu(real_step)(batch)

    monkeypatch.setattr(run._sampler, "sample", sample)
    monkeypatch.setattr(run._sampler.main, "set_labels", set_labels)
    monkeypatch.setattr(run, "_train_step", step)
    monkeypatch.setattr(run, "_class_weights", on_cpu(run._class_weights))
    run.device = torch.device("mps")
    gen = run.steps()
    for _ in range(3):
        next(gen)
    inverted = np.where(strokes > 0, 3 - strokes, 0).astype(np.uint8)
    gen.send(LabelUpdate(inverted))
    list(gen)

    kinds = [kind for kind, _ in events]
    # Each step after the first trains on the batch drawn during the step before it.
    assert kinds[:5] == ["draw", "train", "draw", "train", "draw"]
    trained = [i for kind, i in events if kind == "train"]
    drawn = [i for kind, i in events if kind == "draw"]
    assert len(trained) == 6 and len(set(trained)) == 6
    assert set(trained) <= set(drawn)
    # After new strokes arrive, the first step trains on a batch drawn from them.
    update = kinds.index("new strokes")
    first_after = next(i for kind, i in events[update:] if kind == "train")
    assert ("draw", first_after) in events[update:]


@pytest.mark.parametrize("absolute", [False, True])
def test_absolute_intensity_lets_the_network_tell_dim_from_bright(absolute):
    """Dim squares are background, bright ones objects; nothing else differs.

    Layer normalisation divides out the scale of the first convolution's output, so a
    network without the first bias sees a dim square and a bright one alike (noise aside):
    only ``absolute_intensity`` can learn this.
    """
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 10.0, np.float32)
    truth = np.zeros((64, 64), np.uint8)
    for i, (y, x) in enumerate((y, x) for y in range(4, 60, 14) for x in range(4, 60, 14)):
        bright = (i + y // 14) % 2 == 0
        image[y : y + 8, x : x + 8] = 200.0 if bright else 60.0
        truth[y : y + 8, x : x + 8] = bright
    image += rng.normal(0, 0.5, image.shape).astype(np.float32)
    strokes = np.zeros_like(truth)
    strokes[:32] = strokes_from_truth(truth[:32], every=3)  # paint the top half only
    model_config = replace(TINY_MODEL, absolute_intensity=absolute)
    model = TrainingRun(image, strokes, replace(FAST, max_steps=150), axes="YX",
                        model_config=model_config).run_to_end().model
    score = foreground_iou(predict(model, image).class_map[32:], truth[32:])
    print(f"absolute intensity {absolute}: IoU on the unpainted half {score:.3f}")
    if absolute:
        assert score > 0.9
    else:
        assert score < 0.75  # dim squares called objects too (all squares: 0.5)


def _boxes_of_change(before: np.ndarray, after: np.ndarray) -> tuple:
    """The (box, content) patches that turn ``before`` into ``after``: one per changed row."""
    rows = np.flatnonzero((before != after).any(axis=1))
    return tuple(((slice(int(r), int(r) + 1), slice(0, after.shape[1])), after[r:r + 1].copy())
                 for r in rows)


def test_boxes_of_new_strokes_train_as_the_whole_strokes_would(blobs):
    image, strokes, _ = blobs
    whole = TrainingRun(image, strokes.copy(), FAST, model_config=TINY_MODEL)
    boxed = TrainingRun(image, strokes.copy(), FAST, model_config=TINY_MODEL)
    more = strokes.copy()
    more[5:8, 2:60] = 1  # a new background stroke
    more[strokes == 2] = 0  # and one object's stroke erased...
    more[40:43, 40:45] = 2  # ...another painted
    whole.update_labels(more)
    boxed.update_labels(patches=_boxes_of_change(strokes, more))
    np.testing.assert_array_equal(boxed.strokes, more)
    for run in (whole, boxed):
        next(run.steps())
    assert boxed.model.metadata["painted_pixels"] == whole.model.metadata["painted_pixels"]
    assert boxed.model.metadata["painted_pixels"]["2"] == 15


def test_refused_boxes_stay_the_base_of_later_ones(blobs):
    """Erasing a whole class is refused; painting it again elsewhere must not undo the erase."""
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes.copy(), FAST, model_config=TINY_MODEL)
    gen = run.steps()
    next(gen)
    erased = np.where(strokes == 2, 0, strokes).astype(strokes.dtype)
    progress = gen.send(LabelUpdate(patches=_boxes_of_change(strokes, erased)))
    assert "only one class is painted" in progress.notice
    assert progress.labels_version == 0
    np.testing.assert_array_equal(run.strokes, strokes)  # training goes on as before
    repainted = erased.copy()
    repainted[40:43, 40:45] = 2
    progress = gen.send(LabelUpdate(patches=_boxes_of_change(erased, repainted)))
    assert progress.labels_version == 1 and not progress.notice
    np.testing.assert_array_equal(run.strokes, repainted)


def test_a_box_that_does_not_fit_is_refused_and_changes_nothing(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes.copy(), FAST, model_config=TINY_MODEL)
    height, width = strokes.shape
    bad = [
        ((slice(height - 1, height + 1), slice(0, 4)), np.ones((2, 4), np.uint8)),  # outside
        ((slice(0, 2), slice(0, 4)), np.ones((2, 5), np.uint8)),  # content of another shape
        ((slice(0, 2),), np.ones((2, width), np.uint8)),  # one axis missing
        ((slice(0, 2), slice(0, 4)), np.full((2, 4), 7, np.uint8)),  # a class the model lacks
    ]
    for patch in bad:
        with pytest.raises(InputError, match="does not fit|label 7"):
            run.update_labels(patches=(patch,))
        run._refused_labels = None  # judged one by one here
        np.testing.assert_array_equal(run.strokes, strokes)


def test_boxes_land_on_the_right_slice_of_a_stack_with_any_axis_order(blobs):
    image, strokes, _ = blobs
    planes = [image, image[::-1], image[:, ::-1]]
    stack = np.stack([np.stack(planes), np.stack(planes[::-1])], axis=1)  # Z, T, Y, X
    labels = np.zeros(stack.shape, np.uint8)
    labels[0, 0] = strokes
    run = TrainingRun(stack, labels, FAST, axes="ZTYX", mode="2d", model_config=TINY_MODEL)
    box = (slice(2, 3), slice(1, 2), slice(10, 14), slice(20, 30))
    run.update_labels(patches=((box, np.full((1, 1, 4, 10), 2, np.uint8)),))
    expected = labels.copy()
    expected[box] = 2
    np.testing.assert_array_equal(run.strokes, expected)
    next(run.steps())
    assert run.model.metadata["painted_pixels"]["2"] == int((expected == 2).sum())


def test_boxes_never_write_into_read_only_strokes(blobs):
    image, strokes, _ = blobs
    frozen = strokes.copy()
    frozen.flags.writeable = False
    run = TrainingRun(image, frozen, FAST, model_config=TINY_MODEL)
    run.update_labels(patches=(((slice(0, 2), slice(0, 8)), np.ones((2, 8), np.uint8)),))
    assert (run.strokes[:2, :8] == 1).all()
    np.testing.assert_array_equal(frozen, strokes)


def test_label_updates_merge_in_order():
    first = LabelUpdate(np.zeros((2, 2)))
    box = ((slice(0, 1), slice(0, 1)), np.ones((1, 1)))
    later = LabelUpdate(patches=(box,))
    merged = first.then(later)
    assert merged.labels is first.labels and merged.patches == (box,)
    assert merged.then(LabelUpdate(np.ones((2, 2)))).patches == ()  # whole strokes replace
    with pytest.raises(InputError):
        LabelUpdate()
