"""The one answer normaliser: spellings of one VQA answer compare equal, different answers do not."""

import pytest

from r2t2.data import SPLITS, load_split
from r2t2.data.answers import normalise_answer, same_answer


@pytest.mark.parametrize("given, truth", [
    ("The Fire-Hydrant.", "fire hydrant"),
    ("two", "2"),
    ("Ten", "10"),
    ("an apple", "apple"),
    ("  Dark   Blue ", "dark blue"),
    ("don't", "dont"),
    ("1,000", "1000"),
    ("yes!", "yes"),
    ("tennis_racket", "tennis racket"),
    ("A", "a"),  # an answer of articles only keeps them: the letter "a" is an answer
])
def test_spellings_of_one_answer_are_the_same_answer(given: str, truth: str) -> None:
    assert same_answer(given, truth) and same_answer(truth, given)


@pytest.mark.parametrize("given, truth", [
    ("2.5", "25"),
    ("2.5", "2 5"),
    ("fire hydrant", "hydrant"),
    ("eleven", "11"),  # only zero..ten are mapped, as in the VQA evaluation
    ("a", "the"),
    ("no", "not"),
])
def test_different_answers_stay_different(given: str, truth: str) -> None:
    assert not same_answer(given, truth)


@pytest.mark.parametrize("text, form", [
    ("The Fire-Hydrant.", "fire hydrant"),
    ("two", "2"),
    ("an apple", "apple"),
    ("2.5", "2.5"),
    ("It costs 2.5.", "it costs 2.5"),
    ("the", "the"),
    ("?!", ""),
])
def test_normal_forms(text: str, form: str) -> None:
    assert normalise_answer(text) == form
    assert normalise_answer(form) == form  # idempotent


def test_the_built_in_answers_are_already_normal() -> None:
    """The shipped data sets answer in single lower-case words and digits, so comparing them normalised counts
    exactly what comparing them as strings did."""
    answers = {s.answer for split in SPLITS for s in load_split(split)}
    assert {a for a in answers if normalise_answer(a) != a} == set()
