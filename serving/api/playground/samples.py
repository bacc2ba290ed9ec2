"""One-click examples for the playground: a few easy-VQA test questions with their images as data URLs.

The first is a question reworded as no training question is (r2t2's paraphrase split): the embedded
model's router alone answers it wrong, and re-routing toward its neighbours' routing answers it right.
README.md and docs/api.md start with it.
"""
from __future__ import annotations

import base64
import functools

# easy-VQA test questions (sample ids of r2t2's test split) asked in another wording first.
REWORDED = ("easyvqa/test/871/q4",)
# easy-VQA test questions (index into get_test_questions()) on six different images, mixing the three
# kinds of question the shipped models answer: shape, colour, presence.
SAMPLE_QUESTIONS = (0, 11, 27, 26, 44, 75)


def _data_url(path: str) -> str:
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode()


@functools.cache
def easy_vqa_samples() -> tuple[dict[str, str], ...]:
    """Each sample's id, question, expected answer and PNG image as a data URL (read once per process); a
    reworded one also says the question it rewords (`reworded_from`)."""
    import easy_vqa

    from r2t2.data.easyvqa import load_easyvqa
    from r2t2.data.paraphrase import paraphrase_sample

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    test = {sample.id: sample for sample in load_easyvqa("test")}
    samples = []
    for sample_id in REWORDED:
        original = test[sample_id]
        reworded = paraphrase_sample(original)
        image_id = int(sample_id.split("/")[2])
        samples.append({"id": reworded.id, "question": reworded.question, "answer": reworded.answer,
                        "image": _data_url(paths[image_id]), "reworded_from": original.question})
    for index in SAMPLE_QUESTIONS:
        samples.append({"id": f"easy-vqa-test-{index}", "question": questions[index], "answer": answers[index],
                        "image": _data_url(paths[image_ids[index]])})
    return tuple(samples)
