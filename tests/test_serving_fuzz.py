"""No input gives a 5xx: property-based requests through the real HTTP app (the session's shared server).

Hypothesis draws the `r2t2` options and the OpenAI fields, valid and not, around their edges (numeric
extremes included); every answer must be a 200 or a 4xx in the OpenAI error shape, and a stream must
never carry a server error. The example count is bounded and the draw derandomised, so CI is cheap and
repeatable; the costly knobs (NGD steps, neighbours, tokens) stay small.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 40
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.sampled_from([0.0, -0.0, 1e-300, 1e-12, 0.2, 1.0, 2.0, 1e6, 1e30, -1e30, 1.7e308]),
                    st.integers(-(2**70), 2**70))


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


R2T2_OPTIONS = st.fixed_dictionaries({}, optional={
    "strategy": st.sampled_from(["none", "kernel", "meanshift", "ngd", "oracle", "", "NGD"]),
    "k": st.one_of(st.integers(-1, 12), st.sampled_from([256, 257, 10**12]), st.just(2.5), st.just("5")),
    "kernel": st.sampled_from(["gaussian", "matern", "polynomial", "linear", "cosine", None]),
    "steps": st.one_of(st.integers(-1, 3), st.sampled_from([1001, 10**9]), st.just(1.5)),
    "lr": NUMBERS,
    "neighbourhood": st.sampled_from(["knn", "epsilon", "ball", None]),
    "epsilon": NUMBERS,
    "index": st.sampled_from(["embedded", "quartet", "no-such-index", "", "../etc", "x" * 300]),
    "compare_with_none": st.one_of(st.booleans(), st.just("yes")),
    "surprise": st.integers(),
})
OPENAI_FIELDS = st.fixed_dictionaries({}, optional={
    "max_tokens": st.one_of(st.integers(-1, 4), st.sampled_from([127, 10**9])),
    "temperature": NUMBERS,
    "top_p": NUMBERS,
    "n": st.one_of(st.integers(0, 3), st.just(9)),
    "stop": st.one_of(st.none(), st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5)),
    "seed": st.one_of(st.none(), st.integers(-1, 3), st.sampled_from([2**63 - 1, 2**63, 2**64])),
    "logprobs": st.one_of(st.none(), st.booleans(), st.just("yes")),
    "top_logprobs": _maybe(st.integers(-1, 21)),
    "presence_penalty": _maybe(NUMBERS),
    "frequency_penalty": _maybe(NUMBERS),
    "user": _maybe(st.text(max_size=8)),
    "stream": st.booleans(),
    "stream_options": st.sampled_from([None, {"include_usage": True}, {"include_usage": "x"}, {"other": 1}]),
    "response_format": st.sampled_from([None, {"type": "text"}, {"type": "json_object"}, {}, "text"]),
    "tools": st.sampled_from([None, [], [{"type": "function"}], "all"]),
    "max_completion_tokens": _maybe(st.integers(-1, 3)),
})
CONVERSATIONS = st.sampled_from(["one turn", "follow-up", "no image", "assistant last", "two images", "empty"])


def _messages(shape: str, question: str, url: str) -> list[dict[str, Any]]:
    image = {"type": "image_url", "image_url": {"url": url}}
    asked = {"role": "user", "content": [{"type": "text", "text": question}, image]}
    return {
        "one turn": [asked],
        "follow-up": [asked, {"role": "assistant", "content": "yes"}, {"role": "user", "content": question}],
        "no image": [{"role": "user", "content": question}],
        "assistant last": [asked, {"role": "assistant", "content": "yes"}],
        "two images": [{"role": "user", "content": [{"type": "text", "text": question}, image, image]}],
        "empty": [],
    }[shape]


def _stream_errors(text: str) -> list[dict]:
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n") if e.startswith("data: ")]
    return [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]


def _check(real_server: RealServer, body: dict[str, Any]) -> None:
    content = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity are not JSON: they must be a 400
    reply = httpx.post(real_server.base + "/v1/chat/completions", content=content,
                       headers={"content-type": "application/json"}, timeout=300)
    assert reply.status_code < 500, (body, reply.text)
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert error["message"] and error["type"] != "server_error", (body, error)
    elif body.get("stream") is True:
        assert [e for e in _stream_errors(reply.text) if e["type"] == "server_error"] == [], (body, reply.text)


@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(options=R2T2_OPTIONS, fields=OPENAI_FIELDS, shape=CONVERSATIONS)
@example(options={"strategy": "ngd", "lr": 1e30, "steps": 3}, fields={}, shape="one turn")
@example(options={"strategy": "ngd", "lr": 1.7e308, "steps": 2}, fields={}, shape="one turn")
@example(options={"strategy": "kernel", "neighbourhood": "epsilon", "epsilon": 1e30, "k": 256}, fields={},
         shape="one turn")
@example(options={"strategy": "meanshift", "steps": 3, "k": 256}, fields={"stream": True}, shape="follow-up")
def test_no_request_gets_a_server_error(real_server: RealServer, easy_vqa_cases: Cases, options: dict,
                                        fields: dict, shape: str) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": real_server.model, "max_tokens": 2, **fields, "messages": _messages(shape, question, url),
            "r2t2": options}
    _check(real_server, body)
