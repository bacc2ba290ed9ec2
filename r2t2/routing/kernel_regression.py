"""Kernel regression: borrow the neighbours' own routings instead of optimising through the model.

Plain regression (alpha = 0) needs no model call at all; the optional line search toward r0 spends a
few batched neighbour-loss evaluations to decide how far to trust the neighbours.
"""
from __future__ import annotations

import math
from collections.abc import Generator, Hashable, Sequence

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.guard import fits_at_base
from r2t2.routing.neighbours import NeighbourLosses, NoUsableNeighbours, WeightedNeighbours, weigh_neighbourhood
from r2t2.routing.protocol import RoutedModel
from r2t2.routing.request import Placement, RerouteRequest
from r2t2.routing.result import LineSearchPoint, RerouteResult
from r2t2.routing.simplex import confine
from r2t2.routing.strategies import Needs, Record, Strategy, register
from r2t2.routing.ties import first_lowest

_INVERSE_GOLDEN = (math.sqrt(5.0) - 1) / 2


def kernel_regression(model: RoutedModel, requests: Sequence[RerouteRequest]) -> list[RerouteResult]:
    """r_hat = sum_i K_i r_i / sum_i K_i, then alpha * r0 + (1 - alpha) * r_hat, per request.

    A request that may move only some entries takes r_hat on those (scaled to the mass r0 gives them).

    With `config.alpha` fixed that mix is returned directly. Otherwise alpha is searched on [0, 1]:
    both ends (plain regression, base routing) plus `line_search_steps` golden-section evaluations of
    the neighbour loss; the lowest-loss alpha wins. The searching requests (validated, all with the same
    `line_search_steps`) evaluate in lockstep: each round is one loss call per request still searching, over its
    own neighbours. An empty or weightless neighbourhood keeps r0 with the reason in `fallback`.
    """
    results: list[RerouteResult | None] = [None] * len(requests)
    searching: list[tuple[int, WeightedNeighbours, Tensor]] = []
    for i, request in enumerate(requests):
        assert request.neighbourhood is not None and request.query_embedding is not None  # checked by reroute
        try:
            chosen = weigh_neighbourhood(request.query_embedding, request.neighbourhood, request.config)
        except NoUsableNeighbours as empty:
            results[i] = RerouteResult(strategy="kernel", base_routing=request.r0, routing=request.r0.clone(),
                                       fallback=empty.reason)
            continue
        routings = request.neighbourhood.routings[chosen.indices].to(request.r0.dtype)
        r_hat = confine(torch.einsum("n,nle->le", chosen.weights.to(request.r0.dtype), routings), request.r0,
                        request.movable)
        alpha = request.config.alpha
        if alpha is None:
            searching.append((i, chosen, r_hat))
        else:
            results[i] = RerouteResult(strategy="kernel", base_routing=request.r0,
                                       routing=alpha * request.r0 + (1 - alpha) * r_hat,
                                       neighbours=chosen.describe(request.neighbourhood.ids), alpha=alpha,
                                       bandwidth=chosen.bandwidth)
    if searching:
        for (i, chosen, r_hat), points in zip(searching, _line_searches(model, requests, searching)):
            results[i] = _searched(requests[i], chosen, r_hat, points)
    return results  # type: ignore[return-value]  (every slot is filled above)


def _line_searches(model: RoutedModel, requests: Sequence[RerouteRequest],
                   searching: list[tuple[int, WeightedNeighbours, Tensor]]) -> list[list[LineSearchPoint]]:
    """Run every request's golden-section search in lockstep, one loss call per round for each request still
    searching. The first round evaluates r0 (alpha 1): a request the guard would keep at r0 stops there."""
    picked = [requests[i] for i, _, _ in searching]
    batches = [r.neighbourhood.batch[c.indices.tolist()] for r, (_, c, _) in zip(picked, searching)]
    losses = NeighbourLosses(model, batches, [c.weights for _, c, _ in searching], Placement.of(picked))
    r0 = torch.stack([r.r0 for r in picked])
    r_hat = torch.stack([h for _, _, h in searching])
    searches = [_golden_section(r.config.line_search_steps) for r in picked]
    alphas: list[float | None] = [next(search) for search in searches]
    points: list[list[LineSearchPoint]] = [[] for _ in picked]
    while True:
        live = [q for q, alpha in enumerate(alphas) if alpha is not None]
        if not live:
            return points
        mix = torch.tensor([1.0 if alpha is None else alpha for alpha in alphas], dtype=r0.dtype,
                           device=r0.device).view(-1, 1, 1)
        with torch.no_grad():
            values = losses(mix * r0 + (1 - mix) * r_hat, live).tolist()
        for q in live:
            alpha, value = alphas[q], values[q]
            points[q].append(LineSearchPoint(alpha=alpha, loss=value))
            settled = alpha == 1.0 and len(points[q]) == 1 and fits_at_base(picked[q].config, value)
            alphas[q] = None if settled else searches[q].send(value if math.isfinite(value) else math.inf)


