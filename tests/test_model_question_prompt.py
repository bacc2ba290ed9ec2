"""A question asked without an image: each composed family's engine prompt is its image prompt without the visual
tokens, the prompt a text-only chat turn is answered from."""
import pytest
import torch

from r2t2.data import load_split
from r2t2.errors import QuestionTooLong
from r2t2.model import load_model


@pytest.fixture(scope="module", params=["embedded", "quartet"])
def model(request):
    return load_model(request.param)


def test_the_question_alone_is_the_image_prompt_without_its_visual_tokens(model) -> None:
    sample = load_split("test", limit=1)[0]
    query = model.encode_query(sample.image, sample.question).batch
    (full,) = model.engine_prompts(query, model.base_routing(query))
    prefix = 3 + int(query.question_lengths[0])  # [BOS], the sentence token, the question's words, [SEP]
    alone = model.question_prompt(sample.question)
    assert full.shape[0] > prefix + 1 and alone.shape == (prefix + 1, full.shape[1])
    assert torch.equal(alone, torch.cat([full[:prefix], full[-1:]]))  # then [ANS], with nothing between


def test_a_question_too_long_is_refused_as_with_an_image(model) -> None:
    with pytest.raises(QuestionTooLong):
        model.question_prompt(" ".join(["what"] * (model.max_question_tokens + 1)))
