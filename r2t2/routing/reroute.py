"""One entry point for every strategy: checks the inputs a strategy needs, runs it, times it.

What a strategy needs, how its requests group and whether the evidence guard applies are its registry
entry's (routing/strategies.py). `reroute_many` takes the requests of a batch: requests of one strategy and
one group (e.g. NGD's step count) run together, in lockstep, each with its own settings, its own model calls and
its own results, the same as alone (docs/method.md, batch invariance). `reroute` is the same path with one request. A request whose `target` is only
part of the model's routing (routing/block.py) is re-routed within that block and placed back into its full
base routing. Every tensor handed to a strategy is detached and in r0's dtype, so no strategy can reach the
graph of whatever produced its inputs; the model itself is only ever called, never modified.
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from r2t2.routing.block import block_for
from r2t2.routing.config import RerouteConfig
from r2t2.routing.guard import GuardSettings, decided_without_loss, judge, neighbour_spread, router_shift
from r2t2.routing.layout import RoutingLayout, vision_layout
from r2t2.routing.neighbours import NoUsableNeighbours, WeightedNeighbours, losses_under, weigh_neighbourhood
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch, RoutedModel, is_valid_routing
from r2t2.routing.request import Placement, RerouteRequest
from r2t2.routing.result import RerouteResult
from r2t2.routing.strategies import Needs, strategy


def reroute(model: RoutedModel, r0: Tensor, config: RerouteConfig, *, query_embedding: Tensor | None = None,
            neighbourhood: Neighbourhood | None = None, pool_routings: Tensor | None = None,
            target: ReferenceBatch | None = None) -> RerouteResult:
    """Re-route one request with `config.strategy` (see `RerouteRequest` for the inputs each needs)."""
    request = RerouteRequest(r0, config, query_embedding, neighbourhood, pool_routings, target)
    return reroute_many(model, [request])[0]


def reroute_many(model: RoutedModel, requests: Sequence[RerouteRequest]) -> list[RerouteResult]:
    """Re-route each request with its own `config`; results in request order.

    Raises ValueError on a missing input or a shape/validity mismatch in any request (before any model
    work). A neighbourhood that cannot steer (empty, zero kernel weight) and a numeric blow-up inside a
    strategy are not errors: that request keeps r0 (or its last finite iterate) and says why in
    `fallback`. `seconds` is the wall time of the group the request ran in.
    """
    if not isinstance(model, RoutedModel):
        raise ValueError(f"model must implement RoutedModel (routing_shape, base_routing, routing_loss), "
                         f"got {type(model).__name__}")
    layout = routing_layout(model)
    checked = [_checked_request(model, request) for request in requests]
    # `both` on a model with vision and LM rows runs in two stages: the vision rows first, then the LM rows from
    # the routing the first stage left (each judged by the guard on its own), so that an LM move is kept only
    # when it helps beyond what moving the vision rows did.
    staged = [i for i, request in enumerate(checked) if _two_stages(request.config, layout)]
    results = _run(model, [_in_block(_with_target(request, "vision") if i in staged else request, layout)
                           for i, request in enumerate(checked)])
    if staged:
        second = [_in_block(_with_target(dataclasses.replace(checked[i], r0=results[i].routing), "lm"), layout)
                  for i in staged]
        for i, lm in zip(staged, _run(model, second)):
            results[i] = dataclasses.replace(results[i], routing=lm.routing, seconds=results[i].seconds + lm.seconds,
                                             lm_stage=dataclasses.replace(lm, base_routing=results[i].routing))
    return results


def decide_before_steps(model: RoutedModel, requests: Sequence[RerouteRequest]) -> list[RerouteResult | None]:
    """What `reroute_many` would return for each request that the evidence guard decides from its neighbours alone,
    before any model call (None for the others: their strategy must run, and a request with a bad input raises
    there). Lets a server answer those requests while the others of their batch are re-routed."""
    layout = routing_layout(model)
    decided: list[RerouteResult | None] = []
    for request in requests:
        try:
            checked = _checked_request(model, request)
        except ValueError:
            decided.append(None)
            continue
        guarded = strategy(checked.config.strategy).guarded and not _two_stages(checked.config, layout)
        decided.append(_kept_before_steps(_in_block(checked, layout)) if guarded else None)
    return decided


def _two_stages(config: RerouteConfig, layout: RoutingLayout) -> bool:
    return config.target == "both" and layout.has("vision") and layout.has("lm")


def _with_target(request: RerouteRequest, target: str) -> RerouteRequest:
    """The request as one stage of a two-stage `both`: the LM stage runs the request's `lm_strategy`, if set."""
    config = request.config
    stage = config.replace(target=target, lm_strategy=None) if target == "vision" else \
        config.replace(target=target, strategy=config.lm_stage_strategy, lm_strategy=None)
    return dataclasses.replace(request, config=stage)


