"""The server with the real embedded R2-T2 pipeline and the vLLM CPU engine, through the OpenAI client.

The server is the session's shared `real_server` (tests/conftest.py). Bad requests, routes, metrics
and the benchmark are in tests/test_serving_errors.py.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow


def ask(base: str, model: str, question: str, url: str, path: str = "/v1/chat/completions", **r2t2: Any) -> dict:
    body = {"model": model, "max_tokens": 4, "temperature": 0, "r2t2": r2t2,
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = httpx.post(base + path, json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_openai_client_answers_easy_vqa(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    import openai

    base, model = real_server.base, real_server.model
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == list(real_server.models)
    cases = easy_vqa_cases(8)
    correct = 0
    for question, answer, url in cases:
        reply = client.chat.completions.create(
            model=model, max_tokens=4, temperature=0, extra_body={"r2t2": {"strategy": "ngd"}},
            messages=[{"role": "user", "content": [{"type": "text", "text": question},
                                                   {"type": "image_url", "image_url": {"url": url}}]}])
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens >= 1 and 1 <= reply.usage.completion_tokens <= 4
        record = reply.model_extra["r2t2"]
        assert record["strategy"] == "ngd"
        assert {"encode", "reroute", "generate", "total"} <= set(record["timings"])
        assert record["timings"]["total"] >= record["timings"]["generate"] > 0
        correct += reply.choices[0].message.content.strip().lower() == answer
    assert correct >= len(cases) // 2, f"only {correct}/{len(cases)} easy-VQA answers right"


def test_none_keeps_routing_and_ngd_changes_it(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    base, model = real_server.base, real_server.model
    question, _, url = easy_vqa_cases(1)[0]
    none = ask(base, model, question, url, strategy="none")["r2t2"]
    assert none["base_routing"] == none["routing"]
    ngd = ask(base, model, question, url, strategy="ngd", guard=False, answer_check=False)["r2t2"]
    # NGD moves the routing, unless it stopped early because its steps stopped moving it (ngd_tol; this
    # question's routing sits near a vertex of the simplex that the neighbours' loss pushes into).
    assert ngd["routing"] != ngd["base_routing"] or ngd["fallback"] or ngd["steps_taken"] < 10
    assert ngd["guard"] is None
    guarded = ask(base, model, question, url, strategy="ngd")["r2t2"]  # the shipped models' default: guarded
    assert guarded["guard"]["fired"] == (guarded["guard"]["reason"] is not None)
    if guarded["guard"]["fired"]:
        assert guarded["routing"] == guarded["base_routing"] and guarded["moved"] == 0


def test_torch_backend_and_streaming_agree(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    base, model = real_server.base, real_server.model
    question, _, url = easy_vqa_cases(1)[0]
    vllm_reply = ask(base, model, question, url, strategy="none")
    torch_reply = ask(base, model, question, url, "/torch/v1/chat/completions", strategy="none")
    assert torch_reply["choices"][0]["message"] == vllm_reply["choices"][0]["message"]
    assert torch_reply["usage"] == vllm_reply["usage"]
    body = {"model": model, "max_tokens": 4, "temperature": 0, "stream": True, "r2t2": {"strategy": "none"},
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    events = httpx.post(base + "/v1/chat/completions", json=body, timeout=300).text.strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == vllm_reply["choices"][0]["message"]["content"]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == vllm_reply["choices"][0]["finish_reason"]
    assert last["usage"] == vllm_reply["usage"]
    assert "generate" in last["r2t2"]["timings"]


def test_a_question_without_an_image_is_answered_without_rerouting(real_server: RealServer,
                                                                   easy_vqa_cases: Cases) -> None:
    from serving.pipeline.record import NO_IMAGE
    from r2t2.model import load_model

    base, model = real_server.base, real_server.model
    question = "what color is the shape?"
    messages = [{"role": "system", "content": "answer in one word"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": question}]
    # Options only re-routing reads are accepted and ignored, even an index no request could search.
    r2t2 = {"strategy": "ngd", "target": "both", "index": "no-such-index", "k": 3, "compare_with_none": True}
    body = {"model": model, "max_tokens": 4, "temperature": 0, "messages": messages, "r2t2": r2t2, "n": 2,
            "logprobs": True, "top_logprobs": 2}
    reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    answer = data["choices"][0]["message"]["content"]
    assert answer.strip() and [c["message"]["content"] for c in data["choices"]] == [answer, answer]  # greedy
    assert all(len(c["logprobs"]["content"]) == data["usage"]["completion_tokens"] // 2 for c in data["choices"])
    assert data["usage"]["prompt_tokens"] == load_model("embedded").question_prompt(question).shape[0]
    record = data["r2t2"]
    assert (record["strategy"], record["fallback"], record["moved"], record["base_routing"], record["routing"],
            record["neighbours"], record["index"], record["lm_routing"]) == ("none", NO_IMAGE, 0.0, {}, {}, [],
                                                                             None, None)
    assert record["changed_answer"] is False and record["answer_without_rerouting"] == answer
    assert "answer_source" not in record and "batch_size" not in record and record["timings"]["generate"] > 0
    # The torch backend is fed the same prompt; a stream carries the same answer and the record on its last chunk.
    alone = {"model": model, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": question}]}
    torch_reply = httpx.post(base + "/torch/v1/chat/completions", json=alone, timeout=300)
    assert torch_reply.status_code == 200, torch_reply.text
    assert torch_reply.json()["choices"][0]["message"]["content"] == answer
    events = httpx.post(base + "/v1/chat/completions", json={**alone, "stream": True}, timeout=300).text
    chunks = [json.loads(e.removeprefix("data: ")) for e in events.strip().split("\n\n")[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == answer
    assert chunks[-1]["r2t2"]["fallback"] == NO_IMAGE
    # A follow-up in text about an image sent earlier is still re-routed with that image.
    _, _, url = easy_vqa_cases(1)[0]
    follow_up = [{"role": "user", "content": [{"type": "text", "text": "what shape is it?"},
                                              {"type": "image_url", "image_url": {"url": url}}]},
                 {"role": "assistant", "content": "circle"}, {"role": "user", "content": question}]
    rerouted = httpx.post(base + "/v1/chat/completions", timeout=300, json={
        **alone, "messages": follow_up, "r2t2": {"strategy": "kernel"}}).json()["r2t2"]
    assert rerouted["strategy"] == "kernel" and rerouted["fallback"] != NO_IMAGE and rerouted["neighbours"]
