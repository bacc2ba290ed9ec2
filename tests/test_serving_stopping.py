"""Every way of stopping the server leaves no process behind, within 15 s, exits 0 and logs nothing after its
final "r2t2 stopped" line.

Each way starts a real server (`python -m serving.run`: Ray, the four deployments, a vLLM engine) in the
setting that way needs (a terminal for Ctrl-C; in the background with SIGINT ignored, as a script's `&` leaves
it; a PID namespace of its own for `ray stop`, which stops every Ray process it can see, and for a container's
stop, where the server is the namespace's first process), stops it, and then looks for any process still
carrying the server's marker (bench/stop_ways.py): the server, Ray's processes, the replicas, vLLM's engine
core and worker, multiprocessing's resource tracker. Whatever happens, the test kills what it started. The
times and requests in flight are bench/stop_bench.py's.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.stop_ways import NAMESPACED, WAYS, Launched, launch, namespaces_allowed, stop, write_config
from serving.lifecycle.child_processes import process_name

pytestmark = pytest.mark.slow
STOPPED_WITHIN_S = 15.0
ENGINE_TITLE_WAIT_S = 15.0


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("stopping"))


@pytest.fixture
def server(config_file: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Launched]:
    if request.param in NAMESPACED and not namespaces_allowed():
        pytest.skip(f"{request.param} runs only in a PID namespace of its own, and unshare is not permitted here")
    launched = launch(config_file, tmp_path / "server.log", request.param)
    try:
        launched.wait_until_serving()
        yield launched
    finally:
        launched.kill()


@pytest.mark.parametrize("server", WAYS, indirect=True, ids=WAYS)
def test_every_way_of_stopping_leaves_nothing_behind(server: Launched) -> None:
    assert _engine_core_seen(server), f"no engine core, nothing would be tested; running: {_commands(server)}\n" \
                                      f"{server.text()[-3000:]}"
    seconds, left = stop(server, STOPPED_WITHIN_S)
    assert not left, f"{server.way}: still running {STOPPED_WITHIN_S} s later: {left}\n{server.text()[-3000:]}"
    assert "r2t2 stopped in" in server.text(), server.text()[-3000:]
    assert server.after_stopped() == [], server.text()[-3000:]
    if server.way != "ray stop":  # there the server is the namespace's child, not ours to wait for
        assert server.process.wait(10) == 0, server.text()[-3000:]
    print(f"{server.way}: no process left after {seconds:.1f} s")  # shown with pytest -s


def _engine_core_seen(server: Launched, within_s: float = ENGINE_TITLE_WAIT_S) -> bool:
    """Whether vLLM's engine core runs among the server's processes: known by its process title, or, where
    the title is not (yet) set, by the command line multiprocessing spawned it with (the engine's only one)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if any(_is_engine_core(p) for p in server.left()):
            return True
        time.sleep(0.5)
    return False


def _is_engine_core(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return process_name(process) == "VLLM::EngineCore" or "multiprocessing.spawn" in " ".join(process.cmdline())
    return False


def _commands(server: Launched) -> list[str]:
    found = []
    for process in server.left():
        with contextlib.suppress(psutil.Error):
            found.append(f"{process.pid} {process_name(process)}: {' '.join(process.cmdline())[:120]}")
    return found
