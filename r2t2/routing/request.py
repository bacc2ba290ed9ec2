"""One request's re-routing inputs: what `reroute_many` takes, one per request of a batch."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from r2t2.routing.config import RerouteConfig
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch


@dataclass(frozen=True)
class RerouteRequest:
    """The base routing `r0` [L, E], the request's own settings, and the inputs its strategy needs.

    `query_embedding` [D] and `neighbourhood` for "ngd" and "kernel"; `pool_routings` [N, L, E] (the
    reference set's routings) for "meanshift"; `target` (the query with its label, a batch of one) for
    "oracle". Inputs a strategy does not use are ignored.
    """

    r0: Tensor
    config: RerouteConfig
    query_embedding: Tensor | None = None
    neighbourhood: Neighbourhood | None = None
    pool_routings: Tensor | None = None
    target: ReferenceBatch | None = None
