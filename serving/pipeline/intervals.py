"""95 % intervals for accuracies: a bootstrap over questions (the questions are the sample; the model is fixed).

Seeded, so a report gives the same interval every time it is made from the same answers.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DRAWS = 2000
LEVEL = 0.95


def _bounds(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return round(float(low), 1), round(float(high), 1)


def _draws(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, size=(DRAWS, count))


def accuracy_interval(correct: Sequence[bool], seed: int = 0) -> tuple[float, float] | None:
    """The 95 % interval of an accuracy in percent (None for no questions)."""
    flags = np.asarray(correct, dtype=float)
    if flags.size == 0:
        return None
    return _bounds(100 * flags[_draws(flags.size, seed)].mean(1))


def paired_interval(correct: Sequence[bool], baseline: Sequence[bool], seed: int = 0) -> tuple[float, float] | None:
    """The 95 % interval of the accuracy difference (percentage points) to a baseline answered on the same
    questions: each draw takes the same questions for both."""
    a, b = np.asarray(correct, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired answers differ in count: {a.size} and {b.size}")
    if a.size == 0:
        return None
    draws = _draws(a.size, seed)
    return _bounds(100 * (a[draws].mean(1) - b[draws].mean(1)))
