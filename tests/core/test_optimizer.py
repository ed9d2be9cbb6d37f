"""core.optimizer.AdamW against torch.optim.AdamW, and training without torch's compiler."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from napari_unet.core.optimizer import AdamW


class TwoBranches(torch.nn.Module):
    """A small convolutional net whose second branch is used only on some steps."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.GroupNorm(1, 4)
        self.second = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor, use_second: bool) -> torch.Tensor:
        y = self.norm(self.first(x)).relu()
        return self.second(y) if use_second else y


def _train_both(steps: int, scaler_ours=None, scaler_torch=None, poison_step: int = -1):
    torch.manual_seed(0)
    ours_net = TwoBranches()
    torch_net = copy.deepcopy(ours_net)
    ours = AdamW(ours_net.parameters(), lr=1e-2, weight_decay=0.05)
    reference = torch.optim.AdamW(torch_net.parameters(), lr=1e-2, weight_decay=0.05,
                                  foreach=True)
    inputs = torch.randn(steps, 2, 1, 16, 16)
    for i in range(steps):
        # A schedule set through param_groups, as training sets it, and the second branch
        # left out on every third step (its parameters then have no gradient).
        use_second = i % 3 != 1
        for net, optimizer, scaler in ((ours_net, ours, scaler_ours),
                                       (torch_net, reference, scaler_torch)):
            for group in optimizer.param_groups:
                group["lr"] = 1e-2 * (i + 1) / steps
            optimizer.zero_grad(set_to_none=True)
            loss = net(inputs[i], use_second).square().mean()
            if i == poison_step:
                loss = loss * float("inf")
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
    return ours_net, torch_net, ours, reference


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=name)


def test_adamw_takes_the_same_steps_as_torchs():
    ours_net, torch_net, ours, reference = _train_both(12)
    _assert_same(ours_net, torch_net)
    # The branch left out of some steps counted only the steps it took, as torch's does.
    second_weight = ours_net.second.weight
    assert ours.state[second_weight]["step"] == 8
    assert reference.state[torch_net.second.weight]["step"].item() == 8
    # The parameters did move: the comparison is not of two untouched networks.
    assert not torch.equal(ours_net.first.weight, TwoBranches().first.weight)


def test_adamw_works_under_a_grad_scaler_that_skips_a_step():
    """Loss scaling (fp16 training) calls unscale_/step on the optimiser's param_groups."""
    if not hasattr(torch.amp, "GradScaler"):
        pytest.skip("torch.amp.GradScaler is newer than this torch")
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**8) for _ in range(2)]
    ours_net, torch_net, ours, _ = _train_both(6, *scalers, poison_step=2)
    _assert_same(ours_net, torch_net)
    # The infinite loss's step was skipped: 5 of 6 steps taken by the first layer.
    assert ours.state[ours_net.first.weight]["step"] == 5


def test_adamw_rejects_bad_settings():
    with pytest.raises(ValueError, match="no parameters"):
        AdamW([])
    with pytest.raises(ValueError, match="invalid AdamW settings"):
        AdamW(torch.nn.Linear(2, 2).parameters(), lr=-1.0)


def test_training_and_prediction_never_import_torchs_compiler():
    """Building a torch.optim optimiser imported torch._dynamo: seconds before the first step.

    Run in a fresh interpreter: this test process may have imported it for other reasons.
    """
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import torch
        torch.set_num_threads(1)
        from napari_unet.core.config import ModelConfig, TrainConfig
        from napari_unet.core.generators import run_to_end
        from napari_unet.core.inference import predict
        from napari_unet.core.training import train, warm_up

        warm_up()
        image = np.random.default_rng(0).random((48, 48), dtype=np.float32)
        labels = np.zeros((48, 48), np.uint8)
        labels[5:10, 5:40] = 1
        labels[30:35, 5:40] = 2
        result = run_to_end(train(image, labels, TrainConfig(max_steps=3, batch_size=2),
                                  model_config=ModelConfig(depth=1, base_channels=4)))
        predict(result.model, image)
        assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
        print("steps", result.steps)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "steps 3" in done.stdout
