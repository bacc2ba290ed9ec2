"""Discrete choices over float values, made the same way on every run, device and batch.

A choice among losses (which start to descend from, which line-search point or iterate to keep) must not be
flipped by float noise: values within `TIE` of the lowest count as tied, and a tie goes to the first candidate in
the caller's order, nearest r0 first (r0 before a vertex, the largest alpha, an earlier iterate). A top-k among routing weights takes
equal weights by the lower expert index (torch's `topk` leaves the order of equal values open).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

TIE = 1e-6  # relative to the lowest value: a few float32 roundings (each 6e-8 of it), far below a real difference


def first_lowest(values: Sequence[float] | Tensor, tolerance: float = TIE) -> int:
    """The index of the first value within `tolerance` (relative) of the lowest; a non-finite value is never lowest
    (all non-finite: 0)."""
    listed = values.tolist() if isinstance(values, Tensor) else list(values)
    finite = [v for v in listed if math.isfinite(v)]
    if not finite:
        return 0
    lowest = min(finite)
    bound = lowest + tolerance * abs(lowest)
    return next(i for i, v in enumerate(listed) if math.isfinite(v) and v <= bound)


def largest(weights: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest of `weights` along the last dimension and their indices, largest first, equal weights by the
    lower index."""
    ordered = torch.sort(weights, dim=-1, descending=True, stable=True)
    return ordered.values[..., :k], ordered.indices[..., :k]
