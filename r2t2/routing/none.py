"""The baseline: answer with the router's own routing. Every other strategy is measured against it."""
from __future__ import annotations

from r2t2.routing.protocol import RoutedModel
from r2t2.routing.request import RerouteRequest
from r2t2.routing.result import RerouteResult
from r2t2.routing.strategies import Needs, Strategy, register


def keep(model: RoutedModel, requests: list[RerouteRequest]) -> list[RerouteResult]:
    """r0 for every request: no model call, no neighbour."""
    return [RerouteResult(strategy="none", base_routing=r.r0, routing=r.r0.clone()) for r in requests]


register(Strategy(name="none", title="No re-routing", description="the router's own routing, unchanged",
                  needs=Needs.NOTHING, run=keep, baseline=True))
