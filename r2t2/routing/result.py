"""What a re-routing call returns: the new routing and the evidence behind it, JSON-ready for the HTTP layer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


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
    `losses` is strategy-specific: neighbour loss per NGD step plus the final one, the query's own loss
    for the oracle, distance moved per mean-shift step; kernel regression keeps its evaluations in
    `line_search` instead.
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

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values only (lists, floats, strings, None), safe for json.dumps."""
        return {
            "strategy": self.strategy,
            "base_routing": self.base_routing.detach().cpu().tolist(),
            "routing": self.routing.detach().cpu().tolist(),
            "neighbours": [{"id": n.id, "weight": n.weight, "distance": n.distance} for n in self.neighbours],
            "losses": list(self.losses),
            "alpha": self.alpha,
            "line_search": [{"alpha": p.alpha, "loss": p.loss} for p in self.line_search],
            "bandwidth": self.bandwidth,
            "steps": self.steps,
            "fallback": self.fallback,
            "seconds": self.seconds,
        }
