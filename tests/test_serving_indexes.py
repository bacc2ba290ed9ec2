"""Reference indexes over HTTP: listing, admin-only rebuilds and deletions, and hot swap under load.

The server tests use the session's shared `real_server` (tests/conftest.py): the real embedded model,
the vLLM CPU engine, and an index directory of its own. The dataset-spec tests need no server.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from conftest import JOB_TIMEOUT_S, wait_for_job
from indexes.specs import DatasetFileMissing, DatasetSourceForbidden, DatasetSpecError, validate_spec
from serving.pipeline.factory import DEFAULT_INDEX

if TYPE_CHECKING:
    from conftest import Cases, RealServer

SMALL_SPEC = {"source": "builtin", "split": "reference", "limit": 300}
LOAD_REQUESTS = 200
LOAD_CONCURRENCY = 8
AFTER_SWAP_WANTED = 16  # the load goes on until this many requests started after the swap
SWAP_SLACK_S = 2.0  # loading and verifying a small new version, beyond the refresh interval


# Dataset specs (no server) ---------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "field"), [
    ([], "dataset"),
    ({"split": "reference"}, "dataset.source"),
    ({"source": "builtin", "split": "nope"}, "dataset.split"),
    ({"source": "builtin", "split": "reference", "tasks": ["colour"]}, "dataset.tasks"),
    ({"source": "builtin", "split": "reference", "tasks": []}, "dataset.tasks"),
    ({"source": "builtin", "split": "reference", "limit": 0}, "dataset.limit"),
    ({"source": "builtin", "split": "reference", "limit": True}, "dataset.limit"),
    ({"source": "builtin", "split": "reference", "seed": -1}, "dataset.seed"),
    ({"source": "builtin", "split": "reference", "path": "x"}, "dataset.path"),
    ({"source": "jsonl", "path": ""}, "dataset.path"),
])
def test_bad_spec_names_its_field(spec: Any, field: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetSpecError) as caught:
        validate_spec(spec, tmp_path)
    assert caught.value.field == field and str(caught.value).startswith(field)


def test_builtin_spec_is_canonical() -> None:
    assert validate_spec({"source": "builtin", "split": "test", "tasks": ["count", "count"]}) == {
        "source": "builtin", "split": "test", "tasks": ["count"], "limit": None, "seed": 0}
    # 2.0 is an integer to JSON Schema, and so to the spec: kept as 2.
    assert validate_spec({"source": "builtin", "split": "test", "limit": 2.0, "seed": 1.0}) == {
        "source": "builtin", "split": "test", "tasks": None, "limit": 2, "seed": 1}


def test_jsonl_paths_stay_inside_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.jsonl").write_text("")
    (tmp_path / "secret.jsonl").write_text("")
    (data / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    expected = {"source": "jsonl", "path": str((data / "mine.jsonl").resolve())}
    assert validate_spec({"source": "jsonl", "path": "mine.jsonl"}, data) == expected
    # Malformed (400), refused by this server (403), or naming no file (404): the OpenAPI document declares the first.
    for path, refusal in ((str(data / "mine.jsonl"), DatasetSpecError), ("/etc/passwd", DatasetSpecError),
                          (" mine.jsonl", DatasetSpecError), ("../secret.jsonl", DatasetSourceForbidden),
                          ("link.jsonl", DatasetSourceForbidden), ("missing.jsonl", DatasetFileMissing)):
        with pytest.raises(refusal, match="dataset.path") as caught:
            validate_spec({"source": "jsonl", "path": path}, data)
        assert type(caught.value) is refusal, path
    with pytest.raises(DatasetSourceForbidden, match="disabled"):
        validate_spec({"source": "jsonl", "path": "mine.jsonl"}, None)


# Server helpers -------------------------------------------------------------------------------------

def admin(server: RealServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


def chat_body(server: RealServer, case: tuple[str, str, str]) -> dict[str, Any]:
    question, _, url = case
    return {"model": server.model, "max_tokens": 4, "temperature": 0, "r2t2": {"strategy": "ngd"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}


def describe(server: RealServer, name: str) -> dict[str, Any]:
    reply = httpx.get(f"{server.base}/v1/indexes/{name}", timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def rebuild(server: RealServer, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Start a rebuild for the embedded model and wait for it; returns the finished job."""
    reply = httpx.post(f"{server.base}/v1/indexes/{name}/rebuild", json={"dataset": spec, "model": server.model},
                       headers=admin(server), timeout=30)
    assert reply.status_code == 202, reply.text
    assert reply.headers["location"] == f"/v1/jobs/{reply.json()['id']}"
    return wait_for_job(server, reply.json()["id"])


