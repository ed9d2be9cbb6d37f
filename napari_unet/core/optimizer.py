"""AdamW written out, so that training never imports torch's compiler.

Every ``torch.optim`` optimiser imports ``torch._dynamo`` (and with it sympy and the rest
of the compiler stack) when it is built: ``Optimizer.add_param_group`` is wrapped in
``torch._disable_dynamo``, which imports it on first use. That import took 1.6-2.0 s on 2
CPU cores, nearly all of the wait before a process's first training step; the step itself
takes milliseconds. Nothing here compiles, so the import buys nothing.

:class:`AdamW` is ``torch.optim.AdamW``'s update (decoupled weight decay, bias-corrected
moments, no AMSGrad), with its multi-tensor ("foreach") kernels: one kernel per operation
over all parameters instead of a Python loop, which matters on a GPU where a step is a
few milliseconds. ``tests/core/test_optimizer.py`` checks it step for step against
``torch.optim.AdamW``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class AdamW:
    """AdamW with the parts of the ``torch.optim.Optimizer`` interface training uses.

    ``param_groups`` (one group; set ``group["lr"]`` between steps to schedule the learning
    rate), ``state`` (per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``), ``zero_grad``
    and ``step``: enough for ``torch.amp.GradScaler`` (``unscale_``, ``step``) and for
    moving the state to another device.

    Parameters
    ----------
    params
        The parameters to optimise.
    lr
        Learning rate.
    weight_decay
        Decoupled weight decay: each step multiplies the weights by ``1 - lr * weight_decay``.
    betas
        Decay rates of the first and second moment estimates.
    eps
        Added to the square root of the second moment, for numerical stability.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 weight_decay: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        params = list(params)
        if not params:
            raise ValueError("AdamW got no parameters to optimise")
        if lr < 0 or weight_decay < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamW settings: lr={lr}, weight_decay={weight_decay}, "
                             f"betas={betas}, eps={eps}")
        self.param_groups: list[dict[str, Any]] = [{
            "params": params, "lr": lr, "weight_decay": weight_decay, "betas": betas,
            "eps": eps,
        }]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``set_to_none=False`` zeroes them in place instead)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient; the others keep their state."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdamW does not support sparse gradients")
            for param in params:
                if param not in self.state:
                    self.state[param] = {
                        "step": 0,
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(
                            param, memory_format=torch.preserve_format),
                    }
            self._update(group, params)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        for state in states:
            state["step"] += 1
        # Counted per parameter, as torch does: one that had no gradient for a while has
        # taken fewer steps and keeps its own bias correction.
        steps = [s["step"] for s in states]

        if group["weight_decay"] != 0:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

        step_sizes = [-lr / (1 - beta1**n) for n in steps]
        correction_roots = [(1 - beta2**n) ** 0.5 for n in steps]
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, correction_roots)
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denominators, step_sizes)
