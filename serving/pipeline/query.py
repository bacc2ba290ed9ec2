"""A question on its way through re-routing: what goes in (`Query`), what its strategy needs once it is encoded and
searched (`Found`), what waits for its strategy (`Pending`) and what comes out (`Rerouted`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from indexes.reference_index import ReferenceIndex
from r2t2.engine_prompt import LmPositions
from r2t2.routing import RerouteConfig, RerouteRequest, RerouteResult
from r2t2.routing.protocol import ReferenceBatch


@dataclass(frozen=True)
class Query:
    """One question to re-route: its image, text, settings, index (None: the default) and, for a strategy that
    needs the label (evaluation only), its true answer."""

    image: Image.Image
    question: str
    config: RerouteConfig
    index: str | None = None
    answer: str | None = None


@dataclass
class Rerouted:
    """A query after re-routing, with the evidence needed to explain it."""

    query: ReferenceBatch
    result: RerouteResult
    index: ReferenceIndex | None
    neighbours: dict[str, dict[str, Any]]  # the strategy's neighbour id -> the reference sample it names
    timings: dict[str, float]
    batch_size: int = 1  # how many requests were re-routed together with this one (itself included)
    pinned: tuple[bool, ...] | None = None  # the rows the answer applies (routing/block.py `answer_pins`)
    lm_positions: LmPositions = "answer"  # where the pinned LM rows apply (the request's `lm_positions`)
    # With the answer check, for a request whose routing moved: the answers the index holds for questions like
    # its neighbours' (serving/pipeline/answer_check.py); None: no check (it is off, nothing moved, or no neighbours)
    answer_space: frozenset[str] | None = None


@dataclass(frozen=True)
class Found:
    """A query encoded, with what its strategy needs: the step before the batched re-routing."""

    batch: ReferenceBatch
    request: RerouteRequest
    snapshot: ReferenceIndex | None
    described: dict[str, dict[str, Any]]
    timings: dict[str, float]


@dataclass(frozen=True)
class Pending:
    """A query encoded and searched whose strategy has still to run (the server's second stage)."""

    found: Found
    batch_size: int  # how many requests were encoded together with this one (itself included)
