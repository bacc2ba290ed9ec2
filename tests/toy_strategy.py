"""A strategy defined outside r2t2 and added through the registry alone: half-way from the router's routing to
the uniform one. It needs nothing (no index, no label), so any pipeline can run it. Tests import this module; a
server imports it by naming it in its config's `strategies` (with tests/ on PYTHONPATH)."""
from __future__ import annotations

import torch

from r2t2.routing import Needs, RerouteRequest, RerouteResult, RoutedModel, Strategy, register
from r2t2.routing.simplex import confine

NAME = "halfway"


def halfway(model: RoutedModel, requests: list[RerouteRequest]) -> list[RerouteResult]:
    """Each request's r0 mixed half and half with the uniform routing over the experts it may move."""
    results = []
    for request in requests:
        r0 = request.r0
        uniform = confine(torch.full_like(r0, 1 / r0.shape[-1]), r0, request.movable)
        results.append(RerouteResult(strategy=NAME, base_routing=r0, routing=(r0 + uniform) / 2))
    return results


register(Strategy(name=NAME, title="Half-way", description="half-way between the router's routing and the uniform one",
                  needs=Needs.NOTHING, run=halfway))
