"""What docs/api.md and docs/record.md promise a user, checked on the shared real server."""
from __future__ import annotations

import glob
import json
import re
import time
from typing import Any

import httpx

from conftest import Cases, RealServer
from serving.pipeline.record import R2T2Record
from serving.deployments.ingress import api

CHAT = "/v1/chat/completions"
SERVE_LOGS = "/tmp/ray/session_latest/logs/serve/*.log"  # Ray's default session directory (docs/operations.md)


def chat(server: RealServer, question: str, url: str, **fields: Any) -> httpx.Response:
    body = {"model": server.model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}], **fields}
    return httpx.post(server.base + CHAT, json=body, timeout=300)


def test_models_state_the_limits_and_defaults(real_server: RealServer) -> None:
    card = httpx.get(real_server.base + "/v1/models", timeout=30).json()["data"][0]
    assert card["max_model_len"] == 128  # the embedded LM's own positions
    assert card["max_question_tokens"] == 24
    assert card["defaults"] == {"max_tokens": 16, "temperature": 0.0, "top_p": 1.0}
    assert card["r2t2_defaults"]["strategy"] == "ngd" and card["r2t2_defaults"]["k"] == 5


def test_the_served_document_is_the_app_s(real_server: RealServer) -> None:
    served, built = httpx.get(real_server.base + "/openapi.json", timeout=30).json(), api.openapi()
    for path, item in built["paths"].items():
        for method, operation in item.items():
            assert served["paths"][path][method] == operation, json.dumps(
                {"served": served["paths"][path][method], "built": operation})
    assert served["components"] == built["components"]


