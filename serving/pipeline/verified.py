"""Verified answers become reference rows: encoded as an index build would, embedded, their routing fitted to the
verified answer (r2t2/routing/fit.py), and kept only when that routing answers them.

The rows these make are what a growing index appends (indexes/growth.py); `r2t2 eval`'s learning curve and the
server's feedback worker both call `reference_rows`, so they measure and serve the same rule.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from indexes.protocols import Embedder
from indexes.reference_index import ReferenceIndex
from r2t2.data.answers import same_answer
from r2t2.engine_prompt import LmPositions
from r2t2.routing.fit import FitSettings, fit_routings
from r2t2.routing.layout import RoutingLayout
from r2t2.routing.neighbours import select_knn, weigh

if TYPE_CHECKING:  # the index manager reads these types without loading any model code (torchvision)
    from r2t2.data.sample import Sample
    from r2t2.model import ServableModel


@dataclass(frozen=True)
class NewRow:
    """What one verified answer adds: an index row's arrays, and how its routing was found."""

    embedding: np.ndarray  # [D] float32
    routing: np.ndarray  # [L, E] float32
    payload: dict[str, np.ndarray]  # one row of each of the model's payload arrays
    how: dict[str, Any]  # method, steps, the answer's loss under the router and under this routing, ...


@dataclass(frozen=True)
class Refused:
    reason: str


def neighbours_routing(snapshot: ReferenceIndex, embedding: np.ndarray, k: int = 5) -> torch.Tensor:
    """The routing a request of this question would borrow: its k nearest references' Gaussian-weighted routing."""
    hits = snapshot.search(embedding, k)
    points = torch.from_numpy(hits.embeddings).float()
    chosen = weigh(torch.from_numpy(np.asarray(embedding)).float(), points, select_knn(
        torch.from_numpy(np.asarray(embedding)).float(), points, k), "gaussian", None)
    routings = torch.from_numpy(hits.routings).float()[chosen.indices]
    return (chosen.weights.view(-1, 1, 1) * routings).sum(0)


def reference_rows(model: ServableModel, embedder: Embedder, layout: RoutingLayout, samples: Sequence[Sample],
                   settings: FitSettings = FitSettings(), lm_positions: LmPositions = "answer",
                   snapshot: ReferenceIndex | None = None) -> list[NewRow | Refused]:
    """One row (or the reason for none) per verified sample, in order; the samples are encoded in one batch.
    `snapshot`: the index the rows will extend, whose neighbours suggest a start (fit starts "neighbours")."""
    encoded = model.encode_references(list(samples))
    embeddings = embedder.embed(list(samples))
    batch = model.reference_batch(encoded.payload)
    r0 = torch.from_numpy(encoded.routings).float()
    guesses = None
    if "neighbours" in (settings.starts, settings.lm_starts):
        if snapshot is None or not snapshot.size:
            raise ValueError("a fit that starts from the neighbours' routing needs an index with references")
        guesses = torch.stack([neighbours_routing(snapshot, embedding) for embedding in embeddings])
    fits = fit_routings(model, batch, r0, layout, settings, lm_positions, guesses)
    routings = torch.stack([fit.routing for fit in fits])
    pinned = fits[0].pinned if fits else None  # one stage plan for the whole batch
    with torch.no_grad():
        answers = (model.answer(batch, routings) if pinned is None else
                   model.answer(batch, routings, pinned=pinned, lm_positions=lm_positions))
    starts = {kind: start for kind, start in (("vision", settings.starts), ("lm", settings.lm_starts))
              if layout.has(kind)}
    out: list[NewRow | Refused] = []
    for i, (sample, fit, answer) in enumerate(zip(samples, fits, answers)):
        if not same_answer(answer, sample.answer):
            out.append(Refused(f"no routing within the fit's steps answers {sample.answer!r} (the closest answered "
                               f"{answer!r}, answer loss {fit.loss:.3f})"))
            continue
        moved = float(((fit.routing - r0[i]).abs().sum(-1) / 2).max())
        out.append(NewRow(
            embedding=np.asarray(embeddings[i], dtype=np.float32), routing=fit.routing.float().cpu().numpy(),
            payload={name: np.asarray(array[i]) for name, array in encoded.payload.items()},
            how={"method": "fit", "starts": starts, "steps": fit.steps, "router_answered": bool(encoded.correct[i]),
                 "router_loss": round(fit.base_loss, 4), "loss": round(fit.loss, 4), "moved": round(moved, 4)}))
    return out