def _searched(request: RerouteRequest, chosen: WeightedNeighbours, r_hat: Tensor,
              evaluated: list[LineSearchPoint]) -> RerouteResult:
    """The result of one request's line search: the lowest finite loss wins."""
    r0, neighbours = request.r0, chosen.describe(request.neighbourhood.ids)
    finite = [p for p in evaluated if math.isfinite(p.loss)]
    if not finite:
        return RerouteResult(strategy="kernel", base_routing=r0, routing=r0.clone(), neighbours=neighbours,
                             line_search=tuple(evaluated), bandwidth=chosen.bandwidth, steps=len(evaluated),
                             fallback="non-finite neighbour loss at every alpha")
    nearest_r0_first = sorted(finite, key=lambda p: -p.alpha)  # on a near-tie, the mix nearest r0 wins
    best = nearest_r0_first[first_lowest([p.loss for p in nearest_r0_first])]
    return RerouteResult(strategy="kernel", base_routing=r0, routing=best.alpha * r0 + (1 - best.alpha) * r_hat,
                         neighbours=neighbours, alpha=best.alpha, line_search=tuple(evaluated),
                         bandwidth=chosen.bandwidth, steps=len(evaluated),
                         settled_at_base=len(evaluated) == 1 and fits_at_base(request.config, evaluated[0].loss))


def _golden_section(evaluations: int) -> Generator[float | None, float, None]:
    """Yields the alphas to evaluate (both ends of [0, 1], r0's first, then `evaluations` golden-section points),
    receiving each one's loss; yields None once done."""
    yield 1.0
    yield 0.0
    low, high = 0.0, 1.0
    left, right = high - _INVERSE_GOLDEN * (high - low), low + _INVERSE_GOLDEN * (high - low)
    left_loss = yield left
    right_loss = yield right
    for _ in range(evaluations - 2):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - _INVERSE_GOLDEN * (high - low)
            left_loss = yield left
        else:
            low, left, left_loss = left, right, right_loss
            right = low + _INVERSE_GOLDEN * (high - low)
            right_loss = yield right
    yield None


def _group(config: RerouteConfig) -> Hashable:
    """Searches run in lockstep when they make the same number of evaluations; a fixed alpha makes none."""
    return None if config.alpha is not None else config.line_search_steps


def _losses_seen(result: RerouteResult) -> tuple[float, float] | None:
    """The line search's points at alpha 1 (r0) and at the alpha it chose, when it evaluated both."""
    at = {point.alpha: point.loss for point in result.line_search}
    return (at[1.0], at[result.alpha]) if 1.0 in at and result.alpha in at else None


def _record(result: RerouteResult) -> Record:
    """How far toward the neighbours' routing it went (1 - alpha; none when the guard kept r0, even before any
    search), and each mix the line search tried."""
    kept = result.guard is not None and result.guard.fired
    return {"toward_neighbours": 0.0 if kept else None if result.alpha is None else 1.0 - result.alpha,
            "line_search": [{"toward_neighbours": 1.0 - p.alpha, "neighbour_loss": p.loss} for p in result.line_search]}


def _evidence(record: Record) -> str:
    toward = record.get("toward_neighbours")
    return "" if toward is None else f", {toward:.2f} of the way to the neighbours' weighted routing"


def _why_still(record: Record) -> str:
    if record.get("toward_neighbours") == 0:
        return "the line search found the neighbours' loss lowest at the router's own routing"
    return "the neighbours' weighted routing is the router's own"


register(Strategy(
    name="kernel", title="Kernel regression",
    description="the neighbours' kernel-weighted routing, with a line search toward the router's",
    needs=Needs.NEIGHBOURS, run=kernel_regression, guarded=True, group=_group, losses_seen=_losses_seen,
    record=_record, evidence=_evidence, why_still=_why_still))
