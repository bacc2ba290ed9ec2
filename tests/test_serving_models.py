"""Several models in one server: each answers with its own routing shape, indexes say whose they are.

The server is the session's shared `real_server` (tests/conftest.py): the embedded family and, once its
checkpoint ships, the quartet family, each with its own re-router and vLLM engine, sharing one index store.
Tests that need the quartet model skip until it ships; everything else runs on the embedded one.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from conftest import EMBEDDED, QUARTET, quartet_shipped, wait_for_job

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow
needs_quartet = pytest.mark.skipif(not quartet_shipped(), reason="the quartet checkpoint is not shipped yet")
TOY_INDEX = "toy-foreign"  # built in the shared store for a model no app serves


def cards(server: RealServer) -> dict[str, dict[str, Any]]:
    reply = httpx.get(server.base + "/v1/models", timeout=30)
    assert reply.status_code == 200, reply.text
    return {card["id"]: card for card in reply.json()["data"]}


def chat(server: RealServer, model: str, case: tuple[str, str, str], **r2t2: Any) -> httpx.Response:
    question, _, url = case
    body = {"model": model, "max_tokens": 4, "temperature": 0, "r2t2": r2t2,
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    return httpx.post(server.base + "/v1/chat/completions", json=body, timeout=300)


def vision_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in card["routing_rows"] if row["kind"] == "vision"]


def routing_rows(routing: dict[str, Any], card: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The record's vision routing as {row: {expert: weight}}: one row is given flat, several by row name."""
    rows = vision_rows(card)
    return {rows[0]["name"]: routing} if len(rows) == 1 else routing


def assert_answers_with_its_shape(server: RealServer, model: str, case: tuple[str, str, str], **r2t2: Any) -> None:
    card = cards(server)[model]
    reply = chat(server, model, case, strategy="ngd", **r2t2)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == model and reply.json()["choices"][0]["message"]["content"].strip()
    record = reply.json()["r2t2"]
    assert record["index"]["name"] == card["default_index"]
    for key in ("routing", "base_routing"):
        named = routing_rows(record[key], card)
        assert list(named) == [row["name"] for row in vision_rows(card)]
        for row in vision_rows(card):
            weights = named[row["name"]]
            assert list(weights) == row["experts"]
            assert abs(sum(weights.values()) - 1) < 1e-4 and min(weights.values()) >= -1e-6
    lm_rows = [row for row in card["routing_rows"] if row["kind"] == "lm"]
    assert [layer["row"] for layer in record["lm_routing"]["layers"]] == [row["name"] for row in lm_rows]
    for layer, row in zip(record["lm_routing"]["layers"], lm_rows):
        for key in ("base", "routing"):
            assert {entry["expert"] for entry in layer[key]} <= set(row["experts"])
            assert abs(sum(entry["weight"] for entry in layer[key]) - 1) < 1e-4  # at most 8 experts: all listed


def rebuild(server: RealServer, name: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base}/v1/indexes/{name}/rebuild", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {server.admin_token}"})


def indexes(server: RealServer) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in httpx.get(server.base + "/v1/indexes", timeout=30).json()["data"]}


@pytest.fixture(scope="module")
def toy_index(real_server: RealServer) -> str:
    """An index in the shared store built for a model that is not served (the toy encoder's fingerprint)."""
    from indexes.build import build_index
    from indexes.store import IndexStore
    from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples

    build_index(TOY_INDEX, toy_samples(30), ToyEncoder(), ToyEmbedder(), IndexStore(real_server.index_dir),
                {"toy": 30}, progress=False)
    time.sleep(real_server.refresh_interval_s + 1)  # every registry has seen it (and skipped it)
    return TOY_INDEX


def test_models_lists_every_served_model_with_its_metadata(real_server: RealServer) -> None:
    found = cards(real_server)
    assert list(found) == list(real_server.models)
    embedded = found[EMBEDDED]
    assert embedded["routing_shape"] == [3, 4] and embedded["lm_routing"] is True
    assert [(row["name"], row["kind"], len(row["experts"]), row["layer"]) for row in embedded["routing_rows"]] == [
        ("all", "vision", 3, None), ("lm.layer0", "lm", 4, 0), ("lm.layer1", "lm", 4, 1)]
    assert embedded["default_index"] == "embedded"
    assert embedded["max_model_len"] == 128  # the LM's positions
    assert len(embedded["fingerprint"]) == 16 and embedded["object"] == "model"
    assert len({card["fingerprint"] for card in found.values()}) == len(found)


