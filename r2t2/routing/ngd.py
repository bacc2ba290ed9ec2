"""Neighbourhood gradient descent (NGD), the paper's best strategy.

Moves the routing down the kernel-weighted loss of the query's neighbours: the routing that answers
similar reference questions correctly is likely to answer this one too.
"""
from __future__ import annotations

from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.descent import projected_adam
from r2t2.routing.neighbours import neighbour_loss, weigh_neighbourhood
from r2t2.routing.protocol import Neighbourhood, RoutedModel
from r2t2.routing.result import RerouteResult


def neighbourhood_gradient_descent(model: RoutedModel, r0: Tensor, config: RerouteConfig,
                                   query_embedding: Tensor, neighbourhood: Neighbourhood) -> RerouteResult:
    """`config.steps` projected Adam steps on L(r) = sum_i K_i l_i(r) / sum_i K_i, from r0.

    Returns the final iterate (not the best one: the neighbour loss is only a proxy for the query's).
    Raises NoUsableNeighbours when the neighbourhood is empty or carries no kernel weight.
    """
    chosen = weigh_neighbourhood(query_embedding, neighbourhood, config)
    batch = neighbourhood.batch[chosen.indices.tolist()]
    descent = projected_adam(lambda r: neighbour_loss(model, batch, chosen.weights, r),
                             r0, config.steps, config.lr, config.lr_min)
    return RerouteResult(strategy="ngd", base_routing=r0, routing=descent.final,
                         neighbours=chosen.describe(neighbourhood.ids), losses=descent.losses,
                         bandwidth=chosen.bandwidth, steps=descent.steps, fallback=descent.fallback)
