"""Verified answers over HTTP (/v1/references) on the session's real server: who may send them, every bad input a
clear 4xx with nothing stored, a completion verified by its id, the references re-routing then borrows from,
removal, metrics and compaction.

The answers grow an index of their own (rebuilt here from a few reference samples), so the default index other
tests read stays as it was.
"""
from __future__ import annotations

import base64
import io
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow
INDEX = "verified"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def grown(real_server: RealServer) -> str:
    """An index of the embedded model to grow (from 300 reference samples)."""
    from conftest import wait_for_job

    reply = httpx.post(f"{real_server.base}/v1/indexes/{INDEX}/rebuild", headers=bearer(real_server.admin_token),
                       json={"dataset": {"source": "builtin", "split": "reference", "limit": 300},
                             "model": real_server.model}, timeout=30)
    assert reply.status_code == 202, reply.text
    assert wait_for_job(real_server, reply.json()["id"])["state"] == "succeeded"
    return INDEX


def post(server: RealServer, items: list[dict[str, Any]], token: str | None = None, **body: Any) -> httpx.Response:
    headers = bearer(token or server.feedback_token)
    return httpx.post(f"{server.base}/v1/references", headers=headers, timeout=120,
                      json={"model": server.model, "index": INDEX, "references": items, **body})


