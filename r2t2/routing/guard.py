"""Re-route only on evidence: keep the router's own routing when the neighbourhood does not support a move.

The paper's strategies always move toward the neighbours. Two failures follow: neighbours from
different tasks, whose routings disagree and average to a routing good for none of them; and a
routing the router got right being pulled away although nothing said it was wrong. The guard checks
the strategy's move against four pieces of evidence, in this order, and keeps r0 at the first that
fails (the reason is reported):

1. `neighbours_disagree`: the neighbours' own routings are spread out (kernel-weighted mean, over
   neighbours, of the largest per-row half-L1 distance between a neighbour's routing and their
   weighted mean exceeds `guard_max_spread`). A consensus is what makes borrowing a routing sensible.
2. `neighbours_agree_with_router`: their weighted routing lies within `guard_min_shift` of r0 (half-L1,
   largest row): they were answered right with about the router's own routing (0, the default: never).
3. `base_fits_neighbours`: the neighbours are already answered well under r0 (their weighted loss at
   r0 is at most `guard_fit_loss`): nothing says the base routing is wrong.
4. `no_loss_gain`: the move does not lower the neighbours' weighted loss by at least `guard_min_gain`.

The first three need nothing the strategy computes: the first two are read from the neighbours alone, and
the loss under r0 is the strategy's own first evaluation. So they are decided before the strategy's steps
(`decided_before_steps` in the verdict): the steps would be thrown away, since the guard keeps r0 whatever
they reach.

Pure torch and model-agnostic: it sees routings, weights and a loss function, nothing of the model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig

REASONS = ("neighbours_disagree", "neighbours_agree_with_router", "base_fits_neighbours", "no_loss_gain")


@dataclass(frozen=True)
class GuardSettings:
    max_spread: float
    fit_loss: float
    min_gain: float

    @classmethod
    def of(cls, config: RerouteConfig) -> GuardSettings:
        return cls(config.guard_max_spread, config.guard_fit_loss, config.guard_min_gain)


@dataclass(frozen=True)
class GuardVerdict:
    """Whether the guard kept the base routing (`fired`), why, and the evidence it read."""

    fired: bool
    reason: str | None
    spread: float
    base_loss: float | None  # the neighbours' kernel-weighted loss under r0 (None: decided before any loss)
    moved_loss: float | None  # ... under the strategy's routing
    before_steps: bool = False  # decided before the strategy's steps, which were not run

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "reason": self.reason, "neighbour_spread": self.spread,
                "neighbour_loss_base": self.base_loss, "neighbour_loss_moved": self.moved_loss,
                "decided_before_steps": self.before_steps}


def router_shift(weights: Tensor, routings: Tensor, r0: Tensor) -> float:
    """How far the neighbours' weighted mean routing lies from r0: half the L1 distance, largest row."""
    mean = torch.einsum("m,mle->le", weights.to(routings.dtype), routings)
    return float(((mean - r0.to(routings.dtype)).abs().sum(-1) / 2).amax())


def decided_without_loss(spread: float, shift: float, config: RerouteConfig) -> GuardVerdict | None:
    """The verdicts that need no loss: r0 kept when the neighbours' routings are spread out, or when their weighted
    routing is within `guard_min_shift` of r0 (they were answered right with about the router's own routing: nothing
    says it is wrong). None: the strategy runs."""
    if spread > config.guard_max_spread:
        reason = "neighbours_disagree"
    elif shift < config.guard_min_shift:
        reason = "neighbours_agree_with_router"
    else:
        return None
    return GuardVerdict(True, reason, spread, None, None, before_steps=True)


def fits_at_base(config: RerouteConfig, base_loss: float) -> bool:
    """Whether the guard, when on, keeps r0 because its neighbours' loss there is already low: a strategy that has
    just evaluated r0 stops there (a NaN loss is no evidence)."""
    return config.guard and base_loss <= config.guard_fit_loss


def neighbour_spread(weights: Tensor, routings: Tensor) -> float:
    """Weighted mean over neighbours of the largest per-row half-L1 distance to their weighted mean routing.

    0 when every neighbour has the same routing; 1 when their weight sits on disjoint experts.
    `weights` [m] sum to one, `routings` [m, L, E].
    """
    w = weights.to(routings.dtype)
    mean = torch.einsum("m,mle->le", w, routings)
    per_neighbour = ((routings - mean).abs().sum(-1) / 2).amax(-1)
    return float((w * per_neighbour).sum())


def judge(r0: Tensor, routing: Tensor, weights: Tensor, neighbour_routings: Tensor,
          neighbour_loss: Callable[[Tensor], Tensor], settings: GuardSettings) -> GuardVerdict:
    """The guard's verdict on moving from `r0` to `routing` ([L, E] each).

    `weights` [m] and `neighbour_routings` [m, L, E] describe the weighted neighbours the strategy used;
    `neighbour_loss(routings [R, L, E]) -> [R]` is their kernel-weighted loss under each routing. Both
    losses are always evaluated (one call, r0 and `routing` together) so the verdict carries all evidence.
    """
    spread = neighbour_spread(weights, neighbour_routings)
    with torch.no_grad():
        base_loss, moved_loss = (float(v) for v in neighbour_loss(torch.stack([r0, routing.to(r0.dtype)])))
    reason = None
    if spread > settings.max_spread:
        reason = "neighbours_disagree"
    elif base_loss <= settings.fit_loss:
        reason = "base_fits_neighbours"
    elif not moved_loss <= base_loss - settings.min_gain:  # a NaN loss is no evidence either
        reason = "no_loss_gain"
    return GuardVerdict(reason is not None, reason, spread, base_loss, moved_loss)
