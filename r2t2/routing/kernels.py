"""Similarity kernels that weight neighbours, and the bandwidth rule they share.

Every kernel maps (query [D], points [n, D], bandwidth h) to non-negative weights [n]. Gaussian and
Matern depend on Euclidean distance only (1 at distance 0, decreasing); polynomial and linear use inner
products, which suit unit-norm (cosine) embeddings. The papers fix no bandwidth, so we state our rule:
the median heuristic (`median_bandwidth`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

MIN_BANDWIDTH = 1e-6

Kernel = Callable[[Tensor, Tensor, float], Tensor]


def distances(query: Tensor, points: Tensor) -> Tensor:
    """Euclidean distance from `query` [D] to each row of `points` [n, D]."""
    return (points - query).pow(2).sum(-1).sqrt()


def median_bandwidth(neighbour_distances: Tensor) -> float:
    """The median heuristic: median of the query-to-neighbour distances, floored at 1e-6.

    Scale-free (a neighbour at the median distance gets a Gaussian weight of exp(-1/2) whatever the
    embedding scale), and the floor keeps a neighbourhood of exact duplicates from dividing by zero.
    """
    if neighbour_distances.numel() == 0:
        raise ValueError("median_bandwidth needs at least one distance")
    return max(float(torch.quantile(neighbour_distances.double(), 0.5)), MIN_BANDWIDTH)


def gaussian(query: Tensor, points: Tensor, h: float) -> Tensor:
    """exp(-d^2 / (2 h^2)): the paper's best kernel."""
    return torch.exp(-distances(query, points).pow(2) / (2 * h * h))


def matern(query: Tensor, points: Tensor, h: float) -> Tensor:
    """Matern with nu = 3/2: (1 + sqrt(3) d / h) exp(-sqrt(3) d / h); heavier tails than Gaussian."""
    scaled = math.sqrt(3.0) * distances(query, points) / h
    return (1 + scaled) * torch.exp(-scaled)


def polynomial(query: Tensor, points: Tensor, h: float) -> Tensor:
    """(max(1 + <x, y> / h^2, 0))^2: the base is clamped so anti-aligned points get no weight."""
    return (1 + points @ query / (h * h)).clamp_min(0).pow(2)


def linear(query: Tensor, points: Tensor, h: float) -> Tensor:
    """max(<x, y>, 0); ignores the bandwidth (kept in the signature so all kernels are interchangeable)."""
    del h
    return (points @ query).clamp_min(0)


KERNEL_FUNCTIONS: dict[str, Kernel] = {
    "gaussian": gaussian,
    "matern": matern,
    "polynomial": polynomial,
    "linear": linear,
}
KERNELS: tuple[str, ...] = tuple(KERNEL_FUNCTIONS)


def kernel_function(name: str) -> Kernel:
    """The kernel called `name`; raises ValueError naming the known ones."""
    try:
        return KERNEL_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}; expected one of {', '.join(KERNELS)}") from None
