"""How the server stops: on every signal a user or a supervisor sends, within seconds, leaving no process behind.

- SIGINT (Ctrl-C), SIGTERM and SIGHUP stop it in every launch. The handlers are installed, not inherited: a
  script that starts the server with `&` hands it SIGINT ignored, and Python then never raises KeyboardInterrupt.
- Stopping is bounded. Serve's shutdown gets `SERVE_STOP_S` and is skipped once the Ray cluster is gone (after
  `ray stop`, or a SIGTERM to the server's whole process group, which reaches Ray's own processes too): waiting
  on a controller that is no longer there is what took 30 s. The server also stops by itself when its cluster
  goes away while it serves.
- A server that starts its own Ray instance tags every process it starts (Ray's, their workers, the vLLM
  engines) with an environment variable they inherit; whatever still carries the tag once Ray is shut down is
  stopped. A replica's own children are also stopped by its watchdog when it dies (serving/lifecycle/child_processes.py).
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Iterator
from types import FrameType

import psutil

from serving.lifecycle.child_processes import process_name, running, terminate

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROCESS_TAG = "R2T2_SERVER_PROCESSES"  # the environment variable that marks the processes a server started
# The four steps of a stop, about 10 s at most together: draining the ingress (new requests get a 503, those in
# flight are answered: serving/deployments/draining.py), Serve's own shutdown (each replica then waits at most 3 s
# for what it still runs, serving/deployments/app.py), leaving Ray (and stopping the instance this server started),
# then SIGTERM to what is left, and SIGKILL after the grace (twice: before and after SIGKILL).
DRAIN_S = 2.5
SERVE_STOP_S = 4.0
RAY_STOP_S = 2.0
SWEEP_GRACE_S = 1.0
POLL_S = 0.5


class StopRequested(BaseException):
    """A stop signal arrived. Raised in the main thread like KeyboardInterrupt, so it cuts start-up short too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    ignore_stop_signals()  # one stop at a time: a second Ctrl-C must not interrupt the first one's clean-up
    raise StopRequested(signum)


def ignore_stop_signals() -> None:
    """From now on a stop is under way: further stop signals change nothing."""
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)


def catch_stop_signals() -> None:
    """The first SIGINT, SIGTERM or SIGHUP from now on raises StopRequested. Call again after `ray.init`, which
    puts in a SIGTERM handler of its own (one that exits at once)."""
    for each in STOP_SIGNALS:
        signal.signal(each, _raise_stop)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """`catch_stop_signals` inside; the handlers from before come back after."""
    previous = {each: signal.getsignal(each) for each in STOP_SIGNALS}
    catch_stop_signals()
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def tag_processes() -> str:
    """Mark every process this one starts from now on (the variable is inherited), and return the mark."""
    tag = f"{os.getpid()}-{time.time_ns()}"
    os.environ[PROCESS_TAG] = tag
    return tag


def tagged_processes(tag: str, variable: str = PROCESS_TAG) -> list[psutil.Process]:
    """The running processes, other than this one, whose environment carries `variable=tag`."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(variable) == tag:
                found.append(process)
        except psutil.Error:  # gone meanwhile, a zombie, or another user's
            pass
    return found


class ClusterWatch:
    """Tells whether the Ray cluster this process is connected to is still there; call after `ray.init`."""

    def __init__(self) -> None:
        import ray

        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        self._gcs = (host, int(port))
        # A Ray instance this process started: its GCS server and raylet are this process's children.
        self._core = [p for p in psutil.Process().children() if process_name(p) in ("gcs_server", "raylet")]

    def gone(self) -> bool:
        """True once this process's own raylet or GCS server has exited or the GCS refuses connections."""
        if any(not running(process) for process in self._core):
            return True
        try:
            with socket.create_connection(self._gcs, timeout=1.0):
                return False
        except OSError:
            return True

    def wait(self) -> None:
        """Return once the cluster is gone (two looks in a row); a stop signal raises StopRequested meanwhile."""
        misses = 0
        while misses < 2:
            time.sleep(POLL_S)
            misses = misses + 1 if self.gone() else 0


def shut_down(watch: ClusterWatch | None, tag: str | None, app: str | None = None) -> list[str]:
    """Drain the ingress of `app` and stop Serve (bounded, skipped once the cluster is gone, or when Serve never
    started: `app` None), leave Ray, then stop what still carries `tag`.

    Returns 'pid (name)' of each process that was still running at the end and had to be stopped.
    """
    import ray

    gone = watch is not None and watch.gone()
    if watch is not None and not gone and app is not None:
        asyncio.run(_stop_serve(watch, app))
        gone = watch.gone()
    if gone:
        # Nothing to leave: Ray's shutdown would only find its raylet dead and end this process on the spot.
        atexit.unregister(ray.shutdown)
    elif ray.is_initialized():
        # A cluster on its way down can leave ray.shutdown() waiting on connections that never answer.
        leaving = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
        leaving.start()
        leaving.join(RAY_STOP_S)
    if tag is None:
        return []
    left = tagged_processes(tag)
    names = [f"{process.pid} ({process_name(process)})" for process in left]
    terminate(left, SWEEP_GRACE_S)
    return names


async def _stop_serve(watch: ClusterWatch, app: str) -> None:
    from ray import serve

    await _bounded(_drain(app), DRAIN_S + 0.5, watch)
    await _bounded(serve.shutdown_async(), SERVE_STOP_S, watch)


async def _bounded(step: Awaitable[object], within_s: float, watch: ClusterWatch) -> None:
    """Run one step of the stop for `within_s` at most, and not past the cluster's end; its failure is not the
    stop's (what is left is stopped next)."""
    running = asyncio.ensure_future(step)
    deadline = time.monotonic() + within_s
    while not running.done() and time.monotonic() < deadline and not watch.gone():
        await asyncio.wait({running}, timeout=POLL_S)
    if not running.done():
        running.cancel()
    with contextlib.suppress(BaseException):
        await running


async def _drain(app: str) -> None:
    """Drain every running ingress replica of `app`. A call reaches one replica, whichever Serve picks: calls go
    out, one per replica not yet heard from, until each has answered."""
    from ray import serve

    handle = serve.get_app_handle(app)
    status = serve.status().applications.get(app)
    ingress = None if status is None else status.deployments.get(handle.deployment_name)
    replicas = 1 if ingress is None else max(ingress.replica_states.get("RUNNING", 0), 1)
    drained: set[str] = set()
    while len(drained) < replicas:
        answers = await asyncio.gather(*(handle.drain.remote(DRAIN_S) for _ in range(replicas - len(drained))))
        drained |= {answer["replica"] for answer in answers}
