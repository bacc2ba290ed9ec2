"""Mode finding (mean shift) in routing space: pull the routing toward the densest cluster of
reference routings near it. Needs no model call, so it is the cheapest non-trivial strategy.
"""
from __future__ import annotations

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.neighbours import NoUsableNeighbours, WeightedNeighbours, select_knn, weigh
from r2t2.routing.protocol import RoutedModel
from r2t2.routing.request import RerouteRequest
from r2t2.routing.result import RerouteResult
from r2t2.routing.simplex import confine, project_to_simplex
from r2t2.routing.strategies import TOOK_NO_STEPS, Needs, Record, Strategy, register, step_trace


def mean_shift(r0: Tensor, config: RerouteConfig, pool_routings: Tensor, movable: Tensor | None = None) -> RerouteResult:
    """Up to `config.steps` updates r <- a r + (1 - a) r_bar, r_bar the kernel-weighted mean of the k
    routings of `pool_routings` [N, L, E] nearest to r (a = `meanshift_alpha`, distances on the
    flattened [L * E] routings); stops once a step moves less than `meanshift_tol`.

    `losses` holds the distance moved per step; neighbour ids are pool row numbers from the last step.
    Raises NoUsableNeighbours for an empty pool or a zero-weight first step; a later zero-weight step
    stops early and keeps the routing reached so far. With `movable` ([L, E] bool) distances are measured
    on the movable entries only, and only those move.
    """
    if pool_routings.shape[0] == 0:
        raise NoUsableNeighbours("empty neighbourhood")
    pool = pool_routings.to(r0.dtype)
    if movable is not None:
        pool = torch.where(movable, pool, r0)  # entries that may not move sit at r0 for every pool row
    pool = pool.reshape(pool_routings.shape[0], r0.numel())
    current = r0.reshape(-1)
    moved: list[float] = []
    chosen: WeightedNeighbours | None = None
    fallback: str | None = None
    for _ in range(config.steps):
        try:
            chosen = weigh(current, pool, select_knn(current, pool, config.k), config.kernel, config.bandwidth)
        except NoUsableNeighbours as stop:
            if not moved:
                raise
            fallback = stop.reason
            break
        r_bar = confine((chosen.weights.to(pool.dtype) @ pool[chosen.indices]).reshape(r0.shape), r0, movable)
        updated = project_to_simplex(
            (config.meanshift_alpha * current + (1 - config.meanshift_alpha) * r_bar.reshape(-1)).reshape(r0.shape),
            movable).reshape(-1)
        moved.append(float((updated - current).norm()))
        current = updated
        if moved[-1] < config.meanshift_tol:
            break
    ids = [str(i) for i in range(pool.shape[0])]
    return RerouteResult(strategy="meanshift", base_routing=r0, routing=current.reshape(r0.shape),
                         neighbours=chosen.describe(ids) if chosen is not None else (), losses=tuple(moved),
                         bandwidth=chosen.bandwidth if chosen is not None else None, steps=len(moved),
                         fallback=fallback)


def _each(model: RoutedModel, requests: list[RerouteRequest]) -> list[RerouteResult]:
    """`mean_shift` per request (it makes no model call, so nothing is gained by batching); a pool that cannot
    steer keeps r0 with the reason in `fallback`."""
    results = []
    for request in requests:
        assert request.pool_routings is not None  # checked by reroute
        try:
            results.append(mean_shift(request.r0, request.config, request.pool_routings, request.movable))
        except NoUsableNeighbours as empty:
            results.append(RerouteResult(strategy="meanshift", base_routing=request.r0, routing=request.r0.clone(),
                                         fallback=empty.reason))
    return results


def _evidence(record: Record) -> str:
    steps = record.get("steps_taken")
    return f", toward the densest reference routings near it, in {steps} updates" if steps else ""


def _why_still(record: Record) -> str:
    return TOOK_NO_STEPS if record.get("steps_taken") == 0 else "the reference routings nearest to it are centred on it"


register(Strategy(
    name="meanshift", title="Mean shift",
    description="pull the routing toward the densest reference routings near it (mode finding)",
    needs=Needs.POOL, run=_each, record=step_trace("distance_moved"), evidence=_evidence, why_still=_why_still))
