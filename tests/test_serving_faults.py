"""Faults: losing a re-router replica (in-flight requests are retried, /healthz says so within a second),
and rebuilding one index twice at once (409; job records on disk).

The first test kills the ReRouter replica of the session server's torch app (/torch, tests/conftest.py) the way a crash
would, while requests are in flight; Serve starts a new replica and the ingress retries the requests
whose re-router died, so every one is answered. Costs one re-router start (the pipeline loads again).
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from bench.faults import kill_replica, replica_actors

if TYPE_CHECKING:
    from conftest import Cases, RealServer

pytestmark = pytest.mark.slow
DEPLOYMENT = "ReRouter-r2t2-embedded"


def test_requests_survive_the_loss_of_their_rerouter(real_server: RealServer, easy_vqa_cases: Cases) -> None:
    base = real_server.base + "/torch"
    cases = easy_vqa_cases(4)

    async def scenario() -> tuple[list[httpx.Response], list[tuple[int, float, str]], str]:
        async with httpx.AsyncClient(timeout=600) as client:
            requests = [asyncio.create_task(client.post(base + "/v1/chat/completions", json={
                "model": real_server.model, "max_tokens": 2, "temperature": 0,
                "r2t2": {"strategy": "ngd", "steps": 30},
                "messages": [{"role": "user", "content": [{"type": "text", "text": q},
                                                          {"type": "image_url", "image_url": {"url": u}}]}]}))
                for q, _, u in cases]
            await asyncio.sleep(1.0)  # the requests are in the re-router
            killed = kill_replica(DEPLOYMENT, app="torch")
            health: list[tuple[int, float, str]] = []
            while not health or health[-1][0] != 200:
                tick = time.perf_counter()
                reply = await client.get(base + "/healthz", timeout=30)
                health.append((reply.status_code, time.perf_counter() - tick, reply.text))
                await asyncio.sleep(0.5)
            return list(await asyncio.gather(*requests)), health, killed

    replies, health, killed = asyncio.run(scenario())
    assert [r.status_code for r in replies] == [200] * len(cases), [r.text for r in replies]
    assert all(r.json()["choices"][0]["message"]["content"] for r in replies)
    assert killed not in replica_actors(DEPLOYMENT, app="torch")  # a new replica answers now
    assert max(seconds for _, seconds, _ in health) < 1.5, health
    unhealthy = [text for status, _, text in health if status == 503]
    assert unhealthy and "r2t2-embedded re-router" in unhealthy[0], health


def test_a_second_rebuild_of_one_index_is_409_and_jobs_are_recorded_on_disk(real_server: RealServer) -> None:
    from conftest import wait_for_job

    url = f"{real_server.base}/v1/indexes/hardening-jobs/rebuild"
    body = {"model": real_server.model, "dataset": {"source": "builtin", "split": "reference", "limit": 30}}
    headers = {"Authorization": f"Bearer {real_server.admin_token}"}
    first = httpx.post(url, json=body, headers=headers, timeout=30)
    assert first.status_code == 202, first.text
    second = httpx.post(url, json=body, headers=headers, timeout=30)
    assert second.status_code == 409, second.text
    error = second.json()["error"]
    assert error["code"] == "rebuild_in_progress" and first.json()["id"] in error["message"]
    job = wait_for_job(real_server, first.json()["id"])
    assert job["state"] == "succeeded" and job["interrupted"] is False
    record = real_server.index_dir / ".jobs" / f"{job['id']}.json"
    assert json.loads(record.read_text())["state"] == "succeeded"  # what a restarted index manager reads
    again = httpx.post(url, json=body, headers=headers, timeout=30)  # free again once the first finished
    assert again.status_code == 202 and wait_for_job(real_server, again.json()["id"])["state"] == "succeeded"
