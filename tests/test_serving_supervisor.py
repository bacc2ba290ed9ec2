"""The process `r2t2 serve` starts holds no Ray: it runs the server in a session of its own, hands it each stop
signal once (a SIGTERM to the supervisor's whole group included) and exits with its status."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

SERVER = """
import os, signal, sys, time
seen = []
signal.signal(signal.SIGTERM, lambda *_: seen.append("TERM"))
print(os.getpid(), os.getsid(0), flush=True)
while not seen:
    time.sleep(0.05)
time.sleep(0.5)  # a second signal, if one came, is counted too
print(" ".join(seen), flush=True)
sys.exit(3)
"""
SUPERVISOR = "import sys; from serving.lifecycle.supervisor import supervise; sys.exit(supervise(sys.argv[1:]))"


def _started(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A supervisor leading a process group of its own, and the file its server writes to, once it has."""
    out = tmp_path / "server.out"
    with out.open("w") as handle:
        supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, sys.executable, "-c", SERVER],
                                      stdout=handle, start_new_session=True, cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 30
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    return supervisor, out


def test_a_group_sigterm_reaches_the_server_once_through_the_supervisor(tmp_path: Path) -> None:
    supervisor, out = _started(tmp_path)
    pid, session = map(int, out.read_text().split()[:2])
    assert session == pid != supervisor.pid  # the server leads a session of its own
    assert psutil.Process(pid).ppid() == supervisor.pid
    os.killpg(supervisor.pid, signal.SIGTERM)  # systemd's stop: the supervisor's whole group
    assert supervisor.wait(30) == 3  # the server's own exit status
    assert out.read_text().split()[2:] == ["TERM"]  # forwarded once, not also sent by the group signal


def test_the_server_stops_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    supervisor, out = _started(tmp_path)
    server = psutil.Process(int(out.read_text().split()[0]))
    supervisor.kill()
    supervisor.wait(10)
    server.wait(10)  # it got SIGTERM from the kernel when its parent died, and stopped
    assert out.read_text().split()[2:] == ["TERM"]
