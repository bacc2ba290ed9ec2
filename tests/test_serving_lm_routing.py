"""Re-routing the language model's experts through the real server, with the official `openai` client.

The vLLM app applies a request's LM rows inside its engine; the torch app (/torch, embedded only) applies
them with the transformers path. Both answer alike, every OpenAI option keeps working, and a model whose
engine cannot apply LM rows refuses the request instead of answering without them.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow
MOVE = {"strategy": "meanshift", "target": "both", "lm_strategy": "meanshift",  # pulls every row to the references'
        "answer_check": False}  # mode, the LM rows too (the shipped families move them with answer_space otherwise)


def _client(real_server: RealServer, prefix: str = ""):  # noqa: ANN202 (openai is imported lazily)
    import openai

    return openai.OpenAI(base_url=real_server.base + prefix + "/v1", api_key="unused", max_retries=0, timeout=300)


def _question(question: str, url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def _top_k(layer: dict[str, Any], k: int) -> list[str]:
    return [entry["expert"] for entry in layer["routing"][:k]]


@pytest.mark.parametrize("model_index", [0, 1])
def test_both_targets_answer_under_the_rerouted_lm_experts(real_server: RealServer, easy_vqa_cases: Cases,
                                                                      model_index: int) -> None:
    if model_index >= len(real_server.models):
        pytest.skip("the second family does not ship in this checkout")
    model = real_server.models[model_index]
    client = _client(real_server)
    k = 2  # both shipped LMs route each token to its top-2 experts
    for question, _, url in easy_vqa_cases(3):
        reply = client.chat.completions.create(model=model, messages=_question(question, url), max_tokens=4,
                                               temperature=0, extra_body={"r2t2": MOVE})
        record = reply.model_extra["r2t2"]
        assert record["lm_routing"]["applied"] is True
        for layer in record["lm_routing"]["layers"]:
            assert layer["routing"] != layer["base"]
            assert layer["engine_experts"] == _top_k(layer, k)  # what the engine itself reports it ran
            # the last prompt token, then each generated token but the last (which is never fed back)
            assert layer["engine_tokens"] == reply.usage.completion_tokens


def test_vllm_and_the_transformers_path_answer_alike_under_lm_rows(real_server: RealServer,
                                                                   easy_vqa_cases: Cases) -> None:
    vllm, torch_app = _client(real_server), _client(real_server, "/torch")
    for question, _, url in easy_vqa_cases(6):
        for options in (MOVE, {**MOVE, "target": "lm"}, {**MOVE, "target": "lm", "core_experts": 2}):
            asked = dict(model=real_server.model, messages=_question(question, url), max_tokens=4, temperature=0,
                         extra_body={"r2t2": options})
            one, other = vllm.chat.completions.create(**asked), torch_app.chat.completions.create(**asked)
            assert one.choices[0].message.content == other.choices[0].message.content
            lm_one, lm_other = (r.model_extra["r2t2"]["lm_routing"] for r in (one, other))
            assert [layer["engine_experts"] for layer in lm_one["layers"]] == \
                [layer["engine_experts"] for layer in lm_other["layers"]]


def test_lm_positions_first_routes_the_last_prompt_token_alone(real_server: RealServer,
                                                               easy_vqa_cases: Cases) -> None:
    """The request's `lm_positions` travels with its rows to either engine: each row then routes one token, the
    one that gives the first answer token, and the vLLM and torch apps answer alike."""
    vllm, torch_app = _client(real_server), _client(real_server, "/torch")
    for question, _, url in easy_vqa_cases(3):
        asked = dict(model=real_server.model, messages=_question(question, url), max_tokens=4, temperature=0,
                     extra_body={"r2t2": {**MOVE, "lm_positions": "first"}})
        one, other = vllm.chat.completions.create(**asked), torch_app.chat.completions.create(**asked)
        assert one.choices[0].message.content == other.choices[0].message.content
        for reply in (one, other):
            lm = reply.model_extra["r2t2"]["lm_routing"]
            assert lm["applied"] is True and {layer["engine_tokens"] for layer in lm["layers"]} == {1}


def test_streaming_n_seed_logprobs_and_stop_work_with_lm_rows(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    client = _client(real_server)
    question, _, url = easy_vqa_cases(1)[0]
    base = dict(model=real_server.model, messages=_question(question, url), max_tokens=4, extra_body={"r2t2": MOVE})
    plain = client.chat.completions.create(temperature=0, **base)
    chunks = list(client.chat.completions.create(temperature=0, stream=True, **base))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].model_extra["r2t2"]["lm_routing"]["layers"][0]["engine_experts"] is not None
    sampled = dict(temperature=1.2, n=2, seed=5, logprobs=True, top_logprobs=1, **base)
    first, again = client.chat.completions.create(**sampled), client.chat.completions.create(**sampled)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert all(c.logprobs.content for c in first.choices)
    stopped = client.chat.completions.create(temperature=0, stop=[plain.choices[0].message.content[:1]], **base)
    assert stopped.choices[0].message.content == "" and stopped.choices[0].finish_reason == "stop"


def test_a_moved_lm_row_changes_nothing_when_the_target_is_vision(real_server: RealServer,
                                                                  easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": real_server.model, "max_tokens": 4, "temperature": 0, "messages": _question(question, url),
            "r2t2": {**MOVE, "target": "vision"}}
    vision = httpx.post(real_server.base + "/v1/chat/completions", json=body, timeout=300).json()["r2t2"]
    assert vision["lm_routing"]["applied"] is False
    assert all(layer["engine_experts"] is None and layer["routing"] == layer["base"]
               for layer in vision["lm_routing"]["layers"])


def test_lm_layers_moves_and_applies_only_the_named_layers_row(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    """A request naming one LM layer: that row moves and the engine applies it; the other keeps its router."""
    question, _, url = easy_vqa_cases(1)[0]
    named = 1
    body = {"model": real_server.model, "max_tokens": 4, "temperature": 0, "messages": _question(question, url),
            "r2t2": {**MOVE, "target": "lm", "lm_layers": [named]}}
    lm = httpx.post(real_server.base + "/v1/chat/completions", json=body, timeout=300).json()["r2t2"]["lm_routing"]
    assert lm["applied"] is True
    for layer in lm["layers"]:
        if layer["layer"] == named:
            assert layer["routing"] != layer["base"] and layer["engine_experts"] is not None
        else:
            assert layer["routing"] == layer["base"] and layer["engine_experts"] is None


def test_answer_space_and_a_two_stage_both_report_what_each_stage_did(real_server: RealServer,
                                                                        easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": real_server.model, "max_tokens": 4, "temperature": 0, "messages": _question(question, url)}
    alone = httpx.post(real_server.base + "/v1/chat/completions", timeout=300,
                       json={**body, "r2t2": {"strategy": "answer_space", "target": "lm"}}).json()["r2t2"]
    assert alone["strategy"] == "answer_space" and alone["answer_space_mass"][0] > 0
    assert alone["neighbour_space"] == "question" and len(alone["neighbours"]) >= 1
    both = httpx.post(real_server.base + "/v1/chat/completions", timeout=300,
                      json={**body, "r2t2": {"strategy": "ngd", "target": "both", "lm_strategy": "answer_space",
                                             "guard": False}}).json()["r2t2"]
    stage = both["lm_routing"]["stage"]
    assert stage["strategy"] == "answer_space" and stage["answer_space_mass"][0] > 0
    assert "then for the LM rows" in both["explanation"]


@pytest.mark.parametrize("r2t2, field", [({"target": "language"}, "target"), ({"target": "lm", "core_experts": 0}, "core_experts"),
                                         ({"target": "lm", "lm_positions": "last"}, "lm_positions"),
                                         ({"target": "lm", "lm_layers": [7]}, "lm_layers"),
                                         ({"target": "lm", "lm_layers": "1"}, "lm_layers"),
                                         ({"ngd_start": "anywhere"}, "ngd_start")])
def test_bad_lm_options_are_refused(real_server: RealServer, easy_vqa_cases: Cases, r2t2: dict, field: str) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": real_server.model, "max_tokens": 4, "messages": _question(question, url), "r2t2": r2t2}
    reply = httpx.post(real_server.base + "/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 400, reply.text
    assert field in json.dumps(reply.json()["error"])
