"""What a re-routing call returns: the new routing and the evidence behind it, JSON-ready for the HTTP layer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from r2t2.routing.guard import GuardVerdict
from r2t2.routing.strategies import strategy


@dataclass(frozen=True)
class Neighbour:
    """One reference sample that steered the routing, with its normalised kernel weight."""

    id: str
    weight: float
    distance: float


@dataclass(frozen=True)
class LineSearchPoint:
    """One evaluation of the kernel strategy's line search: alpha * r0 + (1 - alpha) * r_hat."""

    alpha: float
    loss: float


@dataclass(frozen=True)
class RerouteResult:
    """Outcome of one strategy on one request.

    `fallback` is None when the strategy ran to completion; otherwise it says why it stopped early,
    and `routing` is the last trustworthy one (the base routing when nothing better was reached).
    `losses` is strategy-specific, and its registry entry's `record` names it in the record (e.g. the
    neighbour loss per NGD step plus the final one); kernel regression keeps its evaluations in
    `line_search` instead. A two-stage result (`lm_stage`) reports its first stage in its own fields and its
    final routing in `routing`.
    """

    strategy: str
    base_routing: Tensor  # [L, E]
    routing: Tensor  # [L, E], detached
    neighbours: tuple[Neighbour, ...] = ()
    losses: tuple[float, ...] = ()
    alpha: float | None = None
    line_search: tuple[LineSearchPoint, ...] = ()
    bandwidth: float | None = None
    steps: int = 0
    fallback: str | None = None
    seconds: float = field(default=0.0)
    guard: GuardVerdict | None = None  # the evidence guard's verdict; None when it was off or not applicable
    # The strategy stopped at its first evaluation, of r0, whose neighbour loss is low enough for the guard to keep r0
    # whatever the steps would reach (routing/guard.py `fits_at_base`).
    settled_at_base: bool = False
    # `target` both on a model with vision and LM rows: the second stage, which moved the LM rows from the routing
    # the first (this result's own fields) left; its `base_routing` is that routing.
    lm_stage: RerouteResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The re-routing part of the r2t2 record (docs/record.md), in plain Python values.

        Every strategy reports the same core (routings, `moved`, `fallback`, `neighbours`); the fields
        of one strategy's own work (its registry entry's `record`) appear for that strategy only, named for what
        they hold.
        """
        entry = strategy(self.strategy)
        record: dict[str, Any] = {
            "strategy": self.strategy,
            "base_routing": self.base_routing.detach().cpu().tolist(),
            "routing": self.routing.detach().cpu().tolist(),
            "moved": moved(self.base_routing, self.routing),
            "fallback": self.fallback,
            "neighbour_space": entry.needs.neighbour_space,
            "neighbours": [{"id": n.id, "weight": n.weight, "distance": n.distance} for n in self.neighbours],
            "guard": None if self.guard is None else self.guard.to_dict(),
        }
        if entry.needs.neighbour_space is not None:
            record["kernel_bandwidth"] = self.bandwidth
        if self.lm_stage is not None:
            stage = self.lm_stage
            record["lm_stage"] = {"strategy": stage.strategy, "moved": moved(stage.base_routing, stage.routing),
                                  "fallback": stage.fallback,
                                  "guard": None if stage.guard is None else stage.guard.to_dict(),
                                  **strategy(stage.strategy).record(stage)}
        return {**record, **entry.record(self)}


def moved(base: Tensor, routing: Tensor) -> float:
    """How much routing weight changed experts: half the L1 distance per routing row, the largest row's.

    0 means the routing stayed where the router put it; 1 means all of one row's weight moved.
    """
    change = (routing.detach().double() - base.detach().double()).abs().sum(-1) / 2
    return float(change.max()) if change.numel() else 0.0
