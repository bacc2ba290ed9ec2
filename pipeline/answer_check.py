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

from dataclasses import dataclass
from typing import Any, Literal

Sent = Literal["rerouted", "base"]
Reason = Literal["unchanged", "in_answer_space", "outside_answer_space", "neither_in_answer_space"]


def normalise(answer: str) -> str:
    """Answers compare case- and whitespace-insensitively ("Red " is "red")."""
    return " ".join(answer.lower().split())


@dataclass(frozen=True)
class AnswerVerdict:
    """Which answer was sent and why."""

    sent: Sent
    reason: Reason
    rerouted_answer: str
    base_answer: str
    answer_space_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "reason": self.reason, "rerouted_answer": self.rerouted_answer,
                "base_answer": self.base_answer, "answer_space_size": self.answer_space_size}


def judge(base: str, rerouted: str, space: frozenset[str]) -> AnswerVerdict:
    """The verdict on a re-routed answer against the base routing's answer and the answer space."""
    allowed = {normalise(answer) for answer in space}
    if normalise(rerouted) == normalise(base):
        return AnswerVerdict("rerouted", "unchanged", rerouted, base, len(allowed))
    if normalise(rerouted) in allowed:
        return AnswerVerdict("rerouted", "in_answer_space", rerouted, base, len(allowed))
    if normalise(base) not in allowed:
        return AnswerVerdict("rerouted", "neither_in_answer_space", rerouted, base, len(allowed))
    return AnswerVerdict("base", "outside_answer_space", rerouted, base, len(allowed))