def listed(server: RealServer, **params: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{server.base}/v1/references", headers=bearer(server.admin_token), timeout=30,
                      params={"model": server.model, "index": INDEX, **params})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def chat(server: RealServer, question: str, url: str, **r2t2: Any) -> dict[str, Any]:
    body = {"model": server.model, "max_tokens": 4, "temperature": 0, "r2t2": {"index": INDEX, **r2t2},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_without_a_token_nothing_is_stored(real_server: RealServer, grown: str, easy_vqa_cases: Cases) -> None:
    question, answer, url = easy_vqa_cases(1)[0]
    item = {"image": url, "question": question, "answer": answer}
    before = len(listed(real_server))
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {real_server.feedback_token}"}):
        reply = httpx.post(f"{real_server.base}/v1/references", headers=headers, timeout=30,
                           json={"model": real_server.model, "index": INDEX, "references": [item]})
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    off = httpx.post(f"{real_server.base}/torch/v1/references", headers=bearer(real_server.feedback_token),
                     json={"model": real_server.model, "references": [item]}, timeout=30)
    assert off.status_code == 403 and "R2T2_FEEDBACK_TOKEN" in off.json()["error"]["message"]
    assert len(listed(real_server)) == before


@pytest.mark.parametrize("items,extra,status,param", [
    ([], {}, 400, "references"),
    ([{"answer": "red"}], {}, 400, "references.0"),
    ([{"completion_id": "chatcmpl-x", "image": "data:,", "question": "q", "answer": "red"}], {}, 400, "references.0"),
    ([{"image": "PLACEHOLDER", "question": "what color?"}], {}, 400, "references.0.answer"),
    ([{"image": "data:image/png;base64,aGVsbG8=", "question": "what color?", "answer": "red"}], {}, 400,
     "references.0.image"),
    ([{"image": "data:text/plain;base64,aGVsbG8=", "question": "what color?", "answer": "red"}], {}, 415,
     "references.0.image"),
    ([{"image": "BOMB", "question": "what color?", "answer": "red"}], {}, 413, "references.0.image"),
    ([{"image": "PLACEHOLDER", "question": "what color?", "answer": "red"}], {"model": "no-such-model"}, 404,
     "model"),
    ([{"image": "PLACEHOLDER", "question": "what color?", "answer": "red"}], {"index": "embedded-missing"}, 409,
     "index"),
    ([{"image": "PLACEHOLDER", "question": "what color?", "answer": "red"}] * 257, {}, 400, "references"),
])
def test_bad_feedback_is_a_clear_4xx_and_stores_nothing(real_server: RealServer, grown: str, items: list[dict],
                                                       extra: dict, status: int, param: str) -> None:
    before = len(listed(real_server))
    small, bomb = png((8, 8)), png((5000, 5000))
    items = [{k: (small if v == "PLACEHOLDER" else bomb if v == "BOMB" else v) for k, v in item.items()}
             for item in items]
    body = {"model": real_server.model, "index": INDEX, "references": items, **extra}
    reply = httpx.post(f"{real_server.base}/v1/references", headers=bearer(real_server.feedback_token), json=body,
                       timeout=60)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["param"] == param and reply.json()["error"]["message"]
    assert len(listed(real_server)) == before


def test_a_verified_completion_becomes_a_reference_that_re_routing_borrows(real_server: RealServer, grown: str,
                                                                          easy_vqa_cases: Cases) -> None:
    question, answer, url = easy_vqa_cases(1)[0]  # a red triangle: some routing answers "triangle" with a margin
    served = chat(real_server, question, url, strategy="kernel", guard=False)
    record = served["r2t2"]
    assert record["verify_until"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    reply = post(real_server, [{"completion_id": served["id"], "answer": answer, "task": "color"}], wait_s=60)
    assert reply.status_code == 200, reply.text
    fate = reply.json()["data"][0]
    assert reply.json()["index"] == INDEX and fate["status"] == "added", fate["reason"]
    assert fate["how"]["steps"] >= 0 and fate["how"]["loss"] < 0.5 and fate["source"]["token"] == "labeller"
    assert fate["source"]["completion_id"] == served["id"]
    again = post(real_server, [{"image": url, "question": question, "answer": answer.upper()}]).json()["data"][0]
    assert again["status"] == "duplicate" and again["id"] == fate["id"]  # the same image and question, any form

    row = "feedback/" + fate["id"]
    deadline = time.monotonic() + 10 * real_server.refresh_interval_s
    while True:  # visible to re-routing within a refresh or two
        neighbours = [n["id"] for n in chat(real_server, question, url, strategy="kernel", guard=False)["r2t2"][
            "neighbours"]]
        if row in neighbours or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row in neighbours

    mine = listed(real_server, source="labeller", id=fate["id"])
    assert [item["status"] for item in mine] == ["added"] and mine[0]["answer"] == answer
    metrics = httpx.get(f"{real_server.base}/metrics", timeout=30).text
    assert f'r2t2_feedback_items{{fate="added",index="{INDEX}"}}' in metrics
    assert f'r2t2_feedback_references{{index="{INDEX}"}}' in metrics

    other = httpx.delete(f"{real_server.base}/v1/references", headers=bearer(real_server.feedback_token), timeout=30,
                         params={"model": real_server.model, "index": INDEX, "source": "admin"})
    assert other.status_code == 400  # a feedback token removes only what it sent
    gone = httpx.delete(f"{real_server.base}/v1/references", headers=bearer(real_server.feedback_token), timeout=30,
                        params={"model": real_server.model, "index": INDEX, "id": fate["id"]})
    assert gone.status_code == 200 and gone.json()["removed"] == [fate["id"]]
    time.sleep(3 * real_server.refresh_interval_s)
    neighbours = [n["id"] for n in chat(real_server, question, url, strategy="kernel", guard=False)["r2t2"]["neighbours"]]
    assert row not in neighbours


def test_a_sample_of_its_own_in_bare_base64_is_added_and_compacted_into_a_version(real_server: RealServer,
                                                                                 grown: str,
                                                                                 easy_vqa_cases: Cases) -> None:
    from conftest import wait_for_job

    question, answer, url = easy_vqa_cases(4)[3]  # "does the image contain a circle?": no
    bare = url.split(",", 1)[1]
    reply = post(real_server, [{"image": bare, "question": question, "answer": answer}], wait_s=60,
                 token=real_server.admin_token)
    fate = reply.json()["data"][0]
    assert fate["status"] == "added" and fate["source"]["token"] == "admin", fate["reason"]
    job = httpx.post(f"{real_server.base}/v1/indexes/{INDEX}/compact", headers=bearer(real_server.admin_token),
                     timeout=30)
    assert job.status_code == 202, job.text
    done = wait_for_job(real_server, job.json()["id"])
    assert done["state"] == "succeeded", done
    detail = httpx.get(f"{real_server.base}/v1/indexes/{INDEX}", timeout=30).json()
    assert detail["current_version"] == done["version"]
    assert detail["manifest"]["feedback_through"] > 0 and detail["manifest"]["dataset"]["source"] == "compaction"
    time.sleep(3 * real_server.refresh_interval_s)
    neighbours = [n["id"] for n in chat(real_server, question, url, strategy="kernel", guard=False)["r2t2"]["neighbours"]]
    assert "feedback/" + fate["id"] in neighbours
