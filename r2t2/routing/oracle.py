"""The oracle: re-route using the query's own label. Evaluation only: it reports the ceiling that a
strategy without labels could reach (the paper's upper bound), never a serving answer.
"""
from __future__ import annotations

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.descent import projected_adam
from r2t2.routing.neighbours import model_loss
from r2t2.routing.protocol import ReferenceBatch, RoutedModel
from r2t2.routing.request import Placement, RerouteRequest
from r2t2.routing.result import RerouteResult
from r2t2.routing.simplex import one_hot_starts
from r2t2.routing.strategies import Needs, Strategy, register, step_trace
from r2t2.routing.ties import first_lowest


def oracle(model: RoutedModel, r0: Tensor, config: RerouteConfig, target: ReferenceBatch,
           placement: Placement | None = None, movable: Tensor | None = None) -> RerouteResult:
    """Best routing for `target` (a batch of one): best of `one_hot_starts` (one batched call), then
    `oracle_steps` projected Adam steps (lr `oracle_lr` annealed to `lr_min`); returns the best seen.

    With a `placement`, `r0` is a block of the routing (routing/block.py) and `movable` its movable entries.
    """
    def loss(routings: Tensor) -> Tensor:
        """The target's loss under each of `routings` [S, L, E]."""
        if placement is None:
            return model.routing_loss(target[[0] * len(routings)], routings)
        full = placement.full(routings, torch.zeros(len(routings), dtype=torch.long))
        return model_loss(model, target[[0] * len(routings)], full, placement.block)

    def descent_loss(routing: Tensor, _: list[int]) -> Tensor:
        if placement is None:
            return model.routing_loss(target, routing[0]).sum().reshape(1)
        return loss(routing).sum().reshape(1)

    starts = one_hot_starts(r0, movable)
    with torch.no_grad():
        start_losses = loss(starts)
    if start_losses.shape != (starts.shape[0],):
        raise ValueError(f"routing_loss returned shape {tuple(start_losses.shape)} for {starts.shape[0]} "
                         f"routings; expected [{starts.shape[0]}]")
    finite = torch.isfinite(start_losses)
    if not finite.any():
        return RerouteResult(strategy="oracle", base_routing=r0, routing=r0.clone(),
                             fallback="non-finite target loss at every starting routing")
    start_index = first_lowest(start_losses)
    settings = torch.tensor([config.oracle_lr, config.lr_min], dtype=r0.dtype, device=r0.device)
    (descent,) = projected_adam(descent_loss, starts[start_index].unsqueeze(0),
                                config.oracle_steps, settings[:1], settings[1:],
                                None if movable is None else movable.unsqueeze(0))
    return RerouteResult(strategy="oracle", base_routing=r0, routing=descent.best, losses=descent.losses,
                         steps=descent.steps, fallback=descent.fallback)


def _each(model: RoutedModel, requests: list[RerouteRequest]) -> list[RerouteResult]:
    """`oracle` per request: each descends on its own target."""
    results = []
    for request in requests:
        assert request.target is not None  # checked by reroute
        results.append(oracle(model, request.r0, request.config, request.target, Placement.of([request]),
                              request.movable))
    return results


register(Strategy(
    name="oracle", title="The oracle",
    description="descent on the request's own answer loss, the ceiling for the others; needs the true answer",
    needs=Needs.LABEL, run=_each, served=False, record=step_trace("target_loss")))
