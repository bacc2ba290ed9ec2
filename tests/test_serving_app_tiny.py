"""The whole Ray Serve app (ingress, re-router, generator) over a small deterministic pipeline.

The pipeline here is built on the random tiny Mixtral: its prompt is image features mixed by a
routing plus the question's word embeddings, and each strategy moves the routing in its own fixed
way. That exercises every serving path (both backends, streaming, concurrency, errors) without the
trained checkpoint; tests/test_serving_app.py repeats the key checks on the real pipeline.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from r2t2.errors import NotFoundError
from r2t2.pipeline import Prepared

pytestmark = pytest.mark.slow
MODEL = "tiny-r2t2"
EXPERTS = ("clip", "dino", "ocr")


class TinyPipeline:
    """Deterministic: same image, question and options always give the same prompt."""

    model_name = MODEL

    def __init__(self, lm_path: str) -> None:
        from safetensors.torch import load_file

        self.lm_path = lm_path
        weights = load_file(str(Path(lm_path) / "model.safetensors"))
        self._table = weights["model.embed_tokens.weight"].float()
        vocab = json.loads((Path(lm_path) / "tokenizer.json").read_text())["model"]["vocab"]
        self._vocab: dict[str, int] = vocab
        gen = torch.Generator().manual_seed(7)
        self._experts = torch.randn(len(EXPERTS), 3, self._table.shape[1], generator=gen)

    def prepare(self, image: Image.Image, question: str, overrides: dict[str, Any],
                index: str | None = None) -> Prepared:
        if index not in (None, "tiny"):
            raise NotFoundError(f"index {index!r} does not exist")
        if overrides.get("k", 1) > 8:
            raise ValueError("k must be at most 8 for this index")
        strategy = overrides.get("strategy", "ngd")
        pixels = torch.tensor(list(image.resize((4, 4)).getdata()), dtype=torch.float32).mean(0) / 255
        base = torch.softmax(torch.stack([pixels.sum(), pixels[0] * 3, pixels[2] * 2]), 0)
        target = {"none": base, "ngd": torch.tensor([0.1, 0.1, 0.8]), "kernel": torch.tensor([0.6, 0.3, 0.1]),
                  "meanshift": torch.tensor([0.2, 0.7, 0.1])}[strategy]
        final = 0.2 * base + 0.8 * target if strategy != "none" else base
        visual = torch.einsum("e,ech->h", final, self._experts) * (1 + pixels.sum())
        ids = [self._vocab.get(word, self._vocab["[UNK]"]) for word in question.lower().split()]
        prompt = torch.cat([visual.unsqueeze(0), self._table[ids]])
        record = {"strategy": strategy, "base_routing": dict(zip(EXPERTS, base.tolist())),
                  "routing": dict(zip(EXPERTS, final.tolist())), "neighbours": [], "fallback": None,
                  "index": {"name": "tiny", "version": 1}, "timings": {"encode": 0.001, "reroute": 0.001}}
        return Prepared(prompt_embeds=prompt, record=record)


def load_tiny_pipeline(config: dict[str, Any]) -> TinyPipeline:
    return TinyPipeline(config["lm_path"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_data_url(color: tuple[int, int, int], size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def chat_body(question: str = "w1 w2 w3", color: tuple[int, int, int] = (200, 40, 40), **extra: Any) -> dict:
    content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": png_data_url(color)}}]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 6,
            "temperature": 0, **extra}


@pytest.fixture(scope="module")
def server(tiny_mixtral_dir: Path) -> Iterator[str]:
    """vLLM app at /, torch-backend app at /torch, in one local Ray cluster; both shut down after."""
    import ray
    from ray import serve

    from serving.app import build_app
    from serving.config import ServerConfig

    def config(backend: str) -> ServerConfig:
        small = {"num_cpus": 0.1, "max_ongoing_requests": 32}
        return ServerConfig.model_validate({
            "backend": backend, "pipeline_factory": "tests.test_serving_app_tiny:load_tiny_pipeline",  # via the driver cwd
            "pipeline": {"lm_path": str(tiny_mixtral_dir)}, "max_model_len": 128,
            "vllm": {"dtype": "float32", "kv_cache_gib": 1},
            "images": {"max_encoded_bytes": 200_000, "max_pixels": 1_000_000},
            "ingress": small, "rerouter": small, "generator": small,
        })

    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config("vllm")), name="vllm", route_prefix="/")
        serve.run(build_app(config("torch")), name="torch", route_prefix="/torch")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def post(server: str, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server + path, content=content, headers={"content-type": "application/json"}, timeout=60)


def test_openai_client_gets_answer_with_record(server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == [MODEL]
    body = chat_body()
    reply = client.chat.completions.create(model=MODEL, messages=body["messages"], max_tokens=6, temperature=0,
                                           extra_body={"r2t2": {"strategy": "ngd", "k": 3}})
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == 4 and 1 <= reply.usage.completion_tokens <= 6
    record = reply.model_extra["r2t2"]
    assert record["strategy"] == "ngd"
    assert {"encode", "reroute", "generate", "total"} <= set(record["timings"])
    assert record["timings"]["total"] >= record["timings"]["generate"] > 0


def test_strategy_none_keeps_routing_and_ngd_moves_it(server: str) -> None:
    none = post(server, chat_body(r2t2={"strategy": "none"})).json()["r2t2"]
    ngd = post(server, chat_body(r2t2={"strategy": "ngd"})).json()["r2t2"]
    assert none["base_routing"] == none["routing"]
    assert ngd["base_routing"] == none["base_routing"] and ngd["routing"] != ngd["base_routing"]


def test_streaming_matches_non_streaming(server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    body = chat_body()
    whole = client.chat.completions.create(model=MODEL, messages=body["messages"], max_tokens=6, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=body["messages"], max_tokens=6,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert "generate" in last.model_extra["r2t2"]["timings"]
    raw = httpx.post(server + "/v1/chat/completions", json={**body, "stream": True}, timeout=60).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_concurrent_mixed_strategies_match_solo_answers(server: str) -> None:
    strategies = ["none", "ngd", "kernel", "meanshift"]
    colours = [(200, 40, 40), (30, 160, 60), (20, 20, 220), (240, 240, 30)]
    bodies = [chat_body(f"w{i} w{i + 7}", colours[i % 4], r2t2={"strategy": strategies[i % 4]}) for i in range(16)]

    def essence(reply: dict) -> tuple[str, Any]:
        return reply["choices"][0]["message"]["content"], reply["r2t2"]["routing"]

    solo = [essence(post(server, body).json()) for body in bodies]

    async def together() -> list[tuple[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            replies = await asyncio.gather(*(client.post(server + "/v1/chat/completions", json=b) for b in bodies))
        return [essence(r.json()) for r in replies]

    assert asyncio.run(together()) == solo
    assert len({text for text, _ in solo}) > 1


def test_torch_backend_gives_the_same_greedy_answers(server: str) -> None:
    for strategy in ("none", "ngd"):
        body = chat_body("w4 w5", r2t2={"strategy": strategy})
        vllm_reply = post(server, body).json()
        torch_reply = post(server, body, "/torch/v1/chat/completions").json()
        assert torch_reply["choices"][0]["message"] == vllm_reply["choices"][0]["message"]
        assert torch_reply["usage"] == vllm_reply["usage"]


BAD_REQUESTS: list[tuple[str, Any, int, str | None]] = [
    ("malformed json", b'{"model": ', 400, None),
    ("empty body", b"", 400, None),
    ("unknown model", {**chat_body(), "model": "gpt-4"}, 404, "model"),
    ("no image", {**chat_body(), "messages": [{"role": "user", "content": "w1 w2"}]}, 400, "messages.0.content"),
    ("two images", {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "w1"}, {"type": "image_url", "image_url": {"url": png_data_url((1, 2, 3))}},
        {"type": "image_url", "image_url": {"url": png_data_url((1, 2, 3))}}]}]}, 400, "messages.0.content"),
    ("unknown index", chat_body(r2t2={"index": "nope"}), 404, "r2t2.index"),
    ("bad strategy", chat_body(r2t2={"strategy": "magic"}), 400, "r2t2.strategy"),
    ("pipeline rejects k", chat_body(r2t2={"k": 50}), 400, "r2t2"),
    ("penalty not supported", chat_body(presence_penalty=1.0), 400, "presence_penalty"),
    ("n > 1", chat_body(n=2), 400, "n"),
    ("image too large", {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "w1"},
        {"type": "image_url", "image_url": {"url": png_data_url((9, 9, 9), (1200, 1200))}}]}]}, 413, None),
    ("wrong mime", {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "w1"},
        {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGVsbG8="}}]}]}, 415, None),
    ("not base64", {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "w1"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}, 400, None),
    ("remote url refused", {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "w1"},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/x.png"}}]}]}, 400, None),
    ("prompt too long for the model", chat_body(max_tokens=500), 400, "max_tokens"),
]


@pytest.mark.parametrize("name,body,status,param", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_openai_errors_and_server_keeps_answering(
    server: str, name: str, body: Any, status: int, param: str | None
) -> None:
    reply = post(server, body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
    assert post(server, chat_body()).status_code == 200


def test_unknown_route_health_and_metrics(server: str) -> None:
    missing = httpx.get(server + "/v1/nothing", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    health = httpx.get(server + "/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    post(server, chat_body(r2t2={"strategy": "none"}))
    post(server, {**chat_body(), "model": "gpt-4"})
    text = httpx.get(server + "/metrics", timeout=10).text
    assert 'r2t2_requests_total{status="200",strategy="none"}' in text
    assert 'r2t2_errors_total{type="NotFound"}' in text
    assert 'r2t2_stage_latency_seconds_count{stage="generate",strategy="none"}' in text


def test_bench_reports_every_level(server: str) -> None:
    from bench.serving_bench import percentile, run

    assert (percentile(list(range(1, 11)), 50), percentile(list(range(1, 101)), 99)) == (5, 99)
    results = asyncio.run(run(server, 3, [1, 2], ["none", "ngd"], max_tokens=2, timeout_s=60))
    assert [(r.strategy, r.concurrency) for r in results] == [("none", 1), ("none", 2), ("ngd", 1), ("ngd", 2)]
    assert all(r.errors == 0 and r.requests_per_s > 0 and 0 < r.p50_s <= r.p99_s for r in results)