def _run(model: RoutedModel, checked: list[RerouteRequest]) -> list[RerouteResult]:
    """Run checked requests (each within its block): first what the guard decides from the neighbours alone, then a
    group per strategy, strategy group and block."""
    results: list[RerouteResult | None] = [None] * len(checked)
    for i, request in enumerate(checked):
        if strategy(request.config.strategy).guarded:
            results[i] = _kept_before_steps(request)
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, request in enumerate(checked):
        if results[i] is not None:
            continue
        config = request.config
        block = None if request.block is None else request.block.group_key()
        groups[(config.strategy, strategy(config.strategy).group(config), block)].append(i)
    for members in groups.values():
        entry = strategy(checked[members[0]].config.strategy)
        started = time.perf_counter()
        done = entry.run(model, [checked[i] for i in members])
        seconds = time.perf_counter() - started
        for i, result in zip(members, done):
            routing = result.routing.detach()
            if not is_valid_routing(routing):
                raise RuntimeError(f"strategy {result.strategy!r} produced an invalid routing")  # a bug, not input
            result = dataclasses.replace(result, routing=routing, seconds=seconds)
            # The evidence guard, per request after its strategy ran: keeps r0 unless the neighbours support the move.
            if checked[i].config.guard and entry.guarded and result.fallback is None:
                result = guarded(model, checked[i], result)
            results[i] = _placed(result, checked[i])
    return results  # type: ignore[return-value]  (every slot is filled above)


def routing_layout(model: RoutedModel) -> RoutingLayout:
    """The model's `routing_layout`, or, for a model that has none, vision rows over the same experts."""
    layout = getattr(model, "routing_layout", None)
    if layout is not None:
        return layout
    layers, experts = model.routing_shape
    return vision_layout([str(i) for i in range(layers)], [str(e) for e in range(experts)])


def _in_block(request: RerouteRequest, layout: RoutingLayout) -> RerouteRequest:
    """The request within the block its target re-routes (itself when that is the whole routing)."""
    config = request.config
    block = block_for(layout, config.target, request.r0, config.core_experts, config.lm_positions, config.lm_layers)
    if block is None:
        return request
    hood = request.neighbourhood
    return RerouteRequest(
        block.take(request.r0), config, query_embedding=request.query_embedding,
        neighbourhood=None if hood is None else dataclasses.replace(hood, routings=block.take(hood.routings)),
        pool_routings=None if request.pool_routings is None else block.take(request.pool_routings),
        target=request.target, block=block, base=request.r0)


def _placed(result: RerouteResult, request: RerouteRequest) -> RerouteResult:
    """A block request's result in full routings (the routing outside the block is the base's)."""
    if request.block is None:
        return result
    assert request.base is not None  # set by _in_block
    return dataclasses.replace(result, base_routing=request.base,
                               routing=request.block.place(result.routing, request.base))


def _guard_evidence(request: RerouteRequest) -> tuple[WeightedNeighbours, Tensor]:
    """The weighted neighbours the request's strategy uses, and their routings on the entries it may move (only
    those are evidence of a consensus)."""
    chosen = weigh_neighbourhood(request.query_embedding, request.neighbourhood, request.config)
    neighbour_routings = request.neighbourhood.routings[chosen.indices]
    if request.movable is not None:
        neighbour_routings = torch.where(request.movable, neighbour_routings, 0.0)
    return chosen, neighbour_routings


