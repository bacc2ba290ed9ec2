"""Asynchronous index rebuilds: a small thread pool with pollable job status.

The HTTP layer submits a rebuild and returns the job id at once (building takes minutes); clients poll
the status. Jobs live in this process only: a restart forgets them, the index store does not.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from indexes.errors import UnknownJobError
from indexes.manifest import Manifest

log = logging.getLogger(__name__)
MAX_REMEMBERED = 1000  # finished jobs beyond this many are forgotten, oldest first

ProgressCallback = Callable[[float], None]
RebuildFn = Callable[[ProgressCallback], Manifest]


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobStatus:
    """An immutable snapshot of one job; a new one replaces it on every change."""

    id: str
    index: str
    state: JobState
    progress: float  # 0..1
    created_at: float  # unix seconds
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    version: int | None = None  # the index version the job produced

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


class JobRunner:
    """Runs rebuild functions in background threads (one at a time by default: builds are heavy)."""

    def __init__(self, max_workers: int = 1) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="index-job")
        self._jobs: OrderedDict[str, JobStatus] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, index: str, rebuild: RebuildFn) -> str:
        """Queue `rebuild(progress_callback) -> Manifest` for index `index`; returns the job id."""
        job_id = uuid.uuid4().hex
        self._put(JobStatus(id=job_id, index=index, state=JobState.QUEUED, progress=0.0, created_at=time.time()))
        self._executor.submit(self._run, job_id, rebuild)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            status = self._jobs.get(job_id)
        if status is None:
            raise UnknownJobError(f"no job with id {job_id!r} (jobs are kept in memory by the process that ran them)")
        return status

    def list(self) -> list[JobStatus]:
        with self._lock:
            return list(self._jobs.values())

    def wait(self, job_id: str, timeout_s: float) -> JobStatus:
        """Poll until the job finishes or the timeout passes; returns the last status either way."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status.state in (JobState.SUCCEEDED, JobState.FAILED) or time.monotonic() >= deadline:
                return status
            time.sleep(0.01)

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def _put(self, status: JobStatus) -> None:
        with self._lock:
            self._jobs[status.id] = status
            finished = [k for k, v in self._jobs.items() if v.state in (JobState.SUCCEEDED, JobState.FAILED)]
            for key in finished[: max(0, len(self._jobs) - MAX_REMEMBERED)]:
                del self._jobs[key]

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _run(self, job_id: str, rebuild: RebuildFn) -> None:
        self._update(job_id, state=JobState.RUNNING, started_at=time.time())

        def report(fraction: float) -> None:
            self._update(job_id, progress=max(0.0, min(1.0, float(fraction))))

        try:
            manifest = rebuild(report)
        except Exception as err:  # the job records any failure; the worker thread must survive it
            log.exception("job %s failed", job_id)
            self._update(job_id, state=JobState.FAILED, finished_at=time.time(), error=f"{type(err).__name__}: {err}")
            return
        self._update(job_id, state=JobState.SUCCEEDED, finished_at=time.time(), progress=1.0, version=manifest.version)
