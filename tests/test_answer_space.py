"""The answer check: a changed answer is kept only inside the answer space of the neighbours' questions."""
from types import SimpleNamespace

import numpy as np
import pytest

from indexes.build import build_index
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from serving.pipeline.answer_check import check_answer
from serving.pipeline.neighbours import neighbour_answers
from tests.index_toys import ToyEmbedder, ToyEncoder, ToySample


def test_judge_keeps_unchanged_and_supported_answers_and_replaces_the_rest() -> None:
    space = frozenset({"circle", "Rectangle", "triangle"})
    assert check_answer("circle", " Circle", space).reason == "unchanged"
    kept = check_answer("circle", "rectangle", space)
    assert (kept.sent, kept.reason, kept.answer_space_size) == ("rerouted", "in_answer_space", 3)
    neither = check_answer("yes", "no", space)  # the neighbours say nothing about either answer's kind
    assert (neither.sent, neither.reason) == ("rerouted", "neither_in_answer_space")
    replaced = check_answer("circle", "yes", space)
    assert (replaced.sent, replaced.reason) == ("base", "outside_answer_space")
    assert replaced.model_dump() == {"sent": "base", "reason": "outside_answer_space", "rerouted_answer": "yes",
                                  "base_answer": "circle", "answer_space_size": 3}


def test_the_check_compares_answers_with_the_shared_normaliser() -> None:
    """Spellings of one answer are one answer: a re-routed "The Fire-Hydrant." did not change "fire hydrant", and
    "two" is the space's "2"."""
    assert check_answer("fire hydrant", "The Fire-Hydrant.", frozenset({"car"})).reason == "unchanged"
    moved = check_answer("red", "two", frozenset({"2", "3"}))
    assert (moved.sent, moved.reason) == ("rerouted", "in_answer_space")
    assert check_answer("2", "yes", frozenset({"An apple", "apple", "two"})).answer_space_size == 2


def test_answers_near_are_the_answers_of_questions_like_the_rows(tmp_path) -> None:
    """Rows asked a shape question see shape answers; a yes/no answer is outside their space."""
    shapes = [ToySample(f"s{i}", "what shape is it?", ["circle", "triangle", "rectangle"][i % 3]) for i in range(30)]
    yes_no = [ToySample(f"y{i}", "is there a red shape?", ["yes", "no"][i % 2]) for i in range(30)]
    store = IndexStore(tmp_path)
    build_index("mixed", shapes + yes_no, ToyEncoder(), ToyEmbedder(), store, {"source": "toy"}, progress=False,
                cap=1000)
    index = ReferenceIndex.load(store, "mixed")
    shape_rows = np.asarray([i for i in range(index.size) if index.record(i)["question"] == "what shape is it?"][:2])
    space = index.answers_near(shape_rows, 8)
    assert space <= {"circle", "triangle", "rectangle"} and len(space) >= 2
    assert check_answer("circle", "yes", space).sent == "base"
    assert index.answers_near(np.asarray([], dtype=np.int64), 8) == frozenset()


def test_answers_near_counts_spellings_of_one_answer_once(tmp_path) -> None:
    spellings = ["Fire hydrant", "fire-hydrant", "the fire hydrant.", "Two", "2"]
    samples = [ToySample(f"s{i}", "what is it?", spellings[i % 5]) for i in range(30)]
    store = IndexStore(tmp_path)
    build_index("spelt", samples, ToyEncoder(), ToyEmbedder(), store, {"source": "toy"}, progress=False, cap=1000)
    index = ReferenceIndex.load(store, "spelt")
    assert index.answers_near(np.arange(index.size), 8) == {"fire hydrant", "2"}


class _Rows:
    """A batch that is its row numbers: what `neighbour_answers` picks and relabels with."""

    def __init__(self, rows: list[int]) -> None:
        self.rows = rows

    def __getitem__(self, index: list[int]) -> "_Rows":
        return _Rows([self.rows[i] for i in index])

    def with_answers_of(self, other: "_Rows") -> list[int]:
        return other.rows


def test_answer_space_descent_scores_each_answer_once_whatever_its_spelling() -> None:
    neighbourhood = SimpleNamespace(batch=_Rows([10, 11, 12, 13, 14]))
    answers = ["Fire hydrant", "fire-hydrant", "two", "red", "2"]
    assert neighbour_answers(_Rows([0]), neighbourhood, answers, "answer_space") == [10, 12, 13]


@pytest.mark.parametrize("bad", [{"answer_check": "yes"}, {"answer_space_k": 0}])
def test_bad_answer_check_options_are_refused(bad) -> None:
    from r2t2.routing import RerouteConfig

    with pytest.raises(ValueError):
        RerouteConfig(**bad)
