"""Digits: scans split without overlap, renders are legible and labelled with the scan's digit."""

from collections import Counter

import numpy as np
import pytest

from r2t2.data.digits import RENDERS, SCANS, _scans, load_digits, split_scan_ids


def _scan_id(sample_id: str) -> int:
    return int(sample_id.split("/")[2])


@pytest.fixture(scope="module")
def splits():
    return {split: load_digits(split) for split in SCANS}


def test_scans_split_1100_300_397_without_overlap() -> None:
    ids = {split: set(split_scan_ids(split)) for split in SCANS}
    assert [len(ids[s]) for s in SCANS] == [1100, 300, 397]
    assert set().union(*ids.values()) == set(range(1797))


def test_renders_per_scan_and_labels(splits) -> None:
    _, labels = _scans()
    for split, samples in splits.items():
        per_scan = Counter(_scan_id(s.id) for s in samples)
        assert set(per_scan) == set(split_scan_ids(split))
        assert set(per_scan.values()) == {RENDERS[split]}
        assert all(s.answer == str(labels[_scan_id(s.id)]) for s in samples)
        assert {s.answer for s in samples} == {str(d) for d in range(10)}


def test_renders_are_not_blank_and_vary(splits) -> None:
    for sample in splits["train"][:300]:
        pixels = np.asarray(sample.image).astype(int)
        assert sample.image.size == (64, 64)
        darkness = pixels[0, 0].sum() - pixels.sum(axis=2)  # corner is background: a 24-40 px digit leaves it
        assert (darkness > 150).sum() >= 20, sample.id
    first, second = splits["train"][0].image, splits["train"][1].image
    assert first.tobytes() != second.tobytes()  # two renders of one scan differ


def test_rendering_is_deterministic(splits) -> None:
    again = load_digits.__wrapped__("test")  # rendered anew; the shared cache (other splits' images) left as it is
    assert [(s.id, s.answer, s.question) for s in again] == [(s.id, s.answer, s.question) for s in splits["test"]]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(again, splits["test"]))


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="train"):
        load_digits("paraphrase")
