"""The paraphrase split: test samples re-asked in wording no training question uses.

It measures whether routing generalises beyond the surface form of the training questions, so it
must never feed training: the registry only builds it on request for the 'paraphrase' split.
"""
from __future__ import annotations

from dataclasses import replace

from r2t2.data.sample import Sample
from r2t2.data.wording import paraphrase

PREFIX = "paraphrase/"


def paraphrase_sample(sample: Sample) -> Sample:
    """The same image and answer under a held-out wording of the question."""
    if sample.split != "test":
        raise ValueError(f"{sample.id}: only test samples are paraphrased, got split {sample.split!r}")
    return replace(
        sample, id=PREFIX + sample.id, question=paraphrase(sample.question, sample.id), split="paraphrase",
    )