def _kept_before_steps(request: RerouteRequest) -> RerouteResult | None:
    """r0, when the guard is on and the neighbours' routings disagree or agree with r0 (None: the strategy runs). A
    neighbourhood that cannot steer is left to the strategy, which reports it as its fallback."""
    if not request.config.guard:
        return None
    try:
        chosen, neighbour_routings = _guard_evidence(request)
    except NoUsableNeighbours:
        return None
    r0 = request.r0 if request.movable is None else torch.where(request.movable, request.r0, 0.0)
    verdict = decided_without_loss(neighbour_spread(chosen.weights, neighbour_routings),
                                   router_shift(chosen.weights, neighbour_routings, r0), request.config)
    if verdict is None:
        return None
    return _placed(RerouteResult(strategy=request.config.strategy, base_routing=request.r0, routing=request.r0.clone(),
                                 neighbours=chosen.describe(request.neighbourhood.ids), bandwidth=chosen.bandwidth,
                                 guard=verdict), request)


def guarded(model: RoutedModel, request: RerouteRequest, result: RerouteResult) -> RerouteResult:
    """`result` judged by the guard from the request's weighted neighbours; r0 back when the guard fires."""
    config = request.config
    chosen, neighbour_routings = _guard_evidence(request)
    known = strategy(result.strategy).losses_seen(result)
    if known is not None:  # the strategy already evaluated the neighbour loss at r0 and at its routing
        def losses(_: Tensor) -> Tensor:
            return torch.tensor(known, dtype=request.r0.dtype)
    else:
        def losses(routings: Tensor) -> Tensor:
            return losses_under(model, request.neighbourhood.batch[chosen.indices.tolist()], chosen.weights, routings,
                                Placement.of([request]))
    verdict = judge(request.r0, result.routing, chosen.weights, neighbour_routings, losses, GuardSettings.of(config))
    if result.settled_at_base:
        verdict = dataclasses.replace(verdict, before_steps=True)
    if not verdict.fired:
        return dataclasses.replace(result, guard=verdict)
    # The router's routing is what the answer uses: a kernel result says so (alpha 1, toward the neighbours 0),
    # so `toward_neighbours` and `moved` describe the same routing; its line search still lists what it tried.
    alpha = None if result.alpha is None else 1.0
    return dataclasses.replace(result, routing=request.r0.clone(), guard=verdict, alpha=alpha)


def _checked_request(model: RoutedModel, request: RerouteRequest) -> RerouteRequest:
    """The request with r0 and exactly the inputs its strategies need (both stages' for a two-stage `both`)."""
    config = request.config
    if not isinstance(config, RerouteConfig):
        raise ValueError(f"config must be a RerouteConfig, got {type(config).__name__}")
    checked = RerouteRequest(_checked_routing(request.r0, tuple(model.routing_shape)), config)
    for name in config.strategies:
        checked = _with_inputs(checked, request, name)
    return checked


def _with_inputs(checked: RerouteRequest, request: RerouteRequest, name: str) -> RerouteRequest:
    """`checked` with the inputs strategy `name` needs, taken from `request` and checked."""
    needs, r0 = strategy(name).needs, checked.r0
    if needs in (Needs.NEIGHBOURS, Needs.NEIGHBOUR_ANSWERS):
        query, hood = _checked_neighbourhood(request.query_embedding, request.neighbourhood, r0, name)
        checked = dataclasses.replace(checked, query_embedding=query, neighbourhood=hood)
    if needs is Needs.NEIGHBOUR_ANSWERS:
        if not isinstance(request.target, ReferenceBatch) or len(request.target) == 0:
            raise ValueError(f"strategy {name!r} needs target: the request labelled with each answer its "
                             f"neighbours give (a batch of one or more)")
        checked = dataclasses.replace(checked, target=request.target)
    if needs is Needs.POOL:
        checked = dataclasses.replace(checked, pool_routings=_checked_pool(request.pool_routings, r0, name))
    if needs is Needs.LABEL:
        checked = dataclasses.replace(checked, target=_checked_target(request.target, name))
    return checked