# Server tests -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_admin_token_is_enforced(real_server: RealServer) -> None:
    url = f"{real_server.base}/v1/indexes/scratch/rebuild"
    body = {"dataset": {"source": "builtin", "split": "reference", "limit": 32}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {real_server.admin_token}"},
                    {"Authorization": real_server.admin_token}):
        reply = httpx.post(url, json=body, headers=headers, timeout=30)
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error", headers
    gone = httpx.delete(f"{real_server.base}/v1/indexes/{DEFAULT_INDEX}/versions/1", timeout=30)
    assert gone.status_code == 401
    assert "scratch" not in [i["name"] for i in httpx.get(real_server.base + "/v1/indexes", timeout=30).json()["data"]]
    job = rebuild(real_server, "scratch", body["dataset"])
    assert job["state"] == "succeeded", job["error"]
    assert describe(real_server, "scratch")["current_version"] == job["version"]


@pytest.mark.slow
def test_list_and_describe_show_the_default_index(real_server: RealServer) -> None:
    listing = httpx.get(real_server.base + "/v1/indexes", timeout=30).json()
    default = next(i for i in listing["data"] if i["name"] == DEFAULT_INDEX)
    assert default["current_version"] in default["versions"] and default["size"] > 0
    detail = describe(real_server, DEFAULT_INDEX)
    assert detail["manifest"]["version"] == detail["current_version"] == default["current_version"]
    assert detail["manifest"]["kept"] == detail["size"]
    assert [v["version"] for v in detail["version_details"]] == detail["versions"]
    for path, param in (("/v1/indexes/no-such-index", "name"), ("/v1/jobs/no-such-job", "job_id"),
                        (f"/v1/indexes/{DEFAULT_INDEX}/versions/9999", "version")):
        reply = (httpx.delete(real_server.base + path, headers=admin(real_server), timeout=30) if "versions" in path
                 else httpx.get(real_server.base + path, timeout=30))
        assert reply.status_code == 404 and reply.json()["error"]["param"] == param, reply.text
    bad_name = httpx.get(real_server.base + "/v1/indexes/bad.name", timeout=30)
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "name"


@dataclass(frozen=True)
class Timed:
    started: float
    finished: float
    status: int
    index: dict[str, Any] | None  # the response's r2t2.index


@dataclass
class LoadRun:
    results: list[Timed]
    job: dict[str, Any]
    posted: float  # the rebuild request was sent at this time
    swapped: float  # the job was seen succeeded, plus the refresh interval and slack


async def load_with_rebuild(server: RealServer, cases: list[tuple[str, str, str]]) -> LoadRun:
    """At least LOAD_REQUESTS chats at LOAD_CONCURRENCY; a rebuild of the default index starts after the
    first few answers, and the load goes on until AFTER_SWAP_WANTED requests started after the swap."""
    results: list[Timed] = []
    marks: dict[str, float] = {}
    job: dict[str, Any] = {}
    finished = asyncio.Event()  # the job has finished (either way) and the swap time has passed
    sent = 0

    async with httpx.AsyncClient(base_url=server.base, timeout=300) as client:

        async def chat(number: int) -> None:
            started = time.monotonic()
            reply = await client.post("/v1/chat/completions", json=chat_body(server, cases[number % len(cases)]))
            index = reply.json().get("r2t2", {}).get("index") if reply.status_code == 200 else None
            results.append(Timed(started, time.monotonic(), reply.status_code, index))

        def more_wanted() -> bool:
            after = sum(r.started >= marks["swapped"] for r in results) if "swapped" in marks else 0
            return sent < LOAD_REQUESTS or not finished.is_set() or (job.get("state") == "succeeded"
                                                                      and after < AFTER_SWAP_WANTED)

        async def worker() -> None:
            nonlocal sent
            while more_wanted():
                sent += 1
                await chat(sent)

        async def rebuilder() -> None:
            while len(results) < 2 * LOAD_CONCURRENCY:
                await asyncio.sleep(0.05)
            marks["posted"] = time.monotonic()
            reply = await client.post(f"/v1/indexes/{DEFAULT_INDEX}/rebuild", json={"dataset": SMALL_SPEC},
                                      headers=admin(server))
            assert reply.status_code == 202, reply.text
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while time.monotonic() < deadline:  # on timeout the job stays "running" and the test fails on it
                job.update((await client.get(f"/v1/jobs/{reply.json()['id']}")).json())
                if job["state"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.2)
            marks["swapped"] = time.monotonic() + server.refresh_interval_s + SWAP_SLACK_S
            await asyncio.sleep(server.refresh_interval_s + SWAP_SLACK_S)
            finished.set()

        await asyncio.gather(rebuilder(), *(worker() for _ in range(LOAD_CONCURRENCY)))
    return LoadRun(results, job, marks["posted"], marks["swapped"])


