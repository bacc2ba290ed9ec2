"""easy-VQA loader: task tags, the train/reference image split, caching and RGB images."""

import pytest

from r2t2.data.easyvqa import TASKS, load_easyvqa, split_image_ids


def _image_id(sample_id: str) -> int:
    return int(sample_id.split("/")[2])


@pytest.fixture(scope="module")
def splits():
    return {split: load_easyvqa(split) for split in ("train", "reference", "test")}


def test_official_train_images_split_3000_1000_by_image(splits) -> None:
    train, reference = split_image_ids("train"), split_image_ids("reference")
    assert len(train) == 3000 and len(reference) == 1000 and not train & reference
    assert {_image_id(s.id) for s in splits["train"]} == train
    assert {_image_id(s.id) for s in splits["reference"]} == reference
    assert len(split_image_ids("test")) == 1000


def test_every_official_question_is_kept_once(splits) -> None:
    assert len(splits["train"]) + len(splits["reference"]) == 38575
    assert len(splits["test"]) == 9673
    ids = [s.id for samples in splits.values() for s in samples]
    assert len(ids) == len(set(ids))


def test_task_tags_follow_the_question(splits) -> None:
    for sample in splits["test"]:
        if sample.question.startswith("what color") or "color of" in sample.question:
            assert sample.task == "color" and sample.answer not in ("yes", "no", "circle")
        elif sample.question.startswith("what"):
            assert sample.task == "shape" and sample.answer in ("circle", "rectangle", "triangle")
        else:
            assert sample.task == "presence" and sample.answer in ("yes", "no")
    assert {s.task for s in splits["train"]} == set(TASKS)


def test_images_are_shared_rgb_64_and_cached(splits) -> None:
    by_image = {}
    for sample in splits["train"][:200]:
        assert sample.image.mode == "RGB" and sample.image.size == (64, 64)
        assert by_image.setdefault(_image_id(sample.id), sample.image) is sample.image
    assert load_easyvqa("train") is splits["train"]


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="reference"):
        split_image_ids("validation")
