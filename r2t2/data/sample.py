"""The one sample format every data set produces, so training, indexing and evaluation share code."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from r2t2.data.answers import normalise_answer

TASKS: tuple[str, ...] = ("color", "shape", "presence", "count", "spatial", "digit")
SPLITS: tuple[str, ...] = ("train", "reference", "test", "paraphrase", "paraphrase-val", "rephrased")
SOURCES: tuple[str, ...] = ("easy-vqa", "scenes", "digits", "jsonl", "feedback")
USER: str = "user"  # task and split of samples a user brings in a JSONL file


@dataclass(frozen=True)
class Sample:
    """One question about one image with its answer: a word or a short phrase, kept as the data set writes it
    (answers are compared through `r2t2.data.answers.normalise_answer`, never as raw strings).

    Questions on the same image share one PIL image object; treat it as read-only, since the
    loaders cache samples and hand the same objects to every caller.
    """

    id: str
    image: Image.Image
    question: str
    answer: str
    task: str
    split: str
    source: str

    def __post_init__(self) -> None:
        # Checked here so no loader (or user file) can produce a sample the model cannot consume.
        if not self.id:
            raise ValueError("sample id must be non-empty")
        if self.task not in TASKS + (USER,):
            raise ValueError(f"{self.id}: unknown task {self.task!r}; valid: {TASKS + (USER,)}")
        if self.split not in SPLITS + (USER,):
            raise ValueError(f"{self.id}: unknown split {self.split!r}; valid: {SPLITS + (USER,)}")
        if self.source not in SOURCES:
            raise ValueError(f"{self.id}: unknown source {self.source!r}; valid: {SOURCES}")
        if not self.question.strip():
            raise ValueError(f"{self.id}: question must be non-empty")
        if self.answer != self.answer.strip() or not normalise_answer(self.answer):
            raise ValueError(f"{self.id}: answer must be stripped text that is not empty once normalised (not only "
                             f"punctuation), got {self.answer!r}")
        if self.image.mode != "RGB":
            raise ValueError(f"{self.id}: image must be RGB, got mode {self.image.mode!r}")
