"""The answer check: a changed answer is kept only inside the answer space of the neighbours' questions."""
import numpy as np
import pytest

from indexes.build import build_index
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from pipeline.answer_check import check_answer, normalise
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
    assert normalise("  Dark   Blue ") == "dark blue"


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


@pytest.mark.parametrize("bad", [{"answer_check": "yes"}, {"answer_space_k": 0}])
def test_bad_answer_check_options_are_refused(bad) -> None:
    from r2t2.routing import RerouteConfig

    with pytest.raises(ValueError):
        RerouteConfig(**bad)
