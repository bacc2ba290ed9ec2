"""Neighbourhood gradient descent (NGD), the paper's best strategy.

Moves the routing down the kernel-weighted loss of the query's neighbours: the routing that answers
similar reference questions correctly is likely to answer this one too.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.descent import projected_adam
from r2t2.routing.guard import fits_at_base
from r2t2.routing.neighbours import (NeighbourLosses, NoUsableNeighbours, WeightedNeighbours, losses_under,
                                     weigh_neighbourhood)
from r2t2.routing.protocol import RoutedModel
from r2t2.routing.request import Placement, RerouteRequest, stacked_movable
from r2t2.routing.result import RerouteResult
from r2t2.routing.simplex import one_hot_starts
from r2t2.routing.strategies import TOOK_NO_STEPS, Needs, Record, Strategy, register, step_trace
from r2t2.routing.ties import first_lowest


def neighbourhood_gradient_descent(model: RoutedModel, requests: Sequence[RerouteRequest]) -> list[RerouteResult]:
    """Up to `config.steps` projected Adam steps on L(r) = sum_i K_i l_i(r) / sum_i K_i from r0 (or, with
    `ngd_start` "vertices", from the best of r0 and its one-hot vertices), per request; a request stops early
    once a step would move its routing by less than `config.ngd_tol`.

    The requests (validated, all with the same `steps`) descend together: each step is one loss call per
    request over its own neighbours and one backward. Each returns its final iterate (not the best
    one: the neighbour loss is only a proxy for the query's). A request whose neighbourhood is empty or
    carries no kernel weight keeps r0 with the reason in `fallback`.
    """
    results: list[RerouteResult | None] = [None] * len(requests)
    moving, chosen = [], []
    for i, request in enumerate(requests):
        assert request.neighbourhood is not None and request.query_embedding is not None  # checked by reroute
        try:
            chosen.append(weigh_neighbourhood(request.query_embedding, request.neighbourhood, request.config))
            moving.append(i)
        except NoUsableNeighbours as empty:
            results[i] = RerouteResult(strategy="ngd", base_routing=request.r0, routing=request.r0.clone(),
                                       fallback=empty.reason)
    if moving:
        picked = [requests[i] for i in moving]
        losses = NeighbourLosses(model, [r.neighbourhood.batch[c.indices.tolist()] for r, c in zip(picked, chosen)],
                                 [c.weights for c in chosen], Placement.of(picked))
        starts, r0_losses = _starts(model, picked, chosen)
        settings = torch.tensor([[r.config.lr, r.config.lr_min, r.config.ngd_tol] for r in picked],
                                dtype=starts.dtype, device=starts.device)

        def settles(q: int, loss: float) -> bool:  # a descent from r0 whose loss there the guard accepts
            return r0_losses[q] is None and fits_at_base(picked[q].config, loss)

        descents = projected_adam(losses, starts, picked[0].config.steps, settings[:, 0], settings[:, 1],
                                  stacked_movable(picked), tolerance=settings[:, 2], settles_at_start=settles)
        for q, (i, request, weighted, descent, r0_loss) in enumerate(zip(moving, picked, chosen, descents, r0_losses)):
            # The trace starts at r0's loss: when the descent started elsewhere, r0's comes first.
            trace = descent.losses if r0_loss is None else (r0_loss, *descent.losses)
            results[i] = RerouteResult(strategy="ngd", base_routing=request.r0, routing=descent.final,
                                       neighbours=weighted.describe(request.neighbourhood.ids),
                                       losses=trace, bandwidth=weighted.bandwidth, steps=descent.steps,
                                       fallback=descent.fallback,
                                       settled_at_base=len(trace) == 1 and settles(q, trace[0]))
    return results  # type: ignore[return-value]  (every slot is filled above)


def _starts(model: RoutedModel, requests: Sequence[RerouteRequest],
            chosen: Sequence[WeightedNeighbours]) -> tuple[Tensor, list[float | None]]:
    """[Q, L, E] where each request descends from, and r0's neighbour loss where that is not r0 (else None).

    A request with `ngd_start` "vertices" starts from the lowest-loss of r0 and its one-hot vertices (one
    no-grad call over its own neighbours, repeated for each candidate); the others start from r0.
    """
    starts = [r.r0 for r in requests]
    r0_losses: list[float | None] = [None] * len(requests)
    for q, request in enumerate(requests):
        if request.config.ngd_start != "vertices":
            continue
        candidates = one_hot_starts(request.r0, request.movable)
        with torch.no_grad():
            values = losses_under(model, request.neighbourhood.batch[chosen[q].indices.tolist()], chosen[q].weights,
                                  candidates, Placement.of([request])).nan_to_num(torch.inf)
        best = first_lowest(values)
        if best != 0:  # candidate 0 is r0
            starts[q], r0_losses[q] = candidates[best], float(values[0])
    return torch.stack(starts), r0_losses


def _losses_seen(result: RerouteResult) -> tuple[float, float] | None:
    """A descent from r0 that ran to its end or settled starts with r0's loss and ends with its final routing's
    (one that started at a vertex has r0's loss before its own steps + 1)."""
    return (result.losses[0], result.losses[-1]) if len(result.losses) in (result.steps + 1, result.steps + 2) \
        else None


def _evidence(record: Record) -> str:
    losses = record.get("neighbour_loss")
    if not losses:
        return ""
    return (f": in {record.get('steps_taken', len(losses) - 1)} steps the neighbours' answer loss went from "
            f"{losses[0]:.3f} to {losses[-1]:.3f}")


def _why_still(record: Record) -> str:
    return TOOK_NO_STEPS if record.get("steps_taken") == 0 else "the neighbours' loss has no slope there"


def _by_steps(config: RerouteConfig) -> int:
    """Requests descend together when they take the same number of steps."""
    return config.steps


register(Strategy(
    name="ngd", title="NGD", description="gradient descent on the neighbours' answer loss, from the router's routing",
    needs=Needs.NEIGHBOURS, run=neighbourhood_gradient_descent, guarded=True, group=_by_steps,
    losses_seen=_losses_seen, record=step_trace("neighbour_loss"), evidence=_evidence, why_still=_why_still))
