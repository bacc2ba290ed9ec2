"""Generated scenes: counting and left/right questions that easy-VQA's one-shape images cannot ask.

Each split draws from its own seed, and every image is built from continuous random choices, so the
splits share no image. Half the images hold 1-5 non-overlapping shapes (count questions); the other
half hold two different shapes side by side at independent heights (spatial questions).
"""
from __future__ import annotations

import random
from functools import cache

from PIL import Image, ImageDraw

from r2t2.data.sample import Sample
from r2t2.data.wording import FORMS_BY_KIND, SHAPE_NAMES

SOURCE = "scenes"
TASKS: tuple[str, ...] = ("count", "spatial")
IMAGES: dict[str, int] = {"train": 6000, "reference": 1500, "test": 1500}
_SEEDS: dict[str, int] = {"train": 7101, "reference": 7202, "test": 7303}
SIZE = 64
MAX_SHAPES = 5
# easy-VQA's colours, so the scenes look like the images the colour and shape questions are about.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0),
    "gray": (128, 128, 128), "teal": (0, 128, 128), "brown": (165, 42, 42), "yellow": (255, 255, 0),
}
Box = tuple[int, int, int, int]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, color: str, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    fill = COLOR_RGB[color]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "rectangle":
        width, height = rng.randint((x1 - x0) * 3 // 5, x1 - x0), rng.randint((y1 - y0) * 3 // 5, y1 - y0)
        draw.rectangle((x0, y0, x0 + width, y0 + height), fill=fill)
    else:
        draw.polygon([(x0, y1), (x1, y1), (rng.randint(x0, x1), y0)], fill=fill)


def _overlaps(a: Box, b: Box, gap: int = 2) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def _free_box(rng: random.Random, taken: list[Box], x_range: tuple[int, int]) -> Box:
    """A random square box inside x_range (left edge bounds) that keeps clear of the taken boxes."""
    while True:  # at most 5 boxes of <= 16 px in 64x64: a free spot is found within a few tries
        side = rng.randint(10, 16)
        x0 = rng.randint(x_range[0], x_range[1] - side)
        y0 = rng.randint(2, SIZE - 2 - side)
        box = (x0, y0, x0 + side, y0 + side)
        if not any(_overlaps(box, other) for other in taken):
            return box


def _canvas(rng: random.Random) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    background = tuple(rng.randint(230, 255) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    return image, ImageDraw.Draw(image)


def _count_scene(rng: random.Random) -> tuple[Image.Image, list[tuple[str, str]]]:
    image, draw = _canvas(rng)
    boxes: list[Box] = []
    for _ in range(rng.randint(1, MAX_SHAPES)):
        boxes.append(_free_box(rng, boxes, (2, SIZE - 2)))
        _draw_shape(draw, rng.choice(SHAPE_NAMES), boxes[-1], rng.choice(tuple(COLOR_RGB)), rng)
    wordings = rng.sample(FORMS_BY_KIND["count"].asked, 2)
    return image, [(wording, str(len(boxes))) for wording in wordings]


def _pair_scene(rng: random.Random) -> tuple[Image.Image, list[tuple[str, str]]]:
    image, draw = _canvas(rng)
    left, right = rng.sample(SHAPE_NAMES, 2)
    half = SIZE // 2
    for shape, x_range in ((left, (2, half - 2)), (right, (half + 2, SIZE - 2))):
        _draw_shape(draw, shape, _free_box(rng, [], x_range), rng.choice(tuple(COLOR_RGB)), rng)
    side = rng.choice(("leftmost", "rightmost"))
    which = rng.choice(FORMS_BY_KIND[side].asked)
    relation = rng.choice(("left_of", "right_of"))
    first, second = rng.sample((left, right), 2)
    truth = (first == left) == (relation == "left_of")
    compare = rng.choice(FORMS_BY_KIND[relation].asked).format(shape=first, other=second)
    return image, [(which, left if side == "leftmost" else right), (compare, "yes" if truth else "no")]


@cache
def load_scenes(split: str) -> tuple[Sample, ...]:
    """All scene samples of a split; ids are 'scenes/<split>/<image index>/q<n>'."""
    if split not in IMAGES:
        raise ValueError(f"unknown scenes split {split!r}; valid: {tuple(IMAGES)}")
    rng = random.Random(_SEEDS[split])
    samples = []
    for index in range(IMAGES[split]):
        image, questions = (_count_scene if index % 2 == 0 else _pair_scene)(rng)
        for n, (question, answer) in enumerate(questions):
            task = "count" if index % 2 == 0 else "spatial"
            samples.append(Sample(
                id=f"scenes/{split}/{index}/q{n}", image=image, question=question, answer=answer,
                task=task, split=split, source=SOURCE,
            ))
    return tuple(samples)
