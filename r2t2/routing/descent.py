"""Projected Adam with a cosine-annealed learning rate: the optimiser of the strategies that descend a loss.

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
from r2t2.routing.ties import first_lowest

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
    """Per-request bookkeeping: loss history, which iterate each loss belongs to, why a request stopped.

    Iterates are kept as one [Q, L, E] snapshot per step (one copy per step, not per request), and each
    request's final and best iterates are picked from them at the end.
    """

    def __init__(self, count: int) -> None:
        self.snapshots: list[Tensor] = []
        self.losses: list[list[float]] = [[] for _ in range(count)]
        self.steps_of: list[list[int]] = [[] for _ in range(count)]  # snapshot index of each recorded loss
        self.stopped_at: list[int | None] = [None] * count
        self.fallback: list[str | None] = [None] * count

    def record(self, routing: Tensor, values: list[float], live: list[bool]) -> None:
        self.snapshots.append(routing.detach().clone())
        for q, (value, alive) in enumerate(zip(values, live)):
            if alive:
                self.losses[q].append(value)
                self.steps_of[q].append(len(self.snapshots) - 1)

    def stop(self, q: int, step: int, reason: str | None) -> None:
        """Request q stops after `step` updates; `reason` None: it settled (not a fallback)."""
        self.stopped_at[q], self.fallback[q] = step, reason

    def results(self, starts: Tensor, steps: int) -> list[Descent]:
        out = []
        for q, (losses, at) in enumerate(zip(self.losses, self.steps_of)):
            final = self.snapshots[at[-1]][q] if at else starts[q]
            best_index = first_lowest(losses) if losses else None  # the earlier iterate wins a near-tie
            best = starts[q] if best_index is None else self.snapshots[at[best_index]][q]
            out.append(Descent(final.clone(), best.clone(), math.inf if best_index is None else losses[best_index],
                               tuple(losses), steps if self.stopped_at[q] is None else self.stopped_at[q],
                               self.fallback[q]))
        return out


Objective = Callable[[Tensor, list[int]], Tensor]


def projected_adam(objective: Objective, starts: Tensor, steps: int, lr: Tensor, lr_min: Tensor,
                   movable: Tensor | None = None, tolerance: Tensor | None = None,
                   settles_at_start: Callable[[int, float], bool] | None = None,
                   good_enough: Tensor | None = None) -> list[Descent]:
    """Minimise `objective(routings [Q, L, E], live) -> losses [Q]` from valid `starts` [Q, L, E], per request.

    `live` lists the requests still descending: only their losses are read, so an objective may skip the
    others' work. `lr` and `lr_min` are [Q]. Each step: losses and gradients at the current iterates, one
    Adam update per request at its cosine learning rate on the gradient's within-simplex part (row mean
    removed), projection of every row back onto the simplex. A request whose loss or gradient turns
    non-finite, or whose step overflows the simplex's numeric range (a learning rate far too large), stops
    there: it keeps its last iterate with a finite loss and names the cause in `fallback`; the others go on.

    `tolerance` ([Q], or None for none) stops a request whose update would move its routing by less than
    that (half the L1 distance, largest row): it keeps the iterate whose loss it already has, and its
    `steps` count the updates it made. 0 never stops a request.

    `movable` ([Q, L, E] bool, or None for all) confines each request to some entries: the others keep
    their start values, and each row's movable entries share the mass those leave.

    `settles_at_start(q, loss)` (None: never) stops request q at its start, with no update, when its loss there
    says the steps would be wasted (the evidence guard keeping r0); when every request stops so, no gradient is
    taken at all.

    `good_enough` ([Q], or None for never) stops a request at the first iterate whose loss is at or below it, keeping
    that iterate (a fit that only needs a margin, not the minimum).
    """
    count = starts.shape[0]
    trace = _Trace(count)
    routing = starts.detach().clone()
    first, second = torch.zeros_like(routing), torch.zeros_like(routing)
    live = [True] * count
    shape = (-1,) + (1,) * (routing.ndim - 1)
    for step in range(steps):
        current = routing.detach().requires_grad_(True)
        loss = objective(current, _indices(live))
        values = loss.detach().tolist()
        _stop(trace, live, [not math.isfinite(v) for v in values], step, "non-finite loss at step {step}")
        if step == 0 and settles_at_start is not None:
            settled = [alive and settles_at_start(q, v) for q, (alive, v) in enumerate(zip(live, values))]
            if any(settled):
                trace.record(routing, values, settled)
                _stop(trace, live, settled, step, None)
        if good_enough is not None:
            reached = [alive and v <= float(good_enough[q]) for q, (alive, v) in enumerate(zip(live, values))]
            if any(reached):
                trace.record(routing, values, reached)
                _stop(trace, live, reached, step, None)
        if not any(live):
            break
        mask = _mask(live, routing, shape)
        (gradient,) = torch.autograd.grad(loss.sum() if mask is None else torch.where(mask.flatten(), loss, 0.0).sum(),
                                          current)
        trace.record(routing, values, live)
        _stop(trace, live, torch.isfinite(gradient).flatten(1).all(1).logical_not().tolist(), step,
              "non-finite gradient at step {step}")
        # Only the part of the gradient within each row's simplex plane can move the routing: a shared
        # offset is undone by the projection, yet Adam's per-coordinate scaling would turn it into an
        # equal step on every expert, which the projection then cancels entirely.
        gradient = _within_simplex(gradient, movable)
        mask = _mask(live, routing, shape)
        if mask is not None:  # stopped requests keep their moments and routing untouched
            gradient = torch.where(mask, gradient, 0.0)
        new_first = first.lerp(gradient, 1 - BETAS[0])
        new_second = second * BETAS[1] + (1 - BETAS[1]) * gradient * gradient
        first = new_first if mask is None else torch.where(mask, new_first, first)
        second = new_second if mask is None else torch.where(mask, new_second, second)
        t = step + 1
        size = cosine_lr(step, steps, lr, lr_min) / (1 - BETAS[0] ** t)
        denominator = second.sqrt() / math.sqrt(1 - BETAS[1] ** t) + ADAM_EPS
        moved = routing - size.view(shape) * first / denominator
        finite = torch.isfinite(moved)
        projected = project_to_simplex(torch.where(finite, moved, 0.0), movable)
        overflowed = (finite.flatten(1).all(1) & _rows_sum_to_one(projected)).logical_not().tolist()
        _stop(trace, live, overflowed, step,
              "the step at step {step} overflowed (learning rate too large for the routing's scale)")
        if tolerance is not None:
            _stop(trace, live, (_step_size(routing, projected) < tolerance).tolist(), step, None)
        mask = _mask(live, routing, shape)
        routing = projected if mask is None else torch.where(mask, projected, routing)
        if not any(live):
            break
    if any(live):
        with torch.no_grad():
            values = objective(routing, _indices(live)).tolist()
        _stop(trace, live, [not math.isfinite(v) for v in values], steps, "non-finite loss after step {step}")
        trace.record(routing, values, live)
    return trace.results(starts, steps)


def _step_size(routing: Tensor, updated: Tensor) -> Tensor:
    """[Q]: how far each request's update moves its routing, half the L1 distance of its largest row (as `moved`)."""
    return ((updated - routing).abs().sum(-1) / 2).flatten(1).amax(1)


