"""The words training questions use, so held-out wording can be checked against them."""
from __future__ import annotations

from r2t2.data.splits import load_split
from r2t2.data.wording import question_words


def training_vocabulary() -> set[str]:
    """Every word of every train-split question (lower-case, trailing '?' dropped)."""
    return {word for sample in load_split("train") for word in question_words(sample.question)}
