"""Asynchronous index rebuilds: a small thread pool with pollable job status.

The HTTP layer submits a rebuild and returns the job id at once (building takes minutes); clients poll
the status. With a records directory every job is also a small JSON file, so a restarted process still
answers for the jobs of the one before it: a job that was queued or running then says it was interrupted
(its build never published a version: versions appear by one rename of a finished build). One index has
at most one queued or running job; a second rebuild of it is refused while the first is under way.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from indexes.errors import RebuildInProgressError, UnknownJobError
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
    interrupted: bool = False  # the process running it stopped (restart, crash) before it finished

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobStatus":
        return cls(**{**data, "state": JobState(data["state"])})

    @property
    def finished(self) -> bool:
        return self.state in (JobState.SUCCEEDED, JobState.FAILED)


class JobRunner:
    """Runs rebuild functions in background threads (one at a time by default: builds are heavy)."""

    def __init__(self, max_workers: int = 1, records: str | Path | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="index-job")
        self._jobs: OrderedDict[str, JobStatus] = OrderedDict()
        self._lock = threading.Lock()
        self._records = None if records is None else Path(records)
        if self._records is not None:
            self._records.mkdir(parents=True, exist_ok=True)
            self._recover()

    def submit(self, index: str, rebuild: RebuildFn) -> JobStatus:
        """Queue `rebuild(progress_callback) -> Manifest` for index `index`; returns the job as queued (the
        worker may start it at once: `status` tells what it is doing now).

        Raises RebuildInProgressError while another job of the same index is queued or running."""
        queued = JobStatus(id=uuid.uuid4().hex, index=index, state=JobState.QUEUED, progress=0.0,
                           created_at=time.time())
        with self._lock:
            busy = next((job for job in self._jobs.values() if job.index == index and not job.finished), None)
            if busy is not None:
                raise RebuildInProgressError(f"index {index!r} is already being rebuilt by job {busy.id} "
                                             f"({busy.state.value}); wait for it to finish", job_id=busy.id)
            self._jobs[queued.id] = queued
        self._put(queued)
        self._executor.submit(self._run, queued.id, rebuild)
        return queued

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
            if status.finished or time.monotonic() >= deadline:
                return status
            time.sleep(0.01)

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def _put(self, status: JobStatus) -> None:
        with self._lock:
            self._jobs[status.id] = status
            finished = [k for k, v in self._jobs.items() if v.finished]
            forgotten = finished[: max(0, len(self._jobs) - MAX_REMEMBERED)]
            for key in forgotten:
                del self._jobs[key]
        self._write(status)
        for key in forgotten:
            if self._records is not None:
                (self._records / f"{key}.json").unlink(missing_ok=True)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = status = replace(self._jobs[job_id], **changes)
        self._write(status)

    def _write(self, status: JobStatus) -> None:
        """The job's record, replaced atomically (a reader never sees half a file)."""
        if self._records is None:
            return
        path = self._records / f"{status.id}.json"
        temp = path.with_name(f".{path.name}.{threading.get_ident()}")
        temp.write_text(json.dumps(status.to_dict()))
        os.replace(temp, path)

    def _recover(self) -> None:
        """Load the records of an earlier process; its unfinished jobs were interrupted."""
        found = []
        for path in self._records.glob("*.json"):
            try:
                found.append(JobStatus.from_dict(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, KeyError) as err:
                log.warning("job record %s is unreadable, skipped: %s", path, err)
        for status in sorted(found, key=lambda job: job.created_at):
            if not status.finished:
                status = replace(status, state=JobState.FAILED, interrupted=True, finished_at=time.time(),
                                 error=f"interrupted: the index manager stopped while this job was "
                                       f"{status.state.value}; no version was published (rebuild again)")
            self._put(status)

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
