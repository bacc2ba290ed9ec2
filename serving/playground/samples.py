"""One-click examples for the playground: a few easy-VQA test questions with their images as data URLs."""
from __future__ import annotations

import base64
import functools

# easy-VQA test questions (index into get_test_questions()) on six different images, mixing the three
# kinds of question the shipped models answer: shape, colour, presence.
SAMPLE_QUESTIONS = (0, 11, 27, 26, 44, 75)


@functools.cache
def easy_vqa_samples() -> tuple[dict[str, str], ...]:
    """Each sample's id, question, expected answer and PNG image as a data URL (read once per process)."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    samples = []
    for index in SAMPLE_QUESTIONS:
        with open(paths[image_ids[index]], "rb") as handle:
            image = "data:image/png;base64," + base64.b64encode(handle.read()).decode()
        samples.append({"id": f"easy-vqa-test-{index}", "question": questions[index], "answer": answers[index],
                        "image": image})
    return tuple(samples)
