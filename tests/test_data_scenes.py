"""Generated scenes: counts match the drawn shapes, shapes never touch, spatial answers agree."""

from collections import Counter, defaultdict

import numpy as np
import pytest
from scipy import ndimage

from r2t2.data.scenes import IMAGES, load_scenes
from r2t2.data.wording import SHAPE_NAMES, match_question


@pytest.fixture(scope="module")
def test_scenes():
    return load_scenes("test")


def _by_image(samples):
    groups = defaultdict(list)
    for sample in samples:
        groups[sample.id.rsplit("/", 1)[0]].append(sample)
    return groups


def _blobs(image) -> int:
    pixels = np.asarray(image).astype(int)
    foreground = np.abs(pixels - pixels[0, 0]).sum(axis=2) > 0
    return ndimage.label(foreground)[1]


def test_sizes_and_two_questions_per_image(test_scenes) -> None:
    groups = _by_image(test_scenes)
    assert len(groups) == IMAGES["test"] == 1500
    assert all(len(questions) == 2 for questions in groups.values())
    assert Counter(s.task for s in test_scenes) == {"count": 1500, "spatial": 1500}


def test_count_answer_equals_separate_shapes_drawn(test_scenes) -> None:
    counts = [s for s in test_scenes if s.task == "count"][::2]
    assert {s.answer for s in counts} == {"1", "2", "3", "4", "5"}
    for sample in counts[:300]:
        assert _blobs(sample.image) == int(sample.answer)


def test_pair_images_hold_two_shapes_and_answers_agree(test_scenes) -> None:
    yes_no = Counter()
    for questions in _by_image(s for s in test_scenes if s.task == "spatial").values():
        assert _blobs(questions[0].image) == 2
        which, compare = questions
        which_form, _ = match_question(which.question)
        form, slots = match_question(compare.question)
        assert slots["shape"] != slots["other"] and which.answer in SHAPE_NAMES
        first_is_left = (compare.answer == "yes") == (form.kind == "left_of")
        left = slots["shape"] if first_is_left else slots["other"]
        right = slots["other"] if first_is_left else slots["shape"]
        assert which.answer == (left if which_form.kind == "leftmost" else right)
        yes_no[compare.answer] += 1
    assert 0.4 < yes_no["yes"] / sum(yes_no.values()) < 0.6


def test_generation_is_deterministic(test_scenes) -> None:
    again = load_scenes.__wrapped__("test")  # rendered anew; the shared cache (other splits' images) left as it is
    assert [(s.id, s.question, s.answer) for s in again] == [(s.id, s.question, s.answer) for s in test_scenes]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(again[:200], test_scenes[:200]))


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="reference"):
        load_scenes("paraphrase")
