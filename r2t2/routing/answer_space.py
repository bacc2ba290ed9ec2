"""Answer-space descent: re-route until the request itself answers with an answer of its neighbours' kind.

The neighbours' answer loss (NGD, kernel regression) asks a routing to suit other questions; on the language
model's experts that does not carry over to this one (docs/benchmark_diary.md, section 1g). What does carry over is
the *kind* of answer: a paraphrased colour question the router gets wrong is mostly answered with a word of
another kind ("yes", "2"), and the neighbours' answers ("red", "teal", ...) say which kind is wanted.
This strategy descends on the request's own loss of answering within that set,

    A(r) = -log sum_j exp(-l(f(x, r), a_j)),   a_j the distinct answers of the `space_k` nearest references,

with no label: the model's own evidence picks the answer inside the set. It moves only when the router's
routing leaves little of the answer mass in the set (exp(-A(r0)) below `space_min_mass`): an answer of the
right kind is never re-routed to another of the same kind. It starts from the best of r0 and its one-hot
vertices (a descent through top-k expert choices only sees the chosen experts' slope) and returns the best
routing it saw.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from r2t2.routing.descent import projected_adam
from r2t2.routing.neighbours import model_loss
from r2t2.routing.protocol import RoutedModel
from r2t2.routing.request import Placement, RerouteRequest
from r2t2.routing.result import Neighbour, RerouteResult
from r2t2.routing.simplex import one_hot_starts
from r2t2.routing.strategies import Needs, Record, Strategy, register
from r2t2.routing.ties import first_lowest


def space_loss(per_answer: Tensor, answers: int) -> Tensor:
    """[S] A(r) of S routings from their per-answer losses [S * answers] (routing-major)."""
    return -torch.logsumexp(-per_answer.reshape(-1, answers), dim=-1)


def answer_space_descent(model: RoutedModel, request: RerouteRequest) -> RerouteResult:
    """One request: A at r0; when it moves, A at r0 and every vertex (one call), then projected Adam from the best
    start."""
    config, target = request.config, request.target
    assert target is not None and request.neighbourhood is not None  # checked by reroute
    answers = len(target)
    placement = Placement.of([request])
    block = None if placement is None else placement.block
    batches: dict[int, object] = {}  # per routing count, one batch kept: what the model caches on it is reused

    def losses(routings: Tensor) -> Tensor:
        """A(r) for each of `routings` [S, L, E] (blocks when the request re-routes part of its routing)."""
        count = len(routings)
        full = routings if placement is None else placement.full(routings, torch.zeros(count, dtype=torch.long))
        batch = batches.setdefault(count, target[list(range(answers)) * count])  # routing-major
        return space_loss(model_loss(model, batch, full.repeat_interleave(answers, dim=0), block), answers)

    hood = request.neighbourhood  # nearest first; the answers are the space_k nearest's
    ids = hood.ids[:config.space_k]
    distances = (hood.embeddings[:len(ids)] - request.query_embedding).norm(dim=-1).tolist()
    neighbours = tuple(Neighbour(id=i, weight=1.0 / len(ids), distance=d) for i, d in zip(ids, distances))
    with torch.no_grad():  # r0 alone first: most requests stop here, and need no vertex evaluated
        base = float(losses(request.r0.unsqueeze(0))[0])
    if not math.isfinite(base):
        return RerouteResult(strategy="answer_space", base_routing=request.r0, routing=request.r0.clone(),
                             neighbours=neighbours, fallback="non-finite answer loss under the router's routing")
    if math.exp(-base) >= config.space_min_mass:
        return RerouteResult(strategy="answer_space", base_routing=request.r0, routing=request.r0.clone(),
                             neighbours=neighbours, losses=(base,))
    starts = one_hot_starts(request.r0, request.movable)
    with torch.no_grad():
        at_starts = losses(starts).nan_to_num(math.inf)
    start = starts[first_lowest(at_starts)]
    settings = torch.tensor([config.lr, config.lr_min], dtype=start.dtype, device=start.device)
    (descent,) = projected_adam(lambda routing, _: losses(routing), start.unsqueeze(0), config.steps, settings[:1],
                                settings[1:], None if request.movable is None else request.movable.unsqueeze(0))
    return RerouteResult(strategy="answer_space", base_routing=request.r0, routing=descent.best,
                         neighbours=neighbours, losses=(base, *descent.losses), steps=descent.steps,
                         fallback=descent.fallback)


def _each(model: RoutedModel, requests: list[RerouteRequest]) -> list[RerouteResult]:
    return [answer_space_descent(model, request) for request in requests]


def _record(result: RerouteResult) -> Record:
    masses = [math.exp(-loss) for loss in result.losses]
    return {"steps_taken": result.steps, "answer_space_mass": masses}


def _evidence(record: Record) -> str:
    masses = record.get("answer_space_mass") or []
    if len(masses) < 2:
        return ""
    return (f": the answer mass on its neighbours' answers went from {masses[0]:.2f} under the router's routing "
            f"to {max(masses[1:]):.2f}")


def _why_still(record: Record) -> str:
    masses = record.get("answer_space_mass") or []
    if len(masses) == 1:
        return f"the router's routing already answers within its neighbours' answers (mass {masses[0]:.2f})"
    return "no routing it tried answered more within its neighbours' answers"


register(Strategy(
    name="answer_space", title="Answer-space descent",
    description="descent on the request's own loss of answering with one of its neighbours' answers (their kind "
                "of answer), only when the router's routing answers outside them",
    needs=Needs.NEIGHBOUR_ANSWERS, run=_each, record=_record, evidence=_evidence, why_still=_why_still))
