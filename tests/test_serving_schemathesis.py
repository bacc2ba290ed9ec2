"""The OpenAPI document tells the truth: schemathesis (4.32) fuzzes the session's real server from it.

Every check runs on every operation with a bounded number of examples and a fixed seed; no admin token
is sent, so the calls that would change the session's indexes are all answered 401 (their bodies are
declared by the document and checked by their own tests). tests/schemathesis.toml and
tests/schemathesis_hooks.py say what the document cannot state and how that is held in check instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import RealServer

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
MAX_EXAMPLES = 20  # per operation and phase: about 800 requests, about 15 s on 2 cores
RUN_TIMEOUT_S = 900


def test_the_server_keeps_to_its_openapi_document(real_server: RealServer, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).with_name("st")), "--config-file", str(TESTS / "schemathesis.toml"), "run",
               f"{real_server.base}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
               "--seed", "0", "--generation-database", "none", "--request-timeout", "120", "--no-color"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": str(TESTS / "schemathesis_hooks.py")})
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]


def test_a_wrong_method_is_405_naming_the_allowed_ones(real_server: RealServer) -> None:
    document = httpx.get(real_server.base + "/openapi.json", timeout=30).json()
    for path, operations in document["paths"].items():
        allowed = {method.upper() for method in operations}
        wrong = next(m for m in ("PUT", "PATCH", "POST", "DELETE") if m not in allowed)
        url = real_server.base + path.replace("{name}", "embedded").replace("{version}", "1").replace("{job_id}", "x")
        reply = httpx.request(wrong, url, timeout=30)
        assert reply.status_code == 405, (path, wrong, reply.text)
        # Starlette also answers HEAD where it answers GET (and may say so); nothing else.
        assert set(reply.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == allowed, (path, reply.headers)
        assert reply.json()["error"]["message"] == "Method Not Allowed"
