"""easy-VQA (PyPI `easy_vqa`): colour, shape and presence questions on 64x64 images of one shape.

The official train images are divided by image id (seeded) into our train and reference splits, so
no image's questions land in both; the official test set is our test split.
"""
from __future__ import annotations

import random
from functools import cache

import easy_vqa
from PIL import Image

from r2t2.data.sample import Sample
from r2t2.data.wording import match_question

SOURCE = "easy-vqa"
TASKS: tuple[str, ...] = ("color", "shape", "presence")
SPLITS: tuple[str, ...] = ("train", "reference", "test")
REFERENCE_IMAGES = 1000  # of the 4000 official train images; the other 3000 are our train split
_SPLIT_SEED = 20250301


@cache
def _official(part: str) -> tuple[list[str], list[str], list[int], dict[int, Image.Image]]:
    """Questions, answers, image ids and RGB images of the official 'train' or 'test' part, loaded once."""
    if part == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    images = {}
    for image_id, path in paths.items():
        with Image.open(path) as image:
            images[image_id] = image.convert("RGB")
    return questions, answers, image_ids, images


def split_image_ids(split: str) -> frozenset[int]:
    """Official image ids in one of our splits (ids of the official train part for train/reference)."""
    if split not in SPLITS:
        raise ValueError(f"unknown easy-VQA split {split!r}; valid: {SPLITS}")
    if split == "test":
        return frozenset(_official("test")[3])
    train_ids = sorted(_official("train")[3])
    random.Random(_SPLIT_SEED).shuffle(train_ids)
    chosen = train_ids[:REFERENCE_IMAGES] if split == "reference" else train_ids[REFERENCE_IMAGES:]
    return frozenset(chosen)


@cache
def load_easyvqa(split: str) -> tuple[Sample, ...]:
    """All easy-VQA samples of a split; ids are 'easyvqa/<split>/<image id>/q<n-th question on it>'."""
    keep = split_image_ids(split)
    questions, answers, image_ids, images = _official("test" if split == "test" else "train")
    per_image: dict[int, int] = {}
    samples = []
    for question, answer, image_id in zip(questions, answers, image_ids, strict=True):
        if image_id not in keep:
            continue
        n = per_image.get(image_id, 0)
        per_image[image_id] = n + 1
        form, _ = match_question(question)
        samples.append(Sample(
            id=f"easyvqa/{split}/{image_id}/q{n}", image=images[image_id], question=question,
            answer=answer, task=form.task, split=split, source=SOURCE,
        ))
    return tuple(samples)
