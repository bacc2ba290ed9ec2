"""The real all-MiniLM-L6-v2 question embedder and the image+question combination."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from indexes.embedders import MINILM_NAME, ImageQuestionEmbedder, MiniLMEmbedder, make_embedder
from tests.index_toys import ToySample


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_paraphrases_are_closer_than_other_questions(minilm: MiniLMEmbedder) -> None:
    colour, hue, count = minilm.embed_texts(
        ["what colour is the shape?", "which hue does the figure have?", "how many objects are there?"]
    )
    assert colour @ hue > colour @ count + 0.1 and colour @ hue > hue @ count + 0.1


def test_vectors_are_unit_float32_and_batch_independent(minilm: MiniLMEmbedder) -> None:
    samples = [ToySample(str(i), q, "x") for i, q in enumerate(["is it red?", "is there a circle in the image?"])]
    both = minilm.embed(samples)
    assert both.shape == (2, 384) and both.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(minilm.embed(samples[1:])[0], both[1], atol=1e-5)  # padding does not leak
    assert minilm.embed_texts([]).shape == (0, 384)
    with pytest.raises(ValueError, match="non-empty"):
        minilm.embed_texts(["ok", "  "])


def test_image_question_embedder_weighs_both_parts(minilm: MiniLMEmbedder) -> None:
    def image_embed(images):
        return np.array([[1.0, 0.0] if img.getpixel((0, 0))[0] > 0 else [0.0, 3.0] for img in images])

    embedder = ImageQuestionEmbedder(image_embed, "toy-pixels", 2, minilm)
    assert embedder.name == f"image:toy-pixels+{MINILM_NAME}" and embedder.dim == 386
    red, black = Image.new("RGB", (2, 2), (255, 0, 0)), Image.new("RGB", (2, 2))
    a, b, c = embedder.embed([ToySample("a", "is it red?", "x", image=red),
                              ToySample("b", "is it red?", "x", image=red),
                              ToySample("c", "is it red?", "x", image=black)])
    assert a @ b == pytest.approx(1.0, abs=1e-5) and a @ c == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError, match="image embedding must be"):
        ImageQuestionEmbedder(image_embed, "toy", 3, minilm).embed([ToySample("a", "q?", "x")])


def test_make_embedder_names() -> None:
    assert make_embedder("minilm").name == MINILM_NAME == make_embedder(MINILM_NAME).name
    with pytest.raises(ValueError, match="needs image_embed"):
        make_embedder("image+question")
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("nv-embed")
