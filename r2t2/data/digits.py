"""Handwritten digits: scikit-learn's 1797 real 8x8 scans, rendered into 64x64 colour images.

The scans (not the renders) are divided between splits, so no handwriting sample is seen in two
splits. Random size, position and colours make the image encoder do real work to read the digit.
"""
from __future__ import annotations

import random
from functools import cache

import numpy as np
from PIL import Image

from r2t2.data.sample import Sample
from r2t2.data.wording import FORMS_BY_KIND

SOURCE = "digits"
TASKS: tuple[str, ...] = ("digit",)
SCANS: dict[str, int] = {"train": 1100, "reference": 300, "test": 397}
RENDERS: dict[str, int] = {"train": 3, "reference": 1, "test": 1}
SIZE = 64
_SPLIT_SEED = 8801
_RENDER_SEEDS: dict[str, int] = {"train": 8811, "reference": 8822, "test": 8833}


@cache
def _scans() -> tuple[np.ndarray, np.ndarray]:
    """All 8x8 scans (grey levels 0-16) and their labels, read once from scikit-learn."""
    from sklearn import datasets  # here: importing scikit-learn takes a second, and most callers never read digits

    bunch = datasets.load_digits()
    return bunch.images, bunch.target


def split_scan_ids(split: str) -> tuple[int, ...]:
    """Indices (into scikit-learn's scans) of the scans that belong to a split."""
    if split not in SCANS:
        raise ValueError(f"unknown digits split {split!r}; valid: {tuple(SCANS)}")
    order = list(range(len(_scans()[0])))
    random.Random(_SPLIT_SEED).shuffle(order)
    start = sum(SCANS[name] for name in tuple(SCANS)[: tuple(SCANS).index(split)])
    return tuple(order[start:start + SCANS[split]])


def render(scan: np.ndarray, rng: random.Random) -> Image.Image:
    """One scan as dark ink on a light background, upscaled to 24-40 px at a random position."""
    side = rng.randint(24, 40)
    ink_mask = Image.fromarray(np.round(scan * (255 / 16)).astype(np.uint8), "L").resize(
        (side, side), Image.Resampling.BILINEAR
    )
    background = tuple(rng.randint(200, 255) for _ in range(3))
    ink = tuple(rng.randint(0, 80) for _ in range(3))
    x, y = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
    image = Image.new("RGB", (SIZE, SIZE), background)
    image.paste(ink, (x, y, x + side, y + side), mask=ink_mask)
    return image


@cache
def load_digits(split: str) -> tuple[Sample, ...]:
    """All digit samples of a split; ids are 'digits/<split>/<scan index>/r<render>'."""
    scan_ids = split_scan_ids(split)  # validates the split
    images, labels = _scans()
    rng = random.Random(_RENDER_SEEDS[split])
    samples = []
    for scan_id in scan_ids:
        for n in range(RENDERS[split]):
            samples.append(Sample(
                id=f"digits/{split}/{scan_id}/r{n}", image=render(images[scan_id], rng),
                question=rng.choice(FORMS_BY_KIND["digit"].asked), answer=str(labels[scan_id]),
                task="digit", split=split, source=SOURCE,
            ))
    return tuple(samples)
