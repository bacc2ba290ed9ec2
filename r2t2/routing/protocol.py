"""What a model must offer so that the re-routing strategies can work on it.

Strategies never see model parameters: they see routing tensors and a loss. Routing weights are a
tensor of shape [L, E] (routed layers x experts, each row a probability distribution); a single
mixture of vision experts is L = 1. Batches of reference samples are opaque to the strategies; they
only index them (`refs[idx]`) and hand them back to the model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ReferenceBatch(Protocol):
    """Model-specific batch of labelled samples (cached features, question and answer tokens)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Sequence[int] | Tensor) -> "ReferenceBatch": ...


@runtime_checkable
class RoutedModel(Protocol):
    """A frozen model whose expert mixture is steered by routing weights."""

    @property
    def routing_shape(self) -> tuple[int, int]:
        """(L, E) of this model's routing weights."""
        ...

    def base_routing(self, query: Any) -> Tensor:
        """The router's own routing weights [L, E] for one input."""
        ...

    def routing_loss(self, batch: ReferenceBatch, routing: Tensor) -> Tensor:
        """Per-sample loss [B] of `batch` answered under `routing`.

        `routing` is [L, E] (shared by every sample) or [B, L, E] (one per sample). The result must be
        differentiable with respect to `routing` and must not modify any model parameter.
        """
        ...

    # Optional: `routing_layout` (routing/layout.py): the rows' kinds (vision | lm) and expert counts. Without it
    # every row counts as a vision row over all E experts. A model with LM rows also takes
    # `routing_loss(batch, routing, pinned=..., lm_positions=...)`: one bool per row, whether the routing's row
    # replaces the model's own routing there, and at which answer tokens (routing/block.py); they are only
    # passed when a request re-routes LM rows.
    # Re-routing evaluates each request's neighbours in a `routing_loss` call of their own, never joined with another
    # request's: a batched call's float results depend on the batch, and a request's routing must not
    # (docs/method.md, batch invariance).


@dataclass(frozen=True)
class Neighbourhood:
    """Candidate reference samples for one query, as found by an index search.

    The strategies select from these (kNN or epsilon-ball) and weight them with a kernel; the index
    returns more candidates than k when an epsilon-ball is asked for.
    """

    ids: Sequence[str]
    embeddings: Tensor  # [n, D] reference embeddings (unit norm for cosine indexes)
    routings: Tensor  # [n, L, E] the routing each reference sample was answered correctly with
    batch: ReferenceBatch  # len n, aligned with ids

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise ValueError(f"embeddings must be [n={n}, D], got {tuple(self.embeddings.shape)}")
        if self.routings.ndim != 3 or self.routings.shape[0] != n:
            raise ValueError(f"routings must be [n={n}, L, E], got {tuple(self.routings.shape)}")
        if len(self.batch) != n:
            raise ValueError(f"batch has {len(self.batch)} samples, ids has {n}")


def is_valid_routing(routing: Tensor, atol: float = 1e-4) -> bool:
    """Rows non-negative, finite, and summing to one."""
    return bool(
        torch.isfinite(routing).all()
        and (routing >= 0).all()
        and torch.allclose(routing.sum(-1), torch.ones((), dtype=routing.dtype), atol=atol)
    )
