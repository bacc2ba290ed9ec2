"""Projectors: each expert's features become soft visual tokens; routing mixes them."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ExpertProjectors(nn.Module):
    """One MLP per expert mapping its pooled features to `tokens` vectors of the LM's width."""

    def __init__(self, num_experts: int, feature_dim: int, hidden: int, tokens: int) -> None:
        super().__init__()
        self.tokens, self.hidden = tokens, hidden
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, 2 * hidden), nn.GELU(),
                          nn.Linear(2 * hidden, tokens * hidden))
            for _ in range(num_experts)
        )

    def project(self, features: Tensor) -> Tensor:
        """[B, E, d] -> per-expert tokens [B, E, T, h]. Independent of routing, so it can be cached."""
        out = [mlp(features[:, e]) for e, mlp in enumerate(self.mlps)]
        return torch.stack(out, dim=1).view(features.shape[0], len(self.mlps), self.tokens, self.hidden)

    @staticmethod
    def mix(projected: Tensor, routing: Tensor) -> Tensor:
        """Weighted sum of the experts' tokens. routing: [B, 1, E] or [1, E] -> [B, T, h]."""
        weights = routing.reshape(-1, routing.shape[-1]) if routing.dim() == 3 else routing
        weights = weights.expand(projected.shape[0], -1)
        return torch.bmm(weights.unsqueeze(1), projected.flatten(2)).view(projected.shape[0], *projected.shape[2:])