def test_every_strategy_s_record_is_documented(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    # The guard off, so kernel and NGD take their steps whatever the neighbours say; guarded, they may be decided
    # before them (a record of its own).
    records = {s: chat(real_server, question, url, r2t2={"strategy": s, "guard": False}).json()["r2t2"]
               for s in ("none", "kernel", "meanshift", "ngd")}
    guarded = chat(real_server, question, url, r2t2={"strategy": "kernel", "guard": True}).json()["r2t2"]
    for strategy, record in [*records.items(), ("guarded kernel", guarded)]:
        R2T2Record.model_validate(record)
        undocumented = set(record) - set(R2T2Record.model_fields)
        assert not undocumented, f"{strategy}: add {undocumented} to R2T2Record and docs/record.md"
        assert all(n["question"] and n["answer"] and n["task"] for n in record["neighbours"])
    none, kernel, shift, ngd = records.values()
    assert none["moved"] == 0 and none["changed_answer"] is False and none["neighbour_space"] is None
    assert "toward_neighbours" in kernel and len(kernel["line_search"]) == 10 and "steps_taken" not in kernel
    assert shift["neighbour_space"] == "routing" and all(n["similarity"] is None for n in shift["neighbours"])
    assert len(ngd["neighbour_loss"]) == ngd["steps_taken"] + 1 and ngd["neighbour_space"] == "question"


def test_compare_with_none_says_whether_the_answer_changed(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(2)[1]
    reply = chat(real_server, question, url, r2t2={"strategy": "ngd", "compare_with_none": True}).json()
    record, answer = reply["r2t2"], reply["choices"][0]["message"]["content"]
    plain = chat(real_server, question, url, r2t2={"strategy": "none"}).json()["choices"][0]["message"]["content"]
    assert record["answer_without_rerouting"] == plain
    assert record["changed_answer"] is (answer != plain)
    assert record["answer_source"] == ("speculative" if record["moved"] == 0 else
                                       "base" if (record["guard"] or {}).get("answer", {}).get("sent") == "base"
                                       else "rerouted")
    same = chat(real_server, question, url, r2t2={"strategy": "none", "compare_with_none": True}).json()["r2t2"]
    assert same["answer_without_rerouting"] == plain and same["changed_answer"] is False


def test_a_question_longer_than_the_model_reads_is_refused(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    _, _, url = easy_vqa_cases(1)[0]
    reply = chat(real_server, "is the shape in this picture " + "really " * 30 + "a circle?", url)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "question_too_long" and error["param"] == "messages.0.content" and "24" in error["message"]


def test_a_streaming_request_that_cannot_be_answered_gets_a_status(real_server: RealServer,
                                                                    easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    reply = chat(real_server, question, url, max_tokens=128, stream=True)
    assert reply.status_code == 400, reply.text  # refused before the status line, not inside a 200 stream
    error = reply.json()["error"]
    assert error["param"] == "max_tokens" and error["code"] == "context_length_exceeded" and "128" in error["message"]


def _log_lines(containing: str) -> list[str]:
    found = []
    for path in glob.glob(SERVE_LOGS):
        with open(path, errors="replace") as handle:
            found += [line for line in handle if containing in line]
    return found


def test_refusals_are_one_log_line_with_the_request_id(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    # Refused in the ingress (a bad option) and deep in the re-router (an unknown index).
    for fields, status in (({"r2t2": {"k": 0}}, 400), ({"r2t2": {"strategy": "kernel", "index": "nope"}}, 404)):
        reply = chat(real_server, question, url, **fields)
        assert reply.status_code == status
        request_id = reply.headers["x-request-id"]
        deadline = time.monotonic() + 20
        while not (lines := _log_lines(f"request {request_id} POST {CHAT} refused: {status}")):
            assert time.monotonic() < deadline, f"no log line for request {request_id}"
            time.sleep(0.5)
        assert len(lines) == 1 and reply.json()["error"]["message"] in lines[0]
        assert not [line for line in _log_lines(request_id) if "Request failed" in line or "Traceback" in line]


def _counter(base: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", httpx.get(base + "/metrics", timeout=30).text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metric_labels_name_the_strategy_or_invalid(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    question, _, url = easy_vqa_cases(1)[0]
    invalid = 'r2t2_requests_total{status="400",strategy="invalid"}'
    kernel = 'r2t2_requests_total{status="404",strategy="kernel"}'
    before = _counter(real_server.base, invalid), _counter(real_server.base, kernel)
    assert httpx.post(real_server.base + CHAT, content=b"{", timeout=30).status_code == 400
    assert chat(real_server, question, url, r2t2={"strategy": "kernel", "index": "nope"}).status_code == 404
    assert (_counter(real_server.base, invalid), _counter(real_server.base, kernel)) == (before[0] + 1, before[1] + 1)


def test_an_older_version_can_be_made_current_again(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    from indexes.embedders import MiniLMEmbedder
    from indexes.specs import build_from_spec
    from indexes.store import IndexStore
    from r2t2.model import load_model

    model, embedder, store = load_model("embedded"), MiniLMEmbedder(), IndexStore(real_server.index_dir)
    for seed in (0, 1):  # v1, then v2 (current)
        build_from_spec("rollback", {"source": "builtin", "split": "reference", "limit": 60, "seed": seed}, model,
                        embedder, store)
    base, admin = real_server.base, {"Authorization": f"Bearer {real_server.admin_token}"}
    activate = base + "/v1/indexes/rollback/versions/{}/activate"
    assert httpx.post(activate.format(1), timeout=30).status_code == 401
    missing = httpx.post(activate.format(9), headers=admin, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "version"
    done = httpx.post(activate.format("v1"), headers=admin, timeout=30)
    assert done.status_code == 200 and done.json()["current_version"] == 1 and done.json()["versions"] == [1, 2]
    question, _, url = easy_vqa_cases(1)[0]
    deadline = time.monotonic() + 10 * real_server.refresh_interval_s + 10
    while (used := chat(real_server, question, url, r2t2={"strategy": "kernel", "index": "rollback"}).json()
           ["r2t2"]["index"]) != {"name": "rollback", "version": 1}:
        assert time.monotonic() < deadline, f"still served {json.dumps(used)}"
        time.sleep(0.5)
