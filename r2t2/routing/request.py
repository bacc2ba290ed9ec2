"""One request's re-routing inputs: what `reroute_many` takes, one per request of a batch."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.routing.block import RoutingBlock
from r2t2.routing.config import RerouteConfig
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch


@dataclass(frozen=True)
class RerouteRequest:
    """The base routing `r0` [L, E], the request's own settings, and the inputs its strategy needs.

    What the strategy `needs` (its registry entry, routing/strategies.py): `query_embedding` [D] and
    `neighbourhood` for question-space neighbours; `pool_routings` [N, L, E] (the reference set's routings) for
    the routing pool; `target` (the query with its label, a batch of one) for the label. Inputs a strategy does
    not use are ignored. `block` re-routes only part of the routing
    (see routing/block.py; None: all of it).

    Inside `reroute_many` a block request is re-expressed in its block: `r0` and the routings it carries
    are the block's, and `base` is the full routing the block is placed back into.
    """

    r0: Tensor
    config: RerouteConfig
    query_embedding: Tensor | None = None
    neighbourhood: Neighbourhood | None = None
    pool_routings: Tensor | None = None
    target: ReferenceBatch | None = None
    block: RoutingBlock | None = None
    base: Tensor | None = None

    @property
    def movable(self) -> Tensor | None:
        """[L, E] bool of the entries this request's strategy may move; None: all of them."""
        return None if self.block is None else self.block.movable


@dataclass(frozen=True)
class Placement:
    """How the block routings of a group of requests (one block layout, a base each) become full routings."""

    block: RoutingBlock
    bases: Tensor  # [Q, L, E]

    @classmethod
    def of(cls, requests: Sequence[RerouteRequest]) -> "Placement | None":
        """The group's placement; None when its requests re-route their whole routing."""
        first = requests[0]
        if first.block is None:
            return None
        assert all(r.base is not None for r in requests)  # set by reroute_many for every block request
        return cls(first.block, torch.stack([r.base for r in requests]))

    def full(self, blocks: Tensor, owner: Tensor | None = None) -> Tensor:
        """Full routings for `blocks` [N, L', W], sample n placed into the base of request `owner[n]`."""
        bases = self.bases if owner is None else self.bases[owner.to(self.bases.device)]
        return self.block.place(blocks, bases)


def stacked_movable(requests: Sequence[RerouteRequest]) -> Tensor | None:
    """[Q, L, E] movable entries of a group's requests; None when every request may move everything."""
    if all(r.movable is None for r in requests):
        return None
    return torch.stack([torch.ones_like(r.r0, dtype=torch.bool) if r.movable is None else r.movable
                        for r in requests])
