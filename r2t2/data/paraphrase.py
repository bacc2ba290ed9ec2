"""The paraphrase split: test samples re-asked in wording no training question uses; paraphrase-val; rephrased.

The paraphrase split measures whether routing generalises beyond the surface form of the training
questions, so it must never feed training nor tuning: the registry only builds it on request.
paraphrase-val is where R2-T2's own choices (neighbour embedder, guard thresholds) are tuned: a third
set of wordings (shared with neither training nor the paraphrase split) asked about train-split
images, which are neither test images nor in any reference index (indexes are built from the
reference split, whose images are disjoint from train's). rephrased re-asks the test samples in a second held-out
family of wordings, with words and sentence shapes of its own, so that a claim made on paraphrase can be checked on
wording that nothing was ever chosen on.
"""
from __future__ import annotations

from dataclasses import replace

from r2t2.data.sample import Sample
from r2t2.data.wording import paraphrase

PREFIX = "paraphrase/"
VAL_PREFIX = "paraphrase-val/"
REPHRASED_PREFIX = "rephrased/"


def paraphrase_sample(sample: Sample) -> Sample:
    """The same image and answer under a held-out wording of the question."""
    if sample.split != "test":
        raise ValueError(f"{sample.id}: only test samples are paraphrased, got split {sample.split!r}")
    return replace(
        sample, id=PREFIX + sample.id, question=paraphrase(sample.question, sample.id), split="paraphrase",
    )


def validation_sample(sample: Sample) -> Sample:
    """A train sample's image and answer under a paraphrase-val wording of its question."""
    if sample.split != "train":
        raise ValueError(f"{sample.id}: only train samples make paraphrase-val, got split {sample.split!r}")
    return replace(
        sample, id=VAL_PREFIX + sample.id, question=paraphrase(sample.question, sample.id, "validation"),
        split="paraphrase-val",
    )


def rephrased_sample(sample: Sample) -> Sample:
    """The same test image and answer under the second held-out wording family."""
    if sample.split != "test":
        raise ValueError(f"{sample.id}: only test samples are rephrased, got split {sample.split!r}")
    return replace(
        sample, id=REPHRASED_PREFIX + sample.id, question=paraphrase(sample.question, sample.id, "heldout"),
        split="rephrased",
    )