def _indices(live: list[bool]) -> list[int]:
    return [q for q, alive in enumerate(live) if alive]


def _within_simplex(gradient: Tensor, movable: Tensor | None) -> Tensor:
    """The gradient's part within each row's simplex plane: its mean over the row's movable entries removed,
    and nothing on the entries that may not move."""
    if movable is None:
        return gradient - gradient.mean(-1, keepdim=True)
    count = movable.sum(-1, keepdim=True).clamp_min(1)
    mean = torch.where(movable, gradient, 0.0).sum(-1, keepdim=True) / count
    return torch.where(movable, gradient - mean, 0.0)


def _mask(live: list[bool], like: Tensor, shape: tuple[int, ...]) -> Tensor | None:
    """The live requests as a mask broadcastable over `like` ([Q, 1, 1]); None when every request is live."""
    return None if all(live) else torch.tensor(live, device=like.device).view(shape)


def _stop(trace: _Trace, live: list[bool], failed: list[bool], step: int, reason: str | None) -> None:
    """Stop every live request that `failed` (in place on `live`); `reason` None: they settled."""
    for q, (alive, bad) in enumerate(zip(live, failed)):
        if alive and bad:
            live[q] = False
            trace.stop(q, step, None if reason is None else reason.format(step=step))


def _rows_sum_to_one(routing: Tensor) -> Tensor:
    """[Q]: every row of each request's routing sums to one (a projection that lost precision does not)."""
    return ((routing.sum(-1) - 1).abs() <= _ROW_SUM_TOLERANCE).flatten(1).all(1)
