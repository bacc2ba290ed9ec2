"""Background rebuild jobs report progress, the version they made, and failures."""
from __future__ import annotations

import threading

import pytest

import r2t2  # noqa: F401
from indexes.build import build_index
from indexes.errors import UnknownJobError
from indexes.jobs import JobRunner, JobState
from indexes.store import IndexStore
from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples


@pytest.fixture
def runner():
    runner = JobRunner()
    yield runner
    runner.shutdown()


def test_rebuild_job_succeeds_with_version_and_progress(runner: JobRunner, tmp_path) -> None:
    store = IndexStore(tmp_path)
    fractions: list[float] = []

    def rebuild(report):
        def record(fraction):
            fractions.append(fraction)
            report(fraction)
        return build_index("demo", toy_samples(80), ToyEncoder(), ToyEmbedder(), store, {}, batch_size=8,
                           progress=False, on_progress=record)

    job_id = runner.submit("demo", rebuild)
    status = runner.wait(job_id, timeout_s=30)
    assert status.state is JobState.SUCCEEDED and status.version == 1 and status.progress == 1.0
    assert status.index == "demo" and status.error is None and status.finished_at >= status.started_at
    assert fractions == sorted(fractions) and len(fractions) > 3
    assert status.to_dict()["state"] == "succeeded"


def test_failed_job_reports_error(runner: JobRunner, tmp_path) -> None:
    store = IndexStore(tmp_path)
    job_id = runner.submit("demo", lambda report: build_index(
        "demo", toy_samples(40), ToyEncoder(fail_after_batches=0), ToyEmbedder(), store, {}, progress=False))
    status = runner.wait(job_id, timeout_s=30)
    assert status.state is JobState.FAILED and "RuntimeError: toy encoder crashed" in status.error
    assert status.version is None


def test_queued_then_running_states(runner: JobRunner) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(report):
        started.set()
        report(0.5)
        release.wait(5)
        raise ValueError("stopped")

    first = runner.submit("a", slow)
    second = runner.submit("b", slow)
    assert started.wait(5)
    assert runner.status(second).state is JobState.QUEUED
    assert runner.wait(first, 0.05).state is JobState.RUNNING and runner.status(first).progress == 0.5
    release.set()
    assert runner.wait(second, 5).state is JobState.FAILED
    assert [s.id for s in runner.list()] == [first, second]


def test_unknown_job(runner: JobRunner) -> None:
    with pytest.raises(UnknownJobError, match="no job"):
        runner.status("missing")
