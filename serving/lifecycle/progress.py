"""Start-up progress of `r2t2 serve`: one line per phase with its seconds, so a user knows what is waited for.

Lines read `r2t2 [  12.3 s] <what happened> in <seconds> s`; the bracket is the time since the server
process started. Deployments start in Ray's worker processes; the driver watches Serve's status and
writes a line as each one becomes healthy.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# What each kind of deployment (serving/deployments/app.py names them `<kind>-<model>`) loads before it is healthy.
LOADS = {"ReRouter": "model and reference index", "Generator": "language model engine",
         "IndexManager": "index store", "Ingress": "HTTP API"}
POLL_S = 0.5  # each poll asks the Serve controller; a line may come up to this late


def process_start() -> float:
    """When this process started (epoch seconds), so the first line counts the interpreter's own start."""
    import psutil  # a dependency of Ray

    return psutil.Process().create_time()


class StartupProgress:
    """Writes the start-up lines; safe to call from the deployment watcher's thread."""

    def __init__(self, started: float | None = None) -> None:
        self._started = process_start() if started is None else started
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.time() - self._started

    def line(self, text: str) -> None:
        with self._lock:
            print(f"r2t2 [{self.elapsed():6.1f} s] {text}", flush=True)

    @contextmanager
    def phase(self, done: str) -> Iterator[None]:
        """Time the block; when it succeeds, write `<done> in <seconds> s`."""
        tick = time.monotonic()
        yield
        self.line(f"{done} in {time.monotonic() - tick:.1f} s")

    @contextmanager
    def deployments(self, app: str) -> Iterator[None]:
        """While the block deploys `app`, a line as each of its deployments becomes healthy."""
        tick = time.monotonic()
        healthy: set[str] = set()
        stop = threading.Event()

        def report() -> None:
            from ray import serve

            try:
                found = serve.status().applications.get(app)
            except Exception:  # noqa: BLE001 (the controller is busy starting; the next poll sees it)
                return
            for name, deployment in (found.deployments if found else {}).items():
                if name not in healthy and deployment.status == "HEALTHY":
                    healthy.add(name)
                    loads = LOADS.get(name.split("-", 1)[0])
                    self.line(f"{name}{f' ({loads})' if loads else ''} ready in {time.monotonic() - tick:.1f} s")

        def watch() -> None:
            while not stop.wait(POLL_S):
                report()

        watcher = threading.Thread(target=watch, name="r2t2-startup-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
        report()  # the last ones became healthy between two polls
