"""OpenAI compatibility at the level of vLLM's server, driven by the official `openai` client.

Every sampling parameter common clients send (stop, seed, logprobs/top_logprobs, n, penalties, user,
max_completion_tokens), streaming, conversations, refusals (response_format, tools) and the epsilon-ball
neighbourhood, against the session's shared real server (tests/conftest.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow


def _client(real_server: RealServer, prefix: str = ""):  # noqa: ANN202 (openai is imported lazily)
    import openai

    return openai.OpenAI(base_url=real_server.base + prefix + "/v1", api_key="unused", max_retries=0, timeout=300)


def _question(question: str, url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_sampling_parameters_are_honoured(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    client, model = _client(real_server), real_server.model
    question, _, url = easy_vqa_cases(1)[0]
    none = {"r2t2": {"strategy": "none"}}
    greedy = client.chat.completions.create(model=model, messages=_question(question, url), max_tokens=4,
                                            temperature=0, extra_body=none)
    answer = greedy.choices[0].message.content
    assert greedy.choices[0].logprobs is None and len(answer) >= 2

    # stop: the text ends before the stop string, finish_reason says so.
    stopped = client.chat.completions.create(model=model, messages=_question(question, url), max_tokens=4,
                                             temperature=0, stop=[answer[1]], extra_body=none)
    assert stopped.choices[0].message.content == answer[:answer.index(answer[1])]
    assert stopped.choices[0].finish_reason == "stop"

    # n, seed, logprobs, penalties, user, max_completion_tokens together; the same seed gives the same choices.
    asked = dict(model=model, messages=_question(question, url), max_completion_tokens=3, temperature=1.5, n=3,
                 seed=11, logprobs=True, top_logprobs=2, presence_penalty=0.5, frequency_penalty=0.5, user="u-1",
                 extra_body=none)
    sampled = client.chat.completions.create(**asked)
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    assert sampled.usage.completion_tokens == sum(len(c.logprobs.content) for c in sampled.choices)
    for choice in sampled.choices:
        assert 1 <= len(choice.logprobs.content) <= 3 and choice.finish_reason in ("stop", "length")
        for token in choice.logprobs.content:
            assert token.logprob <= 0 and len(token.top_logprobs) == 2
            assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
            assert token.logprob <= token.top_logprobs[0].logprob + 1e-4
    again = client.chat.completions.create(**asked)
    assert [c.message.content for c in again.choices] == [c.message.content for c in sampled.choices]

    # Penalties are applied the same way by both engines (the torch backend serves /torch).
    penalised = dict(model=model, messages=_question(question, url), max_tokens=6, temperature=0,
                     presence_penalty=2.0, frequency_penalty=2.0, extra_body=none)
    vllm_text = client.chat.completions.create(**penalised).choices[0].message.content
    assert _client(real_server, "/torch").chat.completions.create(**penalised).choices[0].message.content == vllm_text


def test_streaming_with_choices_and_logprobs_matches_the_plain_reply(real_server: RealServer,
                                                                     easy_vqa_cases: Cases) -> None:
    client, model = _client(real_server), real_server.model
    question, _, url = easy_vqa_cases(2)[1]
    asked = dict(model=model, messages=_question(question, url), max_tokens=3, temperature=1.0, n=2, seed=5,
                 logprobs=True, top_logprobs=1, extra_body={"r2t2": {"strategy": "ngd", "steps": 2}})
    plain = client.chat.completions.create(**asked)
    texts, tokens, finishes, records = ["", ""], [0, 0], [None, None], []
    for chunk in client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            tokens[choice.index] += len(choice.logprobs.content) if choice.logprobs else 0
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
        if chunk.model_extra.get("r2t2"):
            records.append(chunk)
    assert texts == [c.message.content for c in plain.choices]
    assert finishes == [c.finish_reason for c in plain.choices]
    assert tokens == [len(c.logprobs.content) for c in plain.choices]
    assert len(records) == 1 and records[0].usage.completion_tokens == plain.usage.completion_tokens
    assert records[0].model_extra["r2t2"]["routing"] == plain.model_extra["r2t2"]["routing"]


def test_a_conversation_answers_its_last_question_about_its_image(real_server: RealServer,
                                                                  easy_vqa_cases: Cases) -> None:
    client, model = _client(real_server), real_server.model
    (first, first_answer, url), (second, _, _) = easy_vqa_cases(2)
    none = {"r2t2": {"strategy": "none"}}
    alone = client.chat.completions.create(model=model, messages=_question(second, url), max_tokens=4,
                                           temperature=0, extra_body=none)
    conversation = [{"role": "system", "content": "answer in one word"}, *_question(first, url),
                    {"role": "assistant", "content": first_answer}, {"role": "user", "content": second}]
    follow_up = client.chat.completions.create(model=model, messages=conversation, max_tokens=4, temperature=0,
                                               extra_body=none)
    assert follow_up.choices[0].message.content == alone.choices[0].message.content


def test_refusals_name_the_field(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    import openai

    client, model = _client(real_server), real_server.model
    question, _, url = easy_vqa_cases(1)[0]
    refused = [({"response_format": {"type": "json_object"}}, "response_format", "free text"),
               ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "tool"),
               ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]},
                "messages.0.content", "no question text")]
    for extra, param, fragment in refused:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**{"model": model, "messages": _question(question, url), "max_tokens": 2,
                                              **extra})
        assert caught.value.body["param"] == param and fragment in caught.value.body["message"]


def test_epsilon_neighbourhood_over_http(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    client, model = _client(real_server), real_server.model
    question, _, url = easy_vqa_cases(1)[0]

    def record(epsilon: float) -> dict:
        # Worded like no reference question, so no reference sits at distance 0 (easy-VQA repeats questions).
        reply = client.chat.completions.create(
            model=model, messages=_question(f"please tell me {question}", url), max_tokens=2, temperature=0,
            extra_body={"r2t2": {"strategy": "kernel", "k": 8, "neighbourhood": "epsilon", "epsilon": epsilon}})
        return reply.model_extra["r2t2"]

    wide, tiny = record(1.5), record(1e-6)
    assert wide["neighbours"]  # the ball's size is the pipeline's (it reads up to 64 candidates), not k
    assert all(n["distance"] <= 1.5 + 1e-4 for n in wide["neighbours"])
    assert tiny["neighbours"] == [] and tiny["fallback"] and tiny["routing"] == tiny["base_routing"]
