"""Kernel regression: borrow the neighbours' own routings instead of optimising through the model.

Plain regression (alpha = 0) needs no model call at all; the optional line search toward r0 spends a
few batched neighbour-loss evaluations to decide how far to trust the neighbours.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.neighbours import neighbour_loss, weigh_neighbourhood
from r2t2.routing.protocol import Neighbourhood, RoutedModel
from r2t2.routing.result import LineSearchPoint, RerouteResult

_INVERSE_GOLDEN = (math.sqrt(5.0) - 1) / 2


def kernel_regression(model: RoutedModel, r0: Tensor, config: RerouteConfig, query_embedding: Tensor,
                      neighbourhood: Neighbourhood) -> RerouteResult:
    """r_hat = sum_i K_i r_i / sum_i K_i, then alpha * r0 + (1 - alpha) * r_hat.

    With `config.alpha` fixed that mix is returned directly. Otherwise alpha is searched on [0, 1]:
    both ends (plain regression, base routing) plus `line_search_steps` golden-section evaluations of
    the neighbour loss; the lowest-loss alpha wins. Raises NoUsableNeighbours like NGD.
    """
    chosen = weigh_neighbourhood(query_embedding, neighbourhood, config)
    routings = neighbourhood.routings[chosen.indices].to(r0.dtype)
    r_hat = torch.einsum("n,nle->le", chosen.weights.to(r0.dtype), routings)
    neighbours = chosen.describe(neighbourhood.ids)

    def mix(alpha: float) -> Tensor:
        return alpha * r0 + (1 - alpha) * r_hat

    if config.alpha is not None:
        return RerouteResult(strategy="kernel", base_routing=r0, routing=mix(config.alpha),
                             neighbours=neighbours, alpha=config.alpha, bandwidth=chosen.bandwidth)
    batch = neighbourhood.batch[chosen.indices.tolist()]
    evaluated: list[LineSearchPoint] = []

    def loss_at(alpha: float) -> float:
        with torch.no_grad():
            value = float(neighbour_loss(model, batch, chosen.weights, mix(alpha)))
        evaluated.append(LineSearchPoint(alpha=alpha, loss=value))
        return value if math.isfinite(value) else math.inf

    _golden_section(loss_at, config.line_search_steps)
    finite = [p for p in evaluated if math.isfinite(p.loss)]
    if not finite:
        return RerouteResult(strategy="kernel", base_routing=r0, routing=r0.clone(), neighbours=neighbours,
                             line_search=tuple(evaluated), bandwidth=chosen.bandwidth,
                             steps=len(evaluated), fallback="non-finite neighbour loss at every alpha")
    best = min(finite, key=lambda p: p.loss)
    return RerouteResult(strategy="kernel", base_routing=r0, routing=mix(best.alpha), neighbours=neighbours,
                         alpha=best.alpha, line_search=tuple(evaluated), bandwidth=chosen.bandwidth,
                         steps=len(evaluated))


def _golden_section(loss_at: Callable[[float], float], evaluations: int) -> None:
    """Evaluate both ends of [0, 1], then shrink a golden-section bracket with `evaluations` more calls."""
    loss_at(0.0)
    loss_at(1.0)
    low, high = 0.0, 1.0
    left, right = high - _INVERSE_GOLDEN * (high - low), low + _INVERSE_GOLDEN * (high - low)
    left_loss, right_loss = loss_at(left), loss_at(right)
    for _ in range(evaluations - 2):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - _INVERSE_GOLDEN * (high - low)
            left_loss = loss_at(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + _INVERSE_GOLDEN * (high - low)
            right_loss = loss_at(right)
