"""Projected Adam with a cosine-annealed learning rate: the optimiser NGD and the oracle share.

It optimises Q routings at once (one per request of a batch): one objective call gives every request's
loss, one backward every request's gradient, and Adam's moments are element-wise, so each request keeps
its own optimiser state, learning rate and stopping point. A request's iterates depend only on its own
loss, never on the others in the batch. Gradients are taken with `torch.autograd.grad` with respect to
the routings only, so a model whose parameters require grad never accumulates `.grad`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.routing.simplex import project_to_simplex

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as the paper uses
ADAM_EPS = 1e-8
_ROW_SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Descent:
    """Trace of one request's projected descent.

    `final` is the last iterate whose loss was finite, `best` the lowest-loss iterate seen; `losses`
    holds their losses in order (steps + 1 values when the loop ran to the end).
    """

    final: Tensor
    best: Tensor
    best_loss: float
    losses: tuple[float, ...]
    steps: int
    fallback: str | None


def cosine_lr(step: int, steps: int, lr: Tensor, lr_min: Tensor) -> Tensor:
    """Learning rate at `step` of `steps`, annealed from `lr` (step 0) toward `lr_min` by a half cosine."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * step / steps))


class _Trace:
    """Per-request bookkeeping: loss history, last finite and best iterates, why it stopped."""

    def __init__(self, starts: Tensor) -> None:
        count = starts.shape[0]
        self.losses: list[list[float]] = [[] for _ in range(count)]
        self.final = starts.detach().clone()
        self.best = starts.detach().clone()
        self.best_loss = [math.inf] * count
        self.stopped_at: list[int | None] = [None] * count
        self.fallback: list[str | None] = [None] * count

    def record(self, q: int, value: float, at: Tensor) -> None:
        self.losses[q].append(value)
        self.final[q] = at
        if value < self.best_loss[q]:
            self.best[q], self.best_loss[q] = at, value

    def stop(self, q: int, step: int, reason: str) -> None:
        self.stopped_at[q], self.fallback[q] = step, reason

    def results(self, steps: int) -> list[Descent]:
        return [Descent(self.final[q].clone(), self.best[q].clone(), self.best_loss[q], tuple(self.losses[q]),
                        steps if self.stopped_at[q] is None else self.stopped_at[q], self.fallback[q])
                for q in range(len(self.losses))]


def projected_adam(objective: Callable[[Tensor], Tensor], starts: Tensor, steps: int, lr: Tensor,
                   lr_min: Tensor) -> list[Descent]:
    """Minimise `objective(routings [Q, L, E]) -> losses [Q]` from valid `starts` [Q, L, E], per request.

    `lr` and `lr_min` are [Q]. Each step: losses and gradients at the current iterates, one Adam update
    per request at its cosine learning rate on the gradient's within-simplex part (row mean removed),
    projection of every row back onto the simplex. A request whose loss or gradient turns non-finite, or
    whose step overflows the simplex's numeric range (a learning rate far too large), stops there: it
    keeps its last iterate with a finite loss and names the cause in `fallback`; the others go on.
    """
    trace = _Trace(starts)
    routing = starts.detach().clone()
    first, second = torch.zeros_like(routing), torch.zeros_like(routing)
    live = torch.ones(routing.shape[0], dtype=torch.bool, device=routing.device)
    shape = (-1,) + (1,) * (routing.ndim - 1)
    for step in range(steps):
        current = routing.detach().requires_grad_(True)
        loss = objective(current)
        _stop_where(trace, live, ~torch.isfinite(loss.detach()), step, "non-finite loss at step {step}")
        if not live.any():
            break
        (gradient,) = torch.autograd.grad(torch.where(live, loss, torch.zeros_like(loss)).sum(), current)
        for q in live.nonzero().flatten().tolist():
            trace.record(q, float(loss[q].detach()), routing[q])
        _stop_where(trace, live, ~torch.isfinite(gradient).flatten(1).all(1), step,
                    "non-finite gradient at step {step}")
        # Only the part of the gradient within each row's simplex plane can move the routing: a shared
        # offset is undone by the projection, yet Adam's per-coordinate scaling would turn it into an
        # equal step on every expert, which the projection then cancels entirely.
        gradient = torch.where(live.view(shape), gradient - gradient.mean(-1, keepdim=True), 0.0)
        first = torch.where(live.view(shape), first.lerp(gradient, 1 - BETAS[0]), first)
        second = torch.where(live.view(shape), second * BETAS[1] + (1 - BETAS[1]) * gradient * gradient, second)
        t = step + 1
        size = cosine_lr(step, steps, lr, lr_min) / (1 - BETAS[0] ** t)
        denominator = second.sqrt() / math.sqrt(1 - BETAS[1] ** t) + ADAM_EPS
        moved = routing - size.view(shape) * first / denominator
        projected = project_to_simplex(torch.where(torch.isfinite(moved), moved, 0.0))
        overflowed = ~(torch.isfinite(moved).flatten(1).all(1) & _rows_sum_to_one(projected))
        _stop_where(trace, live, overflowed, step,
                    "the step at step {step} overflowed (learning rate too large for the routing's scale)")
        routing = torch.where(live.view(shape), projected, routing)
    if live.any():
        with torch.no_grad():
            loss = objective(routing)
        _stop_where(trace, live, ~torch.isfinite(loss), steps, "non-finite loss after step {step}")
        for q in live.nonzero().flatten().tolist():
            trace.record(q, float(loss[q]), routing[q])
    return trace.results(steps)


def _stop_where(trace: _Trace, live: Tensor, failed: Tensor, step: int, reason: str) -> None:
    """Stop every live request for which `failed` holds (in place on `live`)."""
    for q in (live & failed).nonzero().flatten().tolist():
        trace.stop(q, step, reason.format(step=step))
    live &= ~failed


def _rows_sum_to_one(routing: Tensor) -> Tensor:
    """[Q]: every row of each request's routing sums to one (a projection that lost precision does not)."""
    return ((routing.sum(-1) - 1).abs() <= _ROW_SUM_TOLERANCE).flatten(1).all(1)
