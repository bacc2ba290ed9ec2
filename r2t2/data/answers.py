"""The one answer normaliser: two answers are the same answer when their normalised forms are equal.

VQA-style data sets (VQAv2, GQA, OK-VQA) answer in short phrases written many ways ("The fire-hydrant.",
"fire hydrant"; "two", "2"), and a model is right when it gives the same phrase, not the same spelling.
Every place that compares answers (evaluation accuracy, which references an index keeps, the answer check,
the answer space, training reports) goes through this module, so they all agree on what "right" means.
"""
from __future__ import annotations

import re

_ARTICLES = frozenset({"a", "an", "the"})
_NUMBERS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d)")  # "1,000" is 1000
_APOSTROPHES = re.compile(r"['\u2019]")  # dropped, so "don't" and "dont" (a common VQA spelling) are one answer
# Any other punctuation or symbol separates words, except a decimal point between digits ("2.5").
_PUNCTUATION = re.compile(r"(?<!\d)\.|\.(?!\d)|[^\w\s.]|_")


def normalise_answer(text: str) -> str:
    """`text` in the form answers are compared in: lower case, digit-grouping commas and apostrophes dropped,
    other punctuation made a space (a decimal point inside a number is kept), the articles a/an/the dropped
    (unless nothing else is left: the letter "a" is an answer too), the number words zero..ten made digits,
    whitespace collapsed. Idempotent."""
    text = _APOSTROPHES.sub("", _THOUSANDS.sub("", text.lower()))
    words = _PUNCTUATION.sub(" ", text).split()
    words = [word for word in words if word not in _ARTICLES] or words
    return " ".join(_NUMBERS.get(word, word) for word in words)


def same_answer(given: str, truth: str) -> bool:
    """Whether a model's answer counts as the reference answer."""
    return normalise_answer(given) == normalise_answer(truth)
