"""The pieces that make stopping reliable, each in a small process of its own (no Ray, no engine).

- A stop signal reaches the server however it was launched: even with SIGINT ignored, as a script's `&` leaves it.
- A replica's children die with it: the child watchdog stops them once the process that started them is gone,
  even when that process was killed with SIGKILL and could not clean up.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **options: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            **options)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_stops_a_server_launched_with_sigint_ignored(signum: signal.Signals) -> None:
    process = _python("""
        import time
        from serving.lifecycle.stopping import StopRequested, stop_signals
        with stop_signals():
            try:
                print("ready", flush=True)
                time.sleep(60)
            except StopRequested as stop:
                print("stopping on", stop, flush=True)
    """, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signum)
    out, _ = process.communicate(timeout=20)
    assert out == f"stopping on {signum.name}\n" and process.returncode == 0


def test_the_watchdog_stops_what_a_killed_process_left_running() -> None:
    parent = _python("""
        import subprocess, time
        from serving.lifecycle.child_processes import start_child_watchdog
        watchdog = start_child_watchdog()
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # a group of its own, like an engine
        grandchild = subprocess.Popen(["sleep", "300"])
        print(watchdog.pid, child.pid, grandchild.pid, flush=True)
        time.sleep(300)
    """)
    watchdog, *left = (psutil.Process(int(pid)) for pid in parent.stdout.readline().split())
    time.sleep(1.0)  # the watchdog has had a look at the children
    parent.kill()
    parent.wait()
    _, alive = psutil.wait_procs(left, timeout=10)
    for process in alive:
        process.kill()
    assert not alive, "the watchdog did not stop the children of the killed process"
    watchdog.wait(10)  # its work done, the watchdog exits
