"""Encoding a batch of requests in one pass gives each request what encoding it alone gives: its routing,
LM rows included, to 1e-6 (measured 5e-7), its features to float rounding.

`encode_queries` runs the experts, MiniLM, the router and the LM rows' forward once per batch; these tests
hold every part of each request's result to `encode_query` plus `base_routing` on that request alone, for
the Mixtral family (lean forward) and the OLMoE one (transformers' forward), and check that a question too
long fails in its own slot only.
"""
import numpy as np
import pytest
import torch

from r2t2.data import load_split
from r2t2.errors import QuestionTooLong
from r2t2.model import RoutedQuery, load_model

TOO_LONG = " ".join(["what"] * 200) + " colour is it?"


@pytest.fixture(scope="module", params=["embedded", "quartet"])
def model(request):
    return load_model(request.param)


def requests() -> tuple[list, list[str], list[str | None]]:
    """Eight questions of different lengths and images, one too long in the middle, two with labels."""
    samples = load_split("paraphrase", limit=8, seed=4)
    images = [s.image for s in samples]
    questions = [s.question for s in samples]
    answers: list[str | None] = [None] * len(samples)
    answers[1], answers[6] = samples[1].answer, samples[6].answer  # what the oracle's queries carry
    images.insert(4, samples[0].image)
    questions.insert(4, TOO_LONG)
    answers.insert(4, None)
    return images, questions, answers


def test_each_request_of_a_batch_is_encoded_as_it_is_alone(model) -> None:
    images, questions, answers = requests()
    assert len({len(q.split()) for q in questions}) > 2  # padding is exercised
    together = model.encode_queries(images, questions, answers)
    assert len(together) == len(questions)
    assert isinstance(together[4], QuestionTooLong)
    lone_routings, lone_features = [], []
    for i, joint in enumerate(together):
        if i == 4:
            continue
        assert isinstance(joint, RoutedQuery)
        alone = model.encode_query(images[i], questions[i], answers[i])
        r0 = model.base_routing(alone.batch)
        a, b = alone.batch, joint.encoded.batch
        assert len(b) == 1
        for name in ("question_ids", "question_lengths", "answer_ids"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (i, name)
        # The experts' features are float32 sums over many terms, up to ~20 in size, and a batched convolution
        # adds them in another order: they agree to float rounding of their scale (measured 1.7e-6 of it).
        scale = a.features.abs().max()
        assert torch.allclose(a.features, b.features, atol=4e-6 * scale, rtol=0), (i, (a.features - b.features).abs().max())
        assert torch.allclose(a.question_embeddings, b.question_embeddings, atol=1e-6, rtol=0)
        assert np.allclose(alone.question_embedding, joint.encoded.question_embedding, atol=1e-6, rtol=0)
        assert joint.encoded.question_embedder == alone.question_embedder
        assert joint.base_routing.shape == r0.shape == model.routing_shape
        assert torch.allclose(joint.base_routing, r0, atol=1e-6, rtol=0), (i, (joint.base_routing - r0).abs().max())
        assert torch.allclose(model.prompt_embeds(a, r0)[0], model.prompt_embeds(b, joint.base_routing)[0],
                              atol=1e-5, rtol=0)
        lone_routings.append(r0)
        lone_features.append(a.features)
    # The requests differ from each other (images, LM rows), so a batch that mixed them up would fail above.
    for j in range(1, len(lone_routings)):
        assert not torch.allclose(lone_features[0], lone_features[j], atol=1e-3)
    assert len({tuple(r.flatten().round(decimals=4).tolist()) for r in lone_routings}) > 1


def test_a_batch_of_only_bad_questions_fails_each_alone(model) -> None:
    image = load_split("test", limit=1)[0].image
    outcomes = model.encode_queries([image, image], [TOO_LONG, TOO_LONG + " really"], [None, None])
    assert all(isinstance(o, QuestionTooLong) for o in outcomes)
