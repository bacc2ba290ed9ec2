"""The server with the real embedded R2-T2 pipeline and the vLLM CPU engine, through the OpenAI client.

Skips until the pipeline and its shipped checkpoint exist; tests/test_serving_app_tiny.py covers every
serving path on a small deterministic pipeline meanwhile.
"""
from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pipeline = pytest.importorskip("r2t2.pipeline")
pytestmark = pytest.mark.slow


def _checkpoint_present() -> bool:
    from r2t2.model import DEFAULT_CHECKPOINT

    return Path(DEFAULT_CHECKPOINT).exists()


if not _checkpoint_present():
    pytest.skip("the embedded checkpoint is not shipped yet", allow_module_level=True)


def easy_vqa_cases(count: int) -> list[tuple[str, str, str]]:
    """(question, answer, PNG data URL) from the easy-VQA test split."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    cases = []
    for question, answer, image_id in list(zip(questions, answers, image_ids))[:count]:
        with open(paths[image_id], "rb") as handle:
            cases.append((question, answer, "data:image/png;base64," + base64.b64encode(handle.read()).decode()))
    return cases


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    """(base URL, model name) of the vLLM app at / and the torch app at /torch."""
    import ray
    from ray import serve

    from serving.app import build_app
    from serving.config import ServerConfig

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    small = {"num_cpus": 0.1, "max_ongoing_requests": 32}

    def config(backend: str) -> ServerConfig:
        return ServerConfig.model_validate({"backend": backend, "vllm": {"kv_cache_gib": 1, "dtype": "float32"},
                                            "ingress": small, "rerouter": small, "generator": small})

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config("vllm")), name="vllm", route_prefix="/")
        serve.run(build_app(config("torch")), name="torch", route_prefix="/torch")
        base = f"http://127.0.0.1:{port}"
        yield base, httpx.get(base + "/v1/models", timeout=30).json()["data"][0]["id"]
    finally:
        serve.shutdown()
        ray.shutdown()


def ask(base: str, model: str, question: str, url: str, path: str = "/v1/chat/completions", **r2t2: Any) -> dict:
    body = {"model": model, "max_tokens": 4, "temperature": 0, "r2t2": r2t2,
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = httpx.post(base + path, json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_openai_client_answers_easy_vqa(server: tuple[str, str]) -> None:
    import openai

    base, model = server
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
    cases = easy_vqa_cases(8)
    correct = 0
    for question, answer, url in cases:
        reply = client.chat.completions.create(
            model=model, max_tokens=4, temperature=0, extra_body={"r2t2": {"strategy": "ngd"}},
            messages=[{"role": "user", "content": [{"type": "text", "text": question},
                                                   {"type": "image_url", "image_url": {"url": url}}]}])
        record = reply.model_extra["r2t2"]
        assert record["strategy"] == "ngd" and {"generate", "total"} <= set(record["timings"])
        correct += reply.choices[0].message.content.strip().lower() == answer
    assert correct >= len(cases) // 2, f"only {correct}/{len(cases)} easy-VQA answers right"


def test_none_keeps_routing_and_ngd_changes_it(server: tuple[str, str]) -> None:
    base, model = server
    question, _, url = easy_vqa_cases(1)[0]
    none = ask(base, model, question, url, strategy="none")["r2t2"]
    assert none["base_routing"] == none["routing"]
    ngd = ask(base, model, question, url, strategy="ngd")["r2t2"]
    assert ngd["routing"] != ngd["base_routing"] or ngd["fallback"]


def test_concurrent_mixed_strategies_match_solo(server: tuple[str, str]) -> None:
    base, model = server
    strategies = ["none", "ngd", "kernel", "meanshift"]
    jobs = [(q, u, strategies[i % 4]) for i, (q, _, u) in enumerate(easy_vqa_cases(16))]
    solo = [ask(base, model, q, u, strategy=s) for q, u, s in jobs]

    async def together() -> list[dict]:
        async with httpx.AsyncClient(timeout=600) as client:
            replies = await asyncio.gather(*(client.post(base + "/v1/chat/completions", json={
                "model": model, "max_tokens": 4, "temperature": 0, "r2t2": {"strategy": s},
                "messages": [{"role": "user", "content": [{"type": "text", "text": q},
                                                          {"type": "image_url", "image_url": {"url": u}}]}]})
                for q, u, s in jobs))
        return [r.json() for r in replies]

    def essence(reply: dict) -> tuple:
        return reply["choices"][0]["message"]["content"], reply["r2t2"]["routing"]

    assert [essence(r) for r in asyncio.run(together())] == [essence(r) for r in solo]


def test_torch_backend_and_streaming_agree(server: tuple[str, str]) -> None:
    base, model = server
    question, _, url = easy_vqa_cases(1)[0]
    vllm_text = ask(base, model, question, url, strategy="none")["choices"][0]["message"]["content"]
    torch_text = ask(base, model, question, url, "/torch/v1/chat/completions", strategy="none")
    assert torch_text["choices"][0]["message"]["content"] == vllm_text
    body = {"model": model, "max_tokens": 4, "temperature": 0, "stream": True, "r2t2": {"strategy": "none"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    events = httpx.post(base + "/v1/chat/completions", json=body, timeout=300).text.strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == vllm_text


def test_bad_input_then_server_still_answers(server: tuple[str, str]) -> None:
    base, model = server
    question, _, url = easy_vqa_cases(1)[0]
    bad = httpx.post(base + "/v1/chat/completions", json={
        "model": model, "r2t2": {"index": "no-such-index", "strategy": "ngd"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                  {"type": "image_url", "image_url": {"url": url}}]}]}, timeout=300)
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "r2t2.index"
    assert ask(base, model, question, url, strategy="none")["choices"][0]["message"]["content"]
