"""Projectors: each expert's features become soft visual tokens; each routing row mixes a group of them."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from r2t2.model.config import RoutingRow


class ExpertProjectors(nn.Module):
    """One MLP per expert mapping its pooled features to T soft tokens of the LM's width.

    The T tokens are split into consecutive groups, one per routing row: token t is the mixture of the
    experts' t-th tokens under the routing row its group belongs to.
    """

    def __init__(self, num_experts: int, feature_dim: int, hidden: int, rows: tuple[RoutingRow, ...]) -> None:
        super().__init__()
        self.tokens, self.hidden = sum(r.tokens for r in rows), hidden
        self.register_buffer("row_of_token", torch.repeat_interleave(
            torch.arange(len(rows)), torch.as_tensor([r.tokens for r in rows])), persistent=False)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, 2 * hidden), nn.GELU(),
                          nn.Linear(2 * hidden, self.tokens * hidden))
            for _ in range(num_experts)
        )

    def project(self, features: Tensor) -> Tensor:
        """[B, E, d] -> per-expert tokens [B, E, T, h]. Independent of routing, so it can be cached."""
        out = [mlp(features[:, e]) for e, mlp in enumerate(self.mlps)]
        return torch.stack(out, dim=1).view(features.shape[0], len(self.mlps), self.tokens, self.hidden)

    def mix(self, projected: Tensor, routing: Tensor) -> Tensor:
        """Soft tokens [B, T, h] from projected [B, E, T, h] and routing [L, E] (shared) or [B, L, E]."""
        per_token = routing[..., self.row_of_token, :]  # [(B,) T, E]
        if per_token.dim() == 2:
            per_token = per_token.expand(projected.shape[0], -1, -1)
        return torch.einsum("bte,beth->bth", per_token, projected)
