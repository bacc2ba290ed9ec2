"""The process a user or a supervisor signals holds no Ray: it runs the server as a child in a session of its own.

Ray starts its processes (GCS, raylet, HTTP proxy, workers) in the process group of the process that starts it. A
SIGTERM to that group (systemd's stop, `kill -- -PGID`) would reach them all at once: the HTTP proxy would drop
every connection it holds before the server could answer the requests in flight. So the process started as
`r2t2 serve` only starts the server in a session of its own, forwards every stop signal to it (the server then
drains and stops in order, serving/lifecycle/stopping.py), collects any orphan handed to it (as a container's first
process must), and exits with the server's exit status. The server dies with it: if this process is killed, the
server gets SIGTERM and stops in order.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from types import FrameType

from serving.lifecycle.stopping import STOP_SIGNALS

SERVER_PROCESS = "R2T2_SERVER_PROCESS"  # set in the server's environment: it is the child, not the supervisor
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def is_server_process() -> bool:
    return os.environ.get(SERVER_PROCESS) == "1"


def _stop_with_parent() -> None:
    """In the child before it runs: SIGTERM when the supervisor dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(command: Sequence[str]) -> int:
    """Run `command` as the server in a new session; return its exit status (128 + N when signal N ended it)."""
    server = subprocess.Popen(list(command), env={**os.environ, SERVER_PROCESS: "1"}, start_new_session=True,
                              preexec_fn=_stop_with_parent)

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signum)

    for each in STOP_SIGNALS:
        signal.signal(each, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # every child: the server, and orphans a container hands its first process
        except ChildProcessError:  # collected elsewhere: its status is unknown
            return 1
        if pid == server.pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code
