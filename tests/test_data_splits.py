"""load_split: validation, determinism and the balanced, seeded `limit` draw."""
import r2t2  # noqa: F401

from collections import Counter

import pytest

from r2t2.data import SPLITS, TASKS, load_split
from r2t2.data.splits import _quotas


def test_unknown_split_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="paraphrase"):
        load_split("validation")


def test_unknown_task_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="digit"):
        load_split("test", tasks=["colour"])


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_bad_limit_is_rejected(limit) -> None:
    with pytest.raises(ValueError, match="limit"):
        load_split("test", limit=limit)


def test_task_filter_keeps_only_those_tasks() -> None:
    samples = load_split("reference", tasks=["color"])
    assert samples and {s.task for s in samples} == {"color"}


def test_limit_is_balanced_deterministic_and_seeded() -> None:
    first = load_split("test", tasks=["color", "presence"], limit=101, seed=3)
    again = load_split("test", tasks=["color", "presence"], limit=101, seed=3)
    other = load_split("test", tasks=["color", "presence"], limit=101, seed=4)
    assert [s.id for s in first] == [s.id for s in again] != [s.id for s in other]
    counts = Counter(s.task for s in first)
    assert len(first) == 101 and abs(counts["color"] - counts["presence"]) <= 1
    assert len({s.id for s in first}) == 101


def test_quotas_give_what_a_small_task_cannot_fill_to_the_others() -> None:
    assert _quotas({"a": 3, "b": 100, "c": 100}, 30) == {"a": 3, "b": 13, "c": 14}
    assert sum(_quotas({"a": 3, "b": 4}, 50).values()) == 7


def test_splits_and_tasks_constants() -> None:
    assert SPLITS == ("train", "reference", "test", "paraphrase")
    assert TASKS == ("color", "shape", "presence", "count", "spatial", "digit")
