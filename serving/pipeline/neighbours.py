"""What a query's strategy re-routes from: its question-space neighbours, the index's routing pool, or its label.

The reference index is the snapshot the request started with: a rebuild swapping the index mid-request
never mixes two versions in one answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from indexes.embedders import Embedder
from indexes.reference_index import Candidates, ReferenceIndex
from indexes.registry import IndexRegistry
from serving.pipeline.query import Found, Query
from r2t2.data.answers import normalise_answer
from r2t2.model import RoutedQuery, ServableModel
from r2t2.routing import Neighbourhood, RerouteRequest
from r2t2.routing.protocol import ReferenceBatch
from r2t2.routing.strategies import Needs, strategy

EPSILON_CANDIDATES = 64  # an epsilon-ball is cut from this many nearest candidates


@dataclass(frozen=True)
class NeighbourSource:
    """Where one served model's neighbours come from: its reference indexes and the embedder they were built
    with, and the device its re-routing runs on."""

    model: ServableModel
    embedder: Embedder
    registry: IndexRegistry
    default_index: str
    device: torch.device

    def reference_index(self, name: str | None) -> ReferenceIndex:
        """The current version of the index a request naming `name` (None: the default) searches."""
        return self.registry.get(name or self.default_index)

    def find(self, query: Query, routed: RoutedQuery, encode_seconds: float) -> Found:
        """What an encoded query's strategy needs: neighbours, the routing pool, or its label."""
        config = query.config
        needs = {strategy(name).needs for name in config.strategies}
        encoded, r0 = routed.encoded, routed.base_routing
        timings: dict[str, float] = {"encode": encode_seconds, "embed": 0.0}
        snapshot, neighbourhood, pool, embedding = None, None, None, None
        described: dict[str, dict[str, Any]] = {}
        searches = bool(needs & {Needs.NEIGHBOURS, Needs.NEIGHBOUR_ANSWERS})
        if searches or Needs.POOL in needs:
            snapshot = self.reference_index(query.index)
        if searches:
            if encoded.question_embedder == self.embedder.name:  # the model already embedded the question
                embedding = encoded.question_embedding
            else:
                tick = time.perf_counter()
                embedding = self.embedder.embed([SimpleNamespace(image=query.image, question=query.question)])[0]
                timings["embed"] += time.perf_counter() - tick
            tick = time.perf_counter()
            wanted = config.k if config.neighbourhood == "knn" else max(config.k, EPSILON_CANDIDATES)
            if Needs.NEIGHBOUR_ANSWERS in needs:  # its answer set is cut from the space_k nearest
                wanted = max(wanted, config.space_k)
            hits = snapshot.search(embedding, wanted)
            neighbourhood = Neighbourhood(
                ids=hits.ids, embeddings=torch.from_numpy(hits.embeddings).float().to(self.device),
                routings=torch.from_numpy(hits.routings).float().to(self.device),
                batch=self.model.reference_batch(hits.payload),
            )
            described = describe(list(hits.ids), hits)
            timings["search"] = time.perf_counter() - tick
        if Needs.POOL in needs:
            pool = torch.tensor(snapshot.all_routings, dtype=torch.float32, device=self.device)
        query_embedding = None if embedding is None else torch.from_numpy(embedding).float().to(self.device)
        target = encoded.batch if Needs.LABEL in needs else None
        if Needs.NEIGHBOUR_ANSWERS in needs:
            target = neighbour_answers(encoded.batch, neighbourhood, list(hits.answers[:config.space_k]),
                                       config.strategy)
        request = RerouteRequest(r0, config, query_embedding=query_embedding, neighbourhood=neighbourhood,
                                 pool_routings=pool, target=target)
        return Found(encoded.batch, request, snapshot, described, timings)


def neighbour_answers(query: ReferenceBatch, neighbourhood: Neighbourhood, answers: list[str],
                      name: str) -> ReferenceBatch:
    """The query labelled with each distinct answer of its nearest neighbours (`answers`, nearest first; spellings
    of one answer are one answer, see `normalise_answer`)."""
    relabel = getattr(query, "with_answers_of", None)
    if relabel is None:
        raise ValueError(f"strategy {name!r} needs a model whose batches can be relabelled (`with_answers_of`, "
                         f"docs/models.md); {type(query).__name__} cannot")
    first = {}
    for row, answer in enumerate(answers):
        first.setdefault(normalise_answer(answer), row)
    return relabel(neighbourhood.batch[list(first.values())])


def pool_neighbours(snapshot: ReferenceIndex, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The reference samples a routing-space strategy's neighbours name (entries of the index's routing pool, found
    without a search)."""
    return describe(ids, snapshot.take(snapshot.pool_rows[np.asarray([int(i) for i in ids], dtype=np.int64)]))


def describe(keys: list[str], found: Candidates) -> dict[str, dict[str, Any]]:
    """What a response says of each neighbour: the reference sample's id, question, answer and task, and
    its question-embedding similarity (None for rows chosen in routing space); and its row in the index."""
    return {key: {"id": found.ids[i], "question": found.questions[i], "answer": found.answers[i],
                  "task": found.tasks[i],
                  "similarity": None if np.isnan(found.similarities[i]) else float(found.similarities[i]),
                  "row": int(found.rows[i])}
            for i, key in enumerate(keys)}
