"""The answer check: keep a re-routed answer only if it is an answer the neighbours' kind of question gets.

Re-routing borrows the routing that answered similar reference questions well. When that routing changes
the answer into one of another kind (a shape question answered "yes", a yes/no question answered with a
shape), the neighbours did not support that answer: they were not asked anything it answers. The check
takes the answer space of the neighbours' questions from the reference index itself (the answers of the
references nearest each neighbour, `ReferenceIndex.answers_near`), so it works for any data set, and sends
the base routing's answer when a changed answer lies outside it while the base answer lies inside. When
neither does, the neighbours are of another kind than the question (a neighbour search that failed): the
space then says nothing about which answer is of the right kind, and the re-routed answer is kept.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from indexes.reference_index import ReferenceIndex
from r2t2.data.answers import normalise_answer
from r2t2.routing import RerouteConfig, RerouteResult


class AnswerVerdict(BaseModel):
    """The answer check's verdict (request option r2t2.answer_check), on the first choice."""

    sent: Literal["rerouted", "base"] = Field(description="the answer sent: the re-routed one, or the router's own")
    reason: Literal["unchanged", "in_answer_space", "outside_answer_space", "neither_in_answer_space"] = Field(
        description="unchanged: re-routing did not change the answer; in_answer_space: the new answer is one the "
                    "reference index gives questions like the neighbours'; outside_answer_space: it is not but the "
                    "router's is, so the router's answer was sent; neither_in_answer_space: neither is (the "
                    "neighbours are of another kind), so the re-routed answer was kept")
    rerouted_answer: str = Field(description="the answer under the re-routed routing")
    base_answer: str = Field(description="the answer under the router's own routing")
    answer_space_size: int = Field(description="how many distinct answers the answer space held")


def check_answer(base: str, rerouted: str, space: frozenset[str]) -> AnswerVerdict:
    """The verdict on a re-routed answer against the base routing's answer and the answer space; answers are
    compared normalised (`normalise_answer`), as evaluation compares them."""
    allowed = {normalise_answer(answer) for answer in space}
    rerouted_form, base_form = normalise_answer(rerouted), normalise_answer(base)

    def verdict(sent: Literal["rerouted", "base"], reason: str) -> AnswerVerdict:
        return AnswerVerdict(sent=sent, reason=reason, rerouted_answer=rerouted, base_answer=base,
                             answer_space_size=len(allowed))

    if rerouted_form == base_form:
        return verdict("rerouted", "unchanged")
    if rerouted_form in allowed:
        return verdict("rerouted", "in_answer_space")
    if base_form not in allowed:
        return verdict("rerouted", "neither_in_answer_space")
    return verdict("base", "outside_answer_space")


def answer_space(config: RerouteConfig, result: RerouteResult, snapshot: ReferenceIndex | None,
                 described: dict[str, dict[str, Any]]) -> frozenset[str] | None:
    """The answers a changed answer must be among: those the index gives the questions nearest the request's
    neighbours. None when there is nothing to check: the check is off, the routing did not move, or the
    strategy used no neighbours."""
    if not config.answer_check or snapshot is None or not result.neighbours \
            or torch.equal(result.routing, result.base_routing):
        return None
    rows = np.asarray([described[n.id]["row"] for n in result.neighbours], dtype=np.int64)
    return snapshot.answers_near(rows, config.answer_space_k)
