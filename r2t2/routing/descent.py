"""Projected Adam with a cosine-annealed learning rate: the optimiser NGD and the oracle share.

Gradients are taken with `torch.autograd.grad` with respect to the routing only, so a model whose
parameters require grad never accumulates `.grad` and is never updated.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.routing.simplex import project_to_simplex


@dataclass(frozen=True)
class Descent:
    """Trace of one projected descent.

    `final` is the last iterate whose loss was finite, `best` the lowest-loss iterate seen; `losses`
    holds their losses in order (steps + 1 values when the loop ran to the end).
    """

    final: Tensor
    best: Tensor
    best_loss: float
    losses: tuple[float, ...]
    steps: int
    fallback: str | None


def cosine_lr(step: int, steps: int, lr: float, lr_min: float) -> float:
    """Learning rate at `step` of `steps`, annealed from `lr` (step 0) toward `lr_min` by a half cosine."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * step / steps))


def projected_adam(objective: Callable[[Tensor], Tensor], start: Tensor, steps: int, lr: float,
                   lr_min: float) -> Descent:
    """Minimise a scalar `objective(routing)` over valid routings, starting from valid `start`.

    Each step: loss and gradient at the current iterate, one Adam update at the cosine learning rate on
    the gradient's within-simplex part (row mean removed), projection of every row back onto the simplex. A non-finite loss or gradient ends the loop; the
    result then keeps the last iterate with a finite loss and names the cause in `fallback`.
    """
    routing = start.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([routing], lr=lr)
    losses: list[float] = []
    final = best = start.detach().clone()
    best_loss = math.inf

    def record(value: float, at: Tensor) -> None:
        nonlocal final, best, best_loss
        losses.append(value)
        final = at.detach().clone()
        if value < best_loss:
            best, best_loss = final, value

    for step in range(steps):
        loss = objective(routing)
        if not torch.isfinite(loss):
            return Descent(final, best, best_loss, tuple(losses), step, f"non-finite loss at step {step}")
        (gradient,) = torch.autograd.grad(loss, routing)
        record(float(loss.detach()), routing)
        if not torch.isfinite(gradient).all():
            return Descent(final, best, best_loss, tuple(losses), step, f"non-finite gradient at step {step}")
        for group in optimiser.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, lr_min)
        # Only the part of the gradient within each row's simplex plane can move the routing: a shared
        # offset is undone by the projection, yet Adam's per-coordinate scaling would turn it into an
        # equal step on every expert, which the projection then cancels entirely.
        routing.grad = gradient - gradient.mean(-1, keepdim=True)
        optimiser.step()
        with torch.no_grad():
            routing.copy_(project_to_simplex(routing))
    with torch.no_grad():
        loss = objective(routing)
    if not torch.isfinite(loss):
        return Descent(final, best, best_loss, tuple(losses), steps, f"non-finite loss after step {steps}")
    record(float(loss), routing)
    return Descent(final, best, best_loss, tuple(losses), steps, None)
