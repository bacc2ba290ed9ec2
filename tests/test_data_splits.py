"""load_split: validation, determinism and the balanced, seeded `limit` draw."""

from collections import Counter

import pytest

from r2t2.data import SPLITS, TASKS, digits, easyvqa, load_split, scenes, splits
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
    assert SPLITS == ("train", "reference", "test", "paraphrase", "paraphrase-val", "rephrased")
    assert TASKS == ("color", "shape", "presence", "count", "spatial", "digit")


@pytest.fixture(scope="module")
def built_in():
    return {split: load_split(split) for split in SPLITS}


def test_every_task_is_present_in_every_split(built_in) -> None:
    for split, samples in built_in.items():
        assert {s.task for s in samples} == set(TASKS), split
        assert {s.split for s in samples} == {split}


def test_ids_are_unique_and_answers_single_lower_case_words(built_in) -> None:
    ids = [s.id for samples in built_in.values() for s in samples]
    assert len(ids) == len(set(ids))
    for samples in built_in.values():
        assert all(len(s.answer.split()) == 1 and s.answer == s.answer.lower() for s in samples)
        assert all(s.image.mode == "RGB" and s.image.size == (64, 64) for s in samples)


def test_train_reference_test_share_no_image(built_in) -> None:
    contents = {
        split: {s.image.tobytes() for s in built_in[split]} for split in ("train", "reference", "test")
    }
    assert not contents["train"] & contents["reference"]
    assert not contents["train"] & contents["test"]
    assert not contents["reference"] & contents["test"]


def _origin(sample) -> str | None:
    """The official easy-VQA image or the scikit-learn scan a sample was made from."""
    if sample.source == "easy-vqa":
        part = "test" if sample.split == "test" else "train"
        return f"easy-vqa/{part}/{sample.id.split('/')[2]}"
    if sample.source == "digits":
        return f"digits/{sample.id.split('/')[2]}"
    return None


def test_train_reference_test_share_no_source_image_or_scan(built_in) -> None:
    origins = {split: {_origin(s) for s in built_in[split]} - {None} for split in ("train", "reference", "test")}
    assert not origins["train"] & origins["reference"]
    assert not origins["train"] & origins["test"]
    assert not origins["reference"] & origins["test"]


def test_rebuilding_from_scratch_gives_the_same_samples(built_in) -> None:
    for loader in (easyvqa.load_easyvqa, scenes.load_scenes, digits.load_digits, splits._paraphrased):
        loader.cache_clear()
    for split in ("reference", "paraphrase"):
        again = load_split(split)
        assert [(s.id, s.question, s.answer) for s in again] == [
            (s.id, s.question, s.answer) for s in built_in[split]]
