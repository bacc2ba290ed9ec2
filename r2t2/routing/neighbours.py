"""Choosing and weighting the neighbours a strategy learns from, and the neighbour loss they define.

Selection works on whatever vectors it is given: question embeddings for NGD and kernel regression,
flattened routings for mean shift. Candidates come from an index search; selection here is exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.kernels import distances, kernel_function, median_bandwidth
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch, RoutedModel
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


def neighbour_loss(model: RoutedModel, batch: ReferenceBatch, weights: Tensor, routing: Tensor) -> Tensor:
    """Kernel-weighted mean of the neighbours' losses under one shared `routing`: one batched model call."""
    losses = model.routing_loss(batch, routing)
    if losses.shape != weights.shape:
        raise ValueError(f"routing_loss returned shape {tuple(losses.shape)} for a batch of "
                         f"{weights.shape[0]} samples; expected [{weights.shape[0]}]")
    return (weights.to(losses.dtype) * losses).sum()
