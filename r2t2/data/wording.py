"""Every question wording in one place: training, held-out paraphrase (test), paraphrase-val (tuning) and a second
held-out family, rephrased (test images, new words and sentence shapes; never read for any choice).

Keeping both side by side makes the paraphrase split auditable: each paraphrase must use words that
no training question uses, while keeping the slot words (colour and shape names) the answer needs.
A question is matched back to its form so the paraphrase keeps the form's meaning and polarity.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cache

COLOR_NAMES: tuple[str, ...] = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPE_NAMES: tuple[str, ...] = ("circle", "rectangle", "triangle")
_SLOT_VALUES: dict[str, tuple[str, ...]] = {"color": COLOR_NAMES, "shape": SHAPE_NAMES, "other": SHAPE_NAMES}


@dataclass(frozen=True)
class QuestionForm:
    """One meaning of a question, worded several ways for training and several others for paraphrase."""

    kind: str
    task: str
    asked: tuple[str, ...]
    paraphrased: tuple[str, ...]
    validation: tuple[str, ...]  # the paraphrase-val split's: tuning wording, shared with neither of the above
    # The rephrased split's: new words and new sentence shapes, written to hold out; no setting is chosen on it.
    heldout: tuple[str, ...]


FORMS: tuple[QuestionForm, ...] = (
    # easy-VQA: `asked` must reproduce the official questions exactly (checked when loading).
    QuestionForm("color_any", "color",
                 ("what color is the shape?", "what is the color of the shape?"),
                 ("which hue does the figure have?", "name the hue of the figure"),
                 ("what tint has the object got?", "tell me the tone of this object"),
                 ("looking at this drawing which pigment fills the thing?", "the thing in view is coloured how")),
    QuestionForm("color_of_shape", "color",
                 ("what color is the {shape}?", "what is the color of the {shape}?"),
                 ("which hue does the {shape} have?", "name the hue used for the {shape}"),
                 ("what tint has the {shape} got?", "tell me the tone of this {shape}"),
                 ("looking at the {shape} which pigment fills it?", "the {shape} in view is coloured how")),
    QuestionForm("shape_any", "shape",
                 ("what shape is in the image?", "what shape does the image contain?", "what shape is present?"),
                 ("which figure appears in the picture?", "name the form drawn in the picture"),
                 ("what kind of object is drawn here?", "identify the outline in this graphic"),
                 ("judging by its contour what sort of thing rests in view?", "describe by its contour the thing in view")),
    QuestionForm("shape_of_color", "shape",
                 ("what is the {color} shape?",),
                 ("which form is painted {color}?", "name the form of the {color} figure"),
                 ("what kind of object is {color}?", "identify the {color} outline"),
                 ("judging by its contour what sort of thing is coloured {color}?",
                  "the {color} thing in view has which contour")),
    QuestionForm("presence_color", "presence",
                 ("is a {color} shape present?", "is there a {color} shape?",
                  "does the image contain a {color} shape?", "is there a {color} shape in the image?"),
                 ("can you spot any {color} figure?", "does the picture include a {color} figure?"),
                 ("do you notice a {color} object?", "is any {color} item visible here?"),
                 ("would i find something coloured {color} in view?", "among the things in view is one coloured {color}")),
    QuestionForm("absence_color", "presence",
                 ("is no {color} shape present?", "is there not a {color} shape?",
                  "does the image not contain a {color} shape?", "is there not a {color} shape in the image?"),
                 ("is the picture lacking any {color} figure?", "does the picture lack a {color} figure?"),
                 ("is a {color} object absent here?", "is no {color} item visible here?"),
                 ("would i fail to find something coloured {color} in view?",
                  "among the things in view is none coloured {color}")),
    QuestionForm("presence_shape", "presence",
                 ("is a {shape} present?", "is there a {shape}?",
                  "does the image contain a {shape}?", "is there a {shape} in the image?"),
                 ("can you spot a {shape} anywhere?", "does the picture include a {shape}?"),
                 ("do you notice a {shape} here?", "is any {shape} visible in this graphic?"),
                 ("would i find a {shape} in view?", "among the things in view is one a {shape}")),
    QuestionForm("absence_shape", "presence",
                 ("is no {shape} present?", "is there not a {shape}?",
                  "does the image not contain a {shape}?", "is there not a {shape} in the image?"),
                 ("is the picture missing a {shape}?", "does the picture lack a {shape}?"),
                 ("is a {shape} absent here?", "is no {shape} visible in this graphic?"),
                 ("would i fail to find a {shape} in view?", "among the things in view is none a {shape}")),
    # scenes
    QuestionForm("count", "count",
                 ("how many shapes are in the image?", "how many shapes does the image contain?",
                  "what is the number of shapes in the image?"),
                 ("tally the objects you can see", "count every figure in the picture",
                  "how many figures appear in this picture?"),
                 ("what quantity of objects is drawn here?", "give the total of items in this graphic"),
                 ("adding them up how many things rest in view?", "the things in view add up to how many")),
    QuestionForm("leftmost", "spatial",
                 ("what shape is on the left?", "what is the shape on the left?"),
                 ("which figure sits leftmost?", "name the leftmost figure"),
                 ("identify the westernmost object", "what object comes first from the west side?"),
                 ("starting at the far left edge what sort of thing do i meet earliest?",
                  "the thing nearest the left edge has which contour")),
    QuestionForm("rightmost", "spatial",
                 ("what shape is on the right?", "what is the shape on the right?"),
                 ("which figure sits rightmost?", "name the rightmost figure"),
                 ("identify the easternmost object", "what object comes last toward the east side?"),
                 ("starting at the far right edge what sort of thing do i meet earliest?",
                  "the thing nearest the right edge has which contour")),
    QuestionForm("left_of", "spatial",
                 ("is the {shape} left of the {other}?", "is the {shape} to the left of the {other}?"),
                 ("does the {shape} sit further left than the {other}?",
                  "is the {shape} placed before the {other} when reading across?"),
                 ("is the {shape} west of the {other}?", "does the {shape} lie on the western side of the {other}?"),
                 ("scanning from the left edge would i meet the {shape} ahead of the {other}?",
                  "going rightward does the {shape} turn up sooner than the {other}")),
    QuestionForm("right_of", "spatial",
                 ("is the {shape} right of the {other}?", "is the {shape} to the right of the {other}?"),
                 ("does the {shape} sit further right than the {other}?",
                  "is the {shape} placed after the {other} when reading across?"),
                 ("is the {shape} east of the {other}?", "does the {shape} lie on the eastern side of the {other}?"),
                 ("scanning from the left edge would i meet the {shape} later than the {other}?",
                  "going rightward does the {shape} turn up later than the {other}")),
    # digits
    QuestionForm("digit", "digit",
                 ("what digit is written in the image?", "what digit does the image show?",
                  "what is the digit in the image?"),
                 ("which numeral appears?", "which numeral was penned in the picture?",
                  "read the handwritten numeral"),
                 ("what number is drawn here?", "identify the scribbled number", "which integer is shown in this graphic?"),
                 ("looking at this scan which single value from zero to nine was inked?",
                  "the inked mark in view stands for which value from zero to nine")),
)
FORMS_BY_KIND: dict[str, QuestionForm] = {form.kind: form for form in FORMS}


def question_words(question: str) -> list[str]:
    """The words a word-level tokenizer sees: lower-case, trailing '?' dropped, split on whitespace."""
    return question.lower().strip().removesuffix("?").split()


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{'|'.join(_SLOT_VALUES[part])})"
        for i, part in enumerate(parts)
    )
    return re.compile(regex + r"\Z")


@cache
def _patterns() -> tuple[tuple[re.Pattern[str], QuestionForm], ...]:
    return tuple((_pattern(t), form) for form in FORMS for t in form.asked)


def match_question(question: str) -> tuple[QuestionForm, dict[str, str]]:
    """The training form a question was worded from, and its slot values; ValueError if none."""
    for pattern, form in _patterns():
        found = pattern.match(question)
        if found:
            return form, found.groupdict()
    raise ValueError(f"question {question!r} matches no known training wording")


def pick(options: tuple[str, ...], key: str) -> str:
    """A stable choice among options for a key (crc32, so it does not change between processes)."""
    return options[zlib.crc32(key.encode()) % len(options)]


def paraphrase(question: str, key: str, wordings: str = "paraphrased") -> str:
    """The question reworded with held-out vocabulary; `key` (a sample id) picks the wording stably.

    `wordings` is "paraphrased" (the paraphrase test split's), "validation" (the paraphrase-val split's) or
    "heldout" (the rephrased split's).
    """
    if wordings not in ("paraphrased", "validation", "heldout"):
        raise ValueError(f"wordings must be 'paraphrased', 'validation' or 'heldout', got {wordings!r}")
    form, slots = match_question(question)
    return pick(getattr(form, wordings), key).format(**slots)
