"""Small routed models with known optima, for the routing tests.

`QuadraticModel`: sample i's loss is ||r - b_i||^2, so its best routing b_i is known exactly.
`TinyMixtureNet`: a real torch nn.Module (parameters requiring grad) mixing experts per layer, used to
check that no strategy changes or accumulates gradients on model parameters.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from r2t2.routing import Neighbourhood, ReferenceBatch, project_to_simplex


def _index(index: Sequence[int] | Tensor) -> Tensor:
    return index.long() if isinstance(index, Tensor) else torch.as_tensor(list(index), dtype=torch.long)


@dataclass(frozen=True)
class BestRoutingBatch:
    """Reference samples described by their best routing b_i [B, L, E]."""

    best: Tensor

    def __len__(self) -> int:
        return self.best.shape[0]

    def __getitem__(self, index: Sequence[int] | Tensor) -> BestRoutingBatch:
        return BestRoutingBatch(self.best[_index(index)])


class QuadraticModel:
    """l_i(r) = ||r - b_i||^2 (+ log(r[0, 0] - barrier) when a barrier is set, which turns NaN below it)."""

    def __init__(self, layers: int, experts: int, barrier: float | None = None, poisoned: bool = False):
        self._shape = (layers, experts)
        self.barrier = barrier
        self.poisoned = poisoned

    @property
    def routing_shape(self) -> tuple[int, int]:
        return self._shape

    def base_routing(self, query: Tensor) -> Tensor:
        return project_to_simplex(query.reshape(self._shape))

    def routing_loss(self, batch: BestRoutingBatch, routing: Tensor) -> Tensor:
        loss = (routing - batch.best).pow(2).sum((-2, -1))
        if self.barrier is not None:
            loss = loss + torch.log(routing[..., 0, 0] - self.barrier)
        if self.poisoned:
            loss = loss * torch.nan
        return loss


class CallCounter:
    """Wraps a model and records the batch size of every routing_loss call."""

    def __init__(self, model: QuadraticModel) -> None:
        self.model = model
        self.batch_sizes: list[int] = []
        self.routing_shape = model.routing_shape
        self.base_routing = model.base_routing

    def routing_loss(self, batch: BestRoutingBatch, routing: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(batch))
        return self.model.routing_loss(batch, routing)


@dataclass(frozen=True)
class LabelledBatch:
    """Feature vectors [B, F] with class labels [B]."""

    features: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: Sequence[int] | Tensor) -> LabelledBatch:
        idx = _index(index)
        return LabelledBatch(self.features[idx], self.labels[idx])


class TinyMixtureNet(nn.Module):
    """h_{l+1} = sum_e r[l, e] tanh(W_{l,e} h_l); logits = head(h_L); loss = cross-entropy."""

    def __init__(self, layers: int = 2, experts: int = 3, features: int = 6, classes: int = 4, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.experts = nn.Parameter(torch.randn(layers, experts, features, features, generator=generator) / 2)
        self.head = nn.Linear(features, classes)
        with torch.no_grad():  # seeded, so tests do not depend on the global RNG or on test order
            self.head.weight.copy_(torch.randn(classes, features, generator=generator) / features**0.5)
            self.head.bias.copy_(torch.randn(classes, generator=generator) / 10)
        self._shape = (layers, experts)

    @property
    def routing_shape(self) -> tuple[int, int]:
        return self._shape

    def base_routing(self, query: Tensor) -> Tensor:
        return torch.softmax(query.reshape(self._shape), dim=-1)

    def routing_loss(self, batch: LabelledBatch, routing: Tensor) -> Tensor:
        per_sample = routing.expand(len(batch), *self._shape) if routing.ndim == 2 else routing
        hidden = batch.features
        for layer in range(self._shape[0]):
            outputs = torch.tanh(torch.einsum("eij,bj->bei", self.experts[layer], hidden))
            hidden = torch.einsum("be,bei->bi", per_sample[:, layer], outputs)
        return nn.functional.cross_entropy(self.head(hidden), batch.labels, reduction="none")


class JoiningNet(TinyMixtureNet):
    """TinyMixtureNet that can join batches, as the shipped families can (re-routing must never join requests'
    neighbours), and records the batch size of every routing_loss call."""

    def __init__(self, **sizes: int) -> None:
        super().__init__(**sizes)
        self.calls: list[int] = []

    def routing_loss(self, batch: LabelledBatch, routing: Tensor) -> Tensor:
        self.calls.append(len(batch))
        return super().routing_loss(batch, routing)

    def join_batches(self, batches: Sequence[LabelledBatch]) -> LabelledBatch:
        return LabelledBatch(torch.cat([b.features for b in batches]), torch.cat([b.labels for b in batches]))


def random_routings(count: int, layers: int, experts: int, generator: torch.Generator,
                    sharpness: float = 1.0) -> Tensor:
    """`count` valid routings [count, L, E] (softmax of scaled Gaussian noise)."""
    return torch.softmax(sharpness * torch.randn(count, layers, experts, generator=generator), dim=-1)


def make_neighbourhood(embeddings: Tensor, routings: Tensor, batch: ReferenceBatch) -> Neighbourhood:
    """A Neighbourhood with ids "ref-0", "ref-1", ..."""
    return Neighbourhood(ids=[f"ref-{i}" for i in range(embeddings.shape[0])], embeddings=embeddings,
                         routings=routings, batch=batch)
