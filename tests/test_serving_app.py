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