@pytest.mark.slow
def test_rebuild_under_load_swaps_without_failures(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    old = describe(real_server, DEFAULT_INDEX)["current_version"]
    run = asyncio.run(load_with_rebuild(real_server, easy_vqa_cases(32)))
    assert run.job["state"] == "succeeded", run.job["error"]
    new = run.job["version"]
    results = run.results
    before = [r for r in results if r.finished < run.posted]
    after = [r for r in results if r.started >= run.swapped]
    print(f"\n{len(results)} requests, {len(before)} finished before the rebuild was posted, {len(after)} started "
          f"after the swap; build took {run.job['finished_at'] - run.job['started_at']:.1f}s; v{old} -> v{new}")
    assert len(results) >= LOAD_REQUESTS
    assert [r.status for r in results if r.status != 200] == []
    assert all(r.index is not None and r.index["name"] == DEFAULT_INDEX for r in results)
    assert {r.index["version"] for r in results} <= {old, new}
    assert before and {r.index["version"] for r in before} == {old}
    assert len(after) >= AFTER_SWAP_WANTED and {r.index["version"] for r in after} == {new}
    detail = describe(real_server, DEFAULT_INDEX)
    assert new != old and detail["current_version"] == new and old in detail["versions"]
    assert detail["manifest"]["dataset"] == validate_spec(SMALL_SPEC)


@pytest.mark.slow
def test_bad_rebuild_leaves_the_serving_version(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    serving = describe(real_server, DEFAULT_INDEX)
    url = f"{real_server.base}/v1/indexes/{DEFAULT_INDEX}/rebuild"
    for body, param in (({"dataset": {"source": "builtin", "split": "nope"}}, "dataset.split"),
                        ({"dataset": {"source": "jsonl", "path": "/etc/passwd"}}, "dataset.path"),
                        ({"dataset": SMALL_SPEC, "cap": 0}, "cap"),
                        ({"dataset": SMALL_SPEC, "index_type": "annoy"}, "index_type")):
        reply = httpx.post(url, json=body, headers=admin(real_server), timeout=30)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
    (real_server.data_dir / "broken.jsonl").write_text('{"question": "what colour?"}\n')
    job = rebuild(real_server, DEFAULT_INDEX, {"source": "jsonl", "path": "broken.jsonl"})
    assert job["state"] == "failed" and "broken.jsonl:1" in job["error"] and job["version"] is None
    time.sleep(real_server.refresh_interval_s + SWAP_SLACK_S)
    after = describe(real_server, DEFAULT_INDEX)
    assert (after["current_version"], after["versions"]) == (serving["current_version"], serving["versions"])
    reply = httpx.post(real_server.base + "/v1/chat/completions", json=chat_body(real_server, easy_vqa_cases(1)[0]),
                       timeout=300)
    assert reply.status_code == 200 and reply.json()["r2t2"]["index"] == {
        "name": DEFAULT_INDEX, "version": serving["current_version"]}


@pytest.mark.slow
def test_delete_versions(real_server: RealServer) -> None:
    name = "deletable"
    first = rebuild(real_server, name, {"source": "builtin", "split": "reference", "limit": 32})
    second = rebuild(real_server, name, {"source": "builtin", "split": "reference", "limit": 40})
    assert first["state"] == second["state"] == "succeeded"
    url = f"{real_server.base}/v1/indexes/{name}/versions"
    refused = httpx.delete(f"{url}/{second['version']}", headers=admin(real_server), timeout=30)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "index_in_use"
    assert httpx.delete(f"{url}/{first['version']}", timeout=30).status_code == 401
    deleted = httpx.delete(f"{url}/v{first['version']:04d}", headers=admin(real_server), timeout=30)
    assert deleted.status_code == 200 and deleted.json()["current_version"] == second["version"]
    assert describe(real_server, name)["versions"] == [second["version"]]
    forced = httpx.delete(f"{url}/{second['version']}?force=true", headers=admin(real_server), timeout=30)
    assert forced.status_code == 200 and forced.json()["current_version"] is None
    assert describe(real_server, name)["versions"] == []