def _checked_routing(r0: Any, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(r0, Tensor) or not r0.is_floating_point():
        raise ValueError(f"r0 must be a floating-point tensor, got {type(r0).__name__}"
                         + (f" of dtype {r0.dtype}" if isinstance(r0, Tensor) else ""))
    if tuple(r0.shape) != shape:
        raise ValueError(f"r0 must have the model's routing shape {list(shape)}, got {list(r0.shape)}")
    if not is_valid_routing(r0):
        raise ValueError("r0 is not a valid routing: every row must be finite, non-negative and sum to 1")
    return r0.detach().clone()


def _checked_neighbourhood(query_embedding: Tensor | None, neighbourhood: Neighbourhood | None, r0: Tensor,
                           name: str) -> tuple[Tensor, Neighbourhood]:
    if query_embedding is None or neighbourhood is None:
        raise ValueError(f"strategy {name!r} needs query_embedding and neighbourhood")
    if not isinstance(neighbourhood, Neighbourhood):
        raise ValueError(f"neighbourhood must be a Neighbourhood, got {type(neighbourhood).__name__}")
    embeddings = neighbourhood.embeddings
    if not isinstance(query_embedding, Tensor) or query_embedding.ndim != 1:
        raise ValueError(f"query_embedding must be a 1-D tensor [D], got "
                         f"{list(query_embedding.shape) if isinstance(query_embedding, Tensor) else query_embedding!r}")
    if query_embedding.shape[0] != embeddings.shape[1]:
        raise ValueError(f"query_embedding has dimension {query_embedding.shape[0]} but the neighbourhood's "
                         f"embeddings have {embeddings.shape[1]}")
    if not embeddings.is_floating_point():
        raise ValueError(f"neighbourhood embeddings must be floating-point, got {embeddings.dtype}")
    if not torch.isfinite(query_embedding).all() or not torch.isfinite(embeddings).all():
        raise ValueError("query_embedding and neighbourhood embeddings must be finite")
    routings = neighbourhood.routings
    if tuple(routings.shape[1:]) != tuple(r0.shape):
        raise ValueError(f"neighbourhood routings must be [n, {r0.shape[0]}, {r0.shape[1]}], "
                         f"got {list(routings.shape)}")
    if routings.shape[0] and not is_valid_routing(routings):
        raise ValueError("neighbourhood routings must be valid (finite, non-negative rows summing to 1)")
    checked = Neighbourhood(ids=neighbourhood.ids, embeddings=embeddings.detach(),
                            routings=routings.detach().to(r0.dtype), batch=neighbourhood.batch)
    return query_embedding.detach().to(embeddings.dtype), checked


def _checked_pool(pool_routings: Tensor | None, r0: Tensor, name: str) -> Tensor:
    if pool_routings is None:
        raise ValueError(f"strategy {name!r} needs pool_routings [N, L, E]")
    if not isinstance(pool_routings, Tensor) or pool_routings.ndim != 3 \
            or tuple(pool_routings.shape[1:]) != tuple(r0.shape):
        shape = list(pool_routings.shape) if isinstance(pool_routings, Tensor) else type(pool_routings).__name__
        raise ValueError(f"pool_routings must be [N, {r0.shape[0]}, {r0.shape[1]}], got {shape}")
    if pool_routings.shape[0] and not is_valid_routing(pool_routings):
        raise ValueError("pool_routings must be valid (finite, non-negative rows summing to 1)")
    return pool_routings.detach().to(r0.dtype)


def _checked_target(target: ReferenceBatch | None, name: str) -> ReferenceBatch:
    if target is None:
        raise ValueError(f"strategy {name!r} needs target (the query with its label, a batch of one)")
    if not isinstance(target, ReferenceBatch) or len(target) != 1:
        raise ValueError(f"target must be a ReferenceBatch of exactly one sample, got "
                         f"{len(target) if isinstance(target, ReferenceBatch) else type(target).__name__}")
    return target
