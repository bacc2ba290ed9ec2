"""Choosing and weighting the neighbours a strategy learns from, and the neighbour loss they define.

Selection works on whatever vectors it is given: question embeddings for NGD and kernel regression,
flattened routings for mean shift. Candidates come from an index search; selection here is exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.routing.block import RoutingBlock
from r2t2.routing.config import RerouteConfig
from r2t2.routing.kernels import distances, kernel_function, median_bandwidth
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch, RoutedModel
from r2t2.routing.request import Placement
from r2t2.routing.result import Neighbour


class NoUsableNeighbours(Exception):
    """No neighbour can steer this request; strategies raise it and the dispatcher keeps the base routing.

    Not an error of the caller: an empty epsilon-ball or a kernel that gives every neighbour zero weight
    are legitimate outcomes, reported as the result's `fallback`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Selection:
    """Chosen candidates, nearest first."""

    indices: Tensor  # [m] long, positions among the candidates
    distances: Tensor  # [m] Euclidean distances to the query


@dataclass(frozen=True)
class WeightedNeighbours:
    """A non-empty selection with kernel weights normalised to sum to one."""

    indices: Tensor  # [m] long
    distances: Tensor  # [m]
    weights: Tensor  # [m], non-negative, sum 1
    bandwidth: float

    def describe(self, ids: Sequence[str]) -> tuple[Neighbour, ...]:
        """Per-neighbour records for the result, `ids` naming all candidates."""
        return tuple(
            Neighbour(id=str(ids[i]), weight=float(w), distance=float(d))
            for i, w, d in zip(self.indices.tolist(), self.weights, self.distances)
        )


def select_knn(query: Tensor, points: Tensor, k: int) -> Selection:
    """The k nearest rows of `points` (all of them when fewer than k); ties go to the lower index."""
    dist = distances(query, points)
    order = torch.sort(dist, stable=True).indices[:k]
    return Selection(indices=order, distances=dist[order])


def select_epsilon(query: Tensor, points: Tensor, epsilon: float) -> Selection:
    """Every row of `points` within distance `epsilon` (inclusive), nearest first; may be empty."""
    dist = distances(query, points)
    order = torch.sort(dist, stable=True).indices
    order = order[dist[order] <= epsilon]
    return Selection(indices=order, distances=dist[order])


def select(query: Tensor, points: Tensor, config: RerouteConfig) -> Selection:
    """The neighbourhood `config` asks for (kNN with k, or the epsilon-ball)."""
    if config.neighbourhood == "epsilon":
        assert config.epsilon is not None  # guaranteed by RerouteConfig
        return select_epsilon(query, points, config.epsilon)
    return select_knn(query, points, config.k)


def weigh(query: Tensor, points: Tensor, selection: Selection, kernel: str,
          bandwidth: float | None) -> WeightedNeighbours:
    """Kernel weights of the selected rows, normalised; raises NoUsableNeighbours when none can count.

    `bandwidth` None applies the median heuristic to the selected distances.
    """
    if selection.indices.numel() == 0:
        raise NoUsableNeighbours("empty neighbourhood")
    h = median_bandwidth(selection.distances) if bandwidth is None else bandwidth
    raw = kernel_function(kernel)(query, points[selection.indices], h)
    mass = raw.sum()
    if not torch.isfinite(mass) or mass <= 0:
        raise NoUsableNeighbours(f"{kernel} kernel gave the neighbours a total weight of {float(mass)}")
    return WeightedNeighbours(indices=selection.indices, distances=selection.distances,
                              weights=raw / mass, bandwidth=h)


def weigh_neighbourhood(query: Tensor, neighbourhood: Neighbourhood, config: RerouteConfig) -> WeightedNeighbours:
    """Select (kNN or epsilon-ball) and weigh the candidates by question-embedding distance."""
    embeddings = neighbourhood.embeddings
    return weigh(query, embeddings, select(query, embeddings, config), config.kernel, config.bandwidth)


class NeighbourLosses:
    """The weighted neighbours of Q queries, and their kernel-weighted neighbour loss under Q routings.

    Each query's neighbours are evaluated in a model call of their own, whatever other queries share the
    group: a batched model call's float results depend on the batch's size and padding, so joining the
    queries would make a request's routing depend on which requests share its batch (docs/method.md, batch
    invariance). Each query's batch is kept, so whatever the model caches on it (e.g. prefix keys/values) is
    reused at every step. With a `placement` the routings are blocks (routing/block.py), placed into each
    query's full base routing before the model sees them.
    """

    def __init__(self, model: RoutedModel, batches: Sequence[ReferenceBatch], weights: Sequence[Tensor],
                 placement: Placement | None = None) -> None:
        if not batches or len(batches) != len(weights):
            raise ValueError(f"need one weight vector per batch, got {len(batches)} batches, {len(weights)} weights")
        self.model = model
        self.placement = placement
        self.batches = list(batches)
        self.weights = [w.detach() for w in weights]

    def __call__(self, routings: Tensor, live: Sequence[int] | None = None) -> Tensor:
        """[Q] losses, query q's neighbours answered under `routings[q]` ([Q, L, E]).

        `live` (None: every query) names the queries whose losses are wanted; the others' entries are 0 and
        cost no model call.
        """
        wanted = range(len(self.batches)) if live is None else live
        if self.placement is not None:
            routings = self.placement.full(routings)
        block = None if self.placement is None else self.placement.block
        losses = [torch.zeros((), dtype=routings.dtype, device=routings.device)] * routings.shape[0]
        for q in wanted:
            batch = self.batches[q]
            each = _checked(model_loss(self.model, batch, routings[q].expand(len(batch), *routings.shape[1:]),
                                       block), len(batch))
            weights = self.weights[q].to(device=each.device, dtype=each.dtype)
            losses[q] = (weights * each).sum()
        return torch.stack(losses)


def losses_under(model: RoutedModel, batch: ReferenceBatch, weights: Tensor, routings: Tensor,
                 placement: Placement | None = None) -> Tensor:
    """[C] one request's kernel-weighted neighbour loss under each of `routings` [C, L, E] (blocks placed by the
    request's own `placement`), in one model call over its neighbours repeated per routing: it depends on that
    request alone, so several candidate routings cost one call without mixing requests."""
    count, size = routings.shape[0], len(batch)
    if placement is not None:
        routings = placement.full(routings, torch.zeros(count, dtype=torch.long))
    block = None if placement is None else placement.block
    losses = _checked(model_loss(model, batch[list(range(size)) * count], routings.repeat_interleave(size, dim=0),
                                 block), count * size)
    return (losses.view(count, size) * weights.to(device=losses.device, dtype=losses.dtype)).sum(-1)


def model_loss(model: RoutedModel, batch: ReferenceBatch, routing: Tensor, block: RoutingBlock | None) -> Tensor:
    """`model.routing_loss`, told which rows to apply and where when the request's `block` says (a model without
    LM rows is never told, so its `routing_loss` needs no `pinned` or `lm_positions` parameter)."""
    if block is None or block.pinned is None:
        return model.routing_loss(batch, routing)
    return model.routing_loss(batch, routing, pinned=block.pinned, lm_positions=block.lm_positions)


def _checked(losses: Tensor, samples: int) -> Tensor:
    if tuple(losses.shape) != (samples,):
        raise ValueError(f"routing_loss returned shape {tuple(losses.shape)} for a batch of {samples} samples; "
                         f"expected [{samples}]")
    return losses
