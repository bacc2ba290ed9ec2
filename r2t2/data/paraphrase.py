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


def _reworded(sample: Sample, source: str, prefix: str, wordings: str, split: str) -> Sample:
    """The same image and answer, the question in another family of wordings (`wordings`, see wording.py)."""
    if sample.split != source:
        raise ValueError(f"{sample.id}: {split} rewords {source} samples only, got split {sample.split!r}")
    return replace(sample, id=prefix + sample.id, question=paraphrase(sample.question, sample.id, wordings),
                   split=split)


def paraphrase_sample(sample: Sample) -> Sample:
    """A test sample's image and answer under a held-out wording of the question."""
    return _reworded(sample, "test", PREFIX, "paraphrased", "paraphrase")


def validation_sample(sample: Sample) -> Sample:
    """A train sample's image and answer under a paraphrase-val wording of its question."""
    return _reworded(sample, "train", VAL_PREFIX, "validation", "paraphrase-val")


def rephrased_sample(sample: Sample) -> Sample:
    """A test sample's image and answer under the second held-out wording family."""
    return _reworded(sample, "test", REPHRASED_PREFIX, "heldout", "rephrased")