def test_embedded_answers_with_its_routing_shape(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    assert_answers_with_its_shape(real_server, EMBEDDED, easy_vqa_cases(1)[0])


@needs_quartet
def test_quartet_answers_with_its_routing_shape(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    card = cards(real_server)[QUARTET]
    assert card["routing_shape"] == [4, 8] and card["default_index"] == "quartet" and card["lm_routing"] is True
    assert [len(row["experts"]) for row in card["routing_rows"]] == [4, 4, 8, 8]
    for case in easy_vqa_cases(3):
        assert_answers_with_its_shape(real_server, QUARTET, case)


def test_unknown_model_is_404_listing_every_served_model(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    reply = chat(real_server, "r2t2-nope", easy_vqa_cases(1)[0])
    assert reply.status_code == 404, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"], error["type"]) == ("model", "model_not_found", "not_found_error")
    assert error["message"].endswith("served models: " + ", ".join(real_server.models))


def test_index_list_says_whose_each_index_is(real_server: RealServer, toy_index: str) -> None:
    listing = indexes(real_server)
    assert listing["embedded"]["model"] == EMBEDDED
    assert listing[toy_index]["model"] is None  # built for a model that is not served
    if quartet_shipped():
        assert listing["quartet"]["model"] == QUARTET
    detail = httpx.get(f"{real_server.base}/v1/indexes/embedded", timeout=30).json()
    assert detail["model"] == EMBEDDED
    assert detail["manifest"]["model_fingerprint"] == cards(real_server)[EMBEDDED]["fingerprint"]


def test_index_of_an_unserved_model_is_400_and_server_answers_on(real_server: RealServer, easy_vqa_cases: Cases,
                                                                 toy_index: str) -> None:
    case = easy_vqa_cases(1)[0]
    reply = chat(real_server, EMBEDDED, case, strategy="ngd", index=toy_index)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == ("r2t2.index", "index_model_mismatch")
    assert "not served here (fingerprint toy-model-1)" in error["message"] and EMBEDDED in error["message"]
    assert chat(real_server, EMBEDDED, case, strategy="ngd").status_code == 200


def test_rebuild_refuses_an_unknown_model(real_server: RealServer) -> None:
    reply = rebuild(real_server, "anything", {"dataset": {"source": "builtin", "split": "reference", "limit": 8},
                                              "model": "r2t2-nope"})
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["param"] == "model"
    assert reply.json()["error"]["message"].endswith("served models: " + ", ".join(real_server.models))


@needs_quartet
def test_rebuild_for_quartet_and_the_other_model_cannot_use_it(real_server: RealServer,
                                                                easy_vqa_cases: Cases) -> None:
    spec = {"source": "builtin", "split": "reference", "limit": 200}
    # With two models served, a new index must say which one it is for.
    asked = rebuild(real_server, "quartet-small", {"dataset": spec})
    assert asked.status_code == 400 and asked.json()["error"]["param"] == "model", asked.text
    # An index of one model is never rebuilt for the other.
    taken = rebuild(real_server, "embedded", {"dataset": spec, "model": QUARTET})
    assert taken.status_code == 409 and EMBEDDED in taken.json()["error"]["message"], taken.text

    started = rebuild(real_server, "quartet-small", {"dataset": spec, "model": QUARTET})
    assert started.status_code == 202, started.text
    job = wait_for_job(real_server, started.json()["id"])
    assert job["state"] == "succeeded", job["error"]
    detail = httpx.get(f"{real_server.base}/v1/indexes/quartet-small", timeout=30).json()
    assert detail["model"] == QUARTET
    assert detail["manifest"]["model_fingerprint"] == cards(real_server)[QUARTET]["fingerprint"]
    assert detail["manifest"]["routing_shape"] == [4, 8]  # 2 vision rows of 4 experts, 2 LM rows of 8
    # Without `model`, a rebuild of an existing index builds for its owner.
    again = rebuild(real_server, "quartet-small", {"dataset": spec})
    assert again.status_code == 202 and wait_for_job(real_server, again.json()["id"])["state"] == "succeeded"

    case = easy_vqa_cases(1)[0]
    time.sleep(real_server.refresh_interval_s + 1)
    own = chat(real_server, QUARTET, case, strategy="ngd", index="quartet-small")
    assert own.status_code == 200 and own.json()["r2t2"]["index"]["name"] == "quartet-small", own.text
    other = chat(real_server, EMBEDDED, case, strategy="ngd", index="quartet-small")
    assert other.status_code == 400, other.text
    assert other.json()["error"]["message"] == (f"index 'quartet-small' belongs to model {QUARTET!r}, "
                                                f"not to {EMBEDDED!r}")
    back = chat(real_server, QUARTET, case, strategy="ngd", index="embedded")
    assert back.status_code == 400 and f"belongs to model {EMBEDDED!r}" in back.json()["error"]["message"]
