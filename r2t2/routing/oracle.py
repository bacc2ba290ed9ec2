"""The oracle: re-route using the query's own label. Evaluation only: it reports the ceiling that a
strategy without labels could reach (the paper's upper bound), never a serving answer.
"""
from __future__ import annotations

import torch
from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.descent import projected_adam
from r2t2.routing.protocol import ReferenceBatch, RoutedModel
from r2t2.routing.result import RerouteResult


def one_hot_starts(r0: Tensor) -> Tensor:
    """r0 and, for each layer and expert, r0 with that layer's row made one-hot: [1 + L * E, L, E].

    For L = 1 these are r0 and every vertex of the simplex; for deeper routings the full vertex set
    (E ** L points) is too large, so one layer changes at a time.
    """
    layers, experts = r0.shape
    starts = r0.expand(layers * experts, layers, experts).clone()
    eye = torch.eye(experts, dtype=r0.dtype, device=r0.device)
    for layer in range(layers):
        starts[layer * experts:(layer + 1) * experts, layer] = eye
    return torch.cat([r0.unsqueeze(0), starts])


def oracle(model: RoutedModel, r0: Tensor, config: RerouteConfig, target: ReferenceBatch) -> RerouteResult:
    """Best routing for `target` (a batch of one): best of `one_hot_starts` (one batched call), then
    `oracle_steps` projected Adam steps (lr `oracle_lr` annealed to `lr_min`); returns the best seen.
    """
    starts = one_hot_starts(r0)
    with torch.no_grad():
        start_losses = model.routing_loss(target[[0] * starts.shape[0]], starts)
    if start_losses.shape != (starts.shape[0],):
        raise ValueError(f"routing_loss returned shape {tuple(start_losses.shape)} for {starts.shape[0]} "
                         f"routings; expected [{starts.shape[0]}]")
    finite = torch.isfinite(start_losses)
    if not finite.any():
        return RerouteResult(strategy="oracle", base_routing=r0, routing=r0.clone(),
                             fallback="non-finite target loss at every starting routing")
    start_index = int(torch.where(finite, start_losses, torch.inf).argmin())
    settings = torch.tensor([config.oracle_lr, config.lr_min], dtype=r0.dtype, device=r0.device)
    (descent,) = projected_adam(lambda r: model.routing_loss(target, r[0]).sum().reshape(1),
                                starts[start_index].unsqueeze(0), config.oracle_steps, settings[:1], settings[1:])
    return RerouteResult(strategy="oracle", base_routing=r0, routing=descent.best, losses=descent.losses,
                         steps=descent.steps, fallback=descent.fallback)
