"""Bad requests, routes, health, metrics and the load benchmark, against the session's real server.

Every bad request must get an OpenAI-shaped error naming the offending field, and the server must
answer the next good request. The server is the shared `real_server` (tests/conftest.py): the real
embedded pipeline on the vLLM CPU engine, with the default image limits.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow
IMAGE_PARAM = "messages.content.image_url.url"
CHAT = "/v1/chat/completions"


def chat_body(model: str, question: str, url: str, **extra: Any) -> dict[str, Any]:
    """A good request: one easy-VQA question and its image, cheapest strategy, two tokens."""
    return {"model": model, "max_tokens": 2, "temperature": 0, "r2t2": {"strategy": "none"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}],
            **extra}


def with_images(*urls: str) -> Callable[[dict], dict]:
    """The good body with its image replaced by these image URLs (the question stays)."""
    def build(body: dict) -> dict:
        text = body["messages"][0]["content"][0]
        parts = [text, *({"type": "image_url", "image_url": {"url": url}} for url in urls)]
        return {**body, "messages": [{"role": "user", "content": parts}]}
    return build


def image_url_of(body: dict) -> str:
    return body["messages"][0]["content"][1]["image_url"]["url"]


@functools.cache
def over_pixel_limit_png() -> str:
    """A real PNG of 4097 x 4097 pixels (over the default 16M), small when encoded: bilevel, all black."""
    buffer = io.BytesIO()
    Image.new("1", (4097, 4097)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# (name, bad body from the good one, status, param)
BAD_REQUESTS: list[tuple[str, Callable[[dict], Any], int, str | None]] = [
    ("malformed json", lambda body: b'{"model": ', 400, None),
    ("empty body", lambda body: b"", 400, None),
    ("unknown model", lambda body: {**body, "model": "gpt-4"}, 404, "model"),
    ("image without a question", lambda body: {**body, "messages": [{"role": "user", "content": [
        body["messages"][0]["content"][1]]}]}, 400, "messages.0.content"),
    ("two images", lambda body: with_images(image_url_of(body), image_url_of(body))(body), 400,
     "messages.0.content"),
    ("unknown index", lambda body: {**body, "r2t2": {"strategy": "ngd", "index": "no-such-index"}}, 404,
     "r2t2.index"),
    ("bad strategy", lambda body: {**body, "r2t2": {"strategy": "magic"}}, 400, "r2t2.strategy"),
    ("k out of range", lambda body: {**body, "r2t2": {"strategy": "ngd", "k": 0}}, 400, "r2t2.k"),
    ("steps out of range", lambda body: {**body, "r2t2": {"strategy": "ngd", "steps": -1}}, 400, "r2t2.steps"),
    ("unknown kernel", lambda body: {**body, "r2t2": {"strategy": "kernel", "kernel": "magic"}}, 400,
     "r2t2.kernel"),
    ("penalty out of range", lambda body: {**body, "presence_penalty": 3.0}, 400, "presence_penalty"),
    ("n over the limit", lambda body: {**body, "n": 9}, 400, "n"),
    ("json mode refused", lambda body: {**body, "response_format": {"type": "json_object"}}, 400, "response_format"),
    ("tools refused", lambda body: {**body, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "tools"),
    ("question without an image, too long", lambda body: {**body, "messages": [
        {"role": "user", "content": "what " * 30 + "is it?"}]}, 400, "messages.0.content"),
    ("image over the pixel limit", lambda body: with_images(over_pixel_limit_png())(body), 413, IMAGE_PARAM),
    ("image over the byte limit", with_images("data:image/png;base64," + "A" * 6_000_000), 413, IMAGE_PARAM),
    ("wrong mime", with_images("data:text/plain;base64,aGVsbG8="), 415, IMAGE_PARAM),
    ("png declared as jpeg", lambda body: with_images(image_url_of(body).replace("image/png", "image/jpeg", 1))(body),
     415, IMAGE_PARAM),
    ("not base64", with_images("data:image/png;base64,@@@"), 400, IMAGE_PARAM),
    ("remote url refused", with_images("http://127.0.0.1:1/x.png"), 400, IMAGE_PARAM),
    # The embedded LM has 128 positions: any prompt plus 128 new tokens is too long.
    ("prompt too long for the model", lambda body: {**body, "max_tokens": 128}, 400, "max_tokens"),
]


def post(base: str, body: Any, path: str = CHAT) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(base + path, content=content, headers={"content-type": "application/json"}, timeout=300)


@pytest.mark.parametrize("name,bad,status,param", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_gets_openai_error_and_server_keeps_answering(
    real_server: RealServer, easy_vqa_cases: Cases, name: str, bad: Callable[[dict], Any], status: int,
    param: str | None,
) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    good = chat_body(real_server.model, question, url)
    reply = post(real_server.base, bad(good))
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"] and error["type"] and error["param"] == param, error
    after = post(real_server.base, good)
    assert after.status_code == 200, after.text
    assert after.json()["choices"][0]["message"]["content"]


def counter(metrics: str, series: str) -> float:
    """The value of one Prometheus series line, 0 when the series has not appeared yet."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_unknown_route_health_and_metrics(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    base = real_server.base
    missing = httpx.get(base + "/v1/nothing", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    health = httpx.get(base + "/healthz", timeout=60)
    assert health.status_code == 200 and health.json() == {"status": "ok", "models": list(real_server.models),
                                                           "degraded": []}

    ok = 'r2t2_requests_total{status="200",strategy="none"}'
    not_found = 'r2t2_errors_total{type="NotFound"}'
    generate = 'r2t2_stage_latency_seconds_count{stage="generate",strategy="none"}'
    before = httpx.get(base + "/metrics", timeout=30).text
    question, _, url = easy_vqa_cases(1)[0]
    good = chat_body(real_server.model, question, url)
    assert post(base, good).status_code == 200
    assert post(base, {**good, "model": "gpt-4"}).status_code == 404
    after = httpx.get(base + "/metrics", timeout=30).text
    for series in (ok, not_found, generate):
        assert counter(after, series) == counter(before, series) + 1, series


def test_bench_reports_every_level(real_server: RealServer) -> None:
    from bench.serving_bench import percentile, ratios_to_none, run

    assert (percentile(list(range(1, 11)), 50), percentile(list(range(1, 101)), 99)) == (5, 99)
    results = asyncio.run(run(real_server.base, 2, [1, 2], ["none", "ngd"], max_tokens=2, timeout_s=120))
    assert [(r.strategy, r.concurrency) for r in results] == [("none", 1), ("ngd", 1), ("none", 2), ("ngd", 2)]
    assert all(r.errors == 0 and r.requests_per_s > 0 and 0 < r.p50_s <= r.p99_s for r in results)
    assert all(1 <= r.mean_batch_size <= 2 for r in results)
    ratios = ratios_to_none(results)
    assert [(x["strategy"], x["concurrency"]) for x in ratios] == [("none", 1), ("ngd", 1), ("none", 2), ("ngd", 2)]
    assert all(x["throughput_vs_none"] == 1.0 for x in ratios if x["strategy"] == "none")
