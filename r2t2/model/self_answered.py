"""A reference set labelled with a model's own greedy answers.

The default index keeps only the references a model answers correctly. A model whose weights are random (a
skeleton, `r2t2.model.skeleton`) is right by chance alone and would keep almost nothing; labelled with its own
answers it keeps (almost) every reference, so its index measures what re-routing costs at the model's widths,
never its accuracy.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from r2t2.data.sample import Sample
from r2t2.model.image_text_model import ImageTextModel


def self_answered(model: ImageTextModel, samples: Sequence[Sample], batch: int = 64) -> list[Sample]:
    """`samples` relabelled with the model's greedy answers, asked as the index build asks them (`batch` at a
    time, the routers deciding); one it answers with no word (special tokens only) is left out, since a
    reference's answer is a word."""
    labelled: list[Sample] = []
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        joined = model.join_batches([model.encode_query(s.image, s.question).batch for s in chunk])
        answers = model.answer(joined, torch.zeros(model.routing_shape))  # no row pinned: the routing is unread
        labelled += [dataclasses.replace(s, answer=a) for s, a in zip(chunk, answers, strict=True) if a]
    return labelled


def write_references(samples: Sequence[Sample], path: Path) -> None:
    """A JSONL reference set (`r2t2.data.jsonl`), each image a PNG in a folder named after the file, beside it."""
    path = Path(path)
    images = path.with_suffix("")
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, sample in enumerate(samples):
        image = f"{images.name}/{n:05d}.png"
        sample.image.save(path.parent / image)
        lines.append(json.dumps({"id": sample.id, "image": image, "question": sample.question,
                                 "answer": sample.answer, "task": sample.task}))
    path.write_text("\n".join(lines) + "\n")
