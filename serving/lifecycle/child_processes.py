"""Child processes die with the replica that started them, however the replica ends.

A Generator replica starts vLLM's engine core as a child process, which starts a worker and a
multiprocessing resource tracker of its own. A replica stopped in order shuts its engine down. One that
is not (its node's raylet killed, `ray stop`, SIGTERM to the server's whole process group) leaves them
running with no parent: Ray puts each replica in a process group of its own, so no group signal reaches
them, and nothing in vLLM watches its parent. The watchdog is a small process of its own that watches the
replica; once the replica is gone it stops every descendant it saw (SIGTERM, then SIGKILL), then exits.

    python -I serving/lifecycle/child_processes.py PID    (started by `start_child_watchdog`; needs only the stdlib and psutil)
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable

import psutil

POLL_S = 0.5  # how often the watchdog looks at the replica and notes its descendants
GRACE_S = 3.0  # SIGTERM first; what is still alive after this gets SIGKILL


def terminate(processes: Iterable[psutil.Process], grace_s: float = GRACE_S) -> list[psutil.Process]:
    """SIGTERM each process, SIGKILL those still running after `grace_s`; returns the ones that needed SIGKILL.

    psutil checks each process's start time before signalling it, so a pid reused meanwhile is never hit. A
    zombie counts as gone: it has exited, only its parent has not collected it yet.
    """
    signalled = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
            signalled.append(process)
    stubborn = still_running(signalled, grace_s)
    for process in stubborn:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    still_running(stubborn, grace_s)
    return stubborn


def still_running(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to `timeout_s` for the processes to end; those still running then."""
    deadline = time.monotonic() + timeout_s
    alive = [process for process in processes if running(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [process for process in alive if running(process)]
    return alive


def start_child_watchdog() -> subprocess.Popen:
    """Start a watchdog for this process's descendants; it lives until this process is gone.

    `-I` keeps the watchdog's interpreter small: PYTHONPATH (and with it the child site's sitecustomize, which
    installs the torchvision hook) is ignored. Its own session keeps signals meant for this replica's group or
    terminal off it.
    """
    return subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
                            stdin=subprocess.DEVNULL, start_new_session=True)


def watch(pid: int) -> list[str]:
    """Note the descendants of `pid` until it is gone; then stop those still running. Returns 'pid (name)' of each."""
    try:
        watched = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, psutil.Process] = {}
    while running(watched):
        try:
            for child in watched.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    left = {p.pid: p for p in seen.values() if running(p)}
    for process in list(left.values()):  # and whatever they started after the last look
        try:
            left.update({child.pid: child for child in process.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    left.pop(os.getpid(), None)
    names = [f"{process.pid} ({process_name(process)})" for process in left.values()]
    terminate(left.values())
    return names


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent has not collected it yet)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_name(process: psutil.Process) -> str:
    """Its name, or "?" once it is gone."""
    try:
        return process.name()
    except psutil.Error:
        return "?"


def main(argv: list[str]) -> None:
    pid = int(argv[0])
    stopped = watch(pid)
    if stopped:
        print(f"r2t2 child watchdog: process {pid} is gone; stopped what it left running: {', '.join(stopped)}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
