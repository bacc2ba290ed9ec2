"""Background rebuild jobs report progress, the version they made, and failures."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from indexes.build import build_index
from indexes.errors import RebuildInProgressError, UnknownJobError
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

    job_id = runner.submit("demo", rebuild).id
    status = runner.wait(job_id, timeout_s=30)
    assert status.state is JobState.SUCCEEDED and status.version == 1 and status.progress == 1.0
    assert status.index == "demo" and status.error is None and status.finished_at >= status.started_at
    assert fractions == sorted(fractions) and len(fractions) > 3
    assert status.to_dict()["state"] == "succeeded"


def test_failed_job_reports_error(runner: JobRunner, tmp_path) -> None:
    store = IndexStore(tmp_path)
    job_id = runner.submit("demo", lambda report: build_index(
        "demo", toy_samples(40), ToyEncoder(fail_after_batches=0), ToyEmbedder(), store, {}, progress=False)).id
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
    assert first.state is JobState.QUEUED and first.started_at is None  # as queued, whatever the worker does now
    first, second = first.id, runner.submit("b", slow).id
    assert started.wait(5)
    assert runner.status(second).state is JobState.QUEUED
    assert runner.wait(first, 0.05).state is JobState.RUNNING and runner.status(first).progress == 0.5
    release.set()
    assert runner.wait(second, 5).state is JobState.FAILED
    assert [s.id for s in runner.list()] == [first, second]


def test_unknown_job(runner: JobRunner) -> None:
    with pytest.raises(UnknownJobError, match="no job"):
        runner.status("missing")


def test_job_records_survive_a_restart_and_unfinished_jobs_say_interrupted(tmp_path) -> None:
    records = tmp_path / "jobs"
    first = JobRunner(records=records)
    done = first.submit("a", lambda report: build_index("a", toy_samples(40), ToyEncoder(), ToyEmbedder(),
                                                        IndexStore(tmp_path / "store"), {}, progress=False)).id
    assert first.wait(done, 30).state is JobState.SUCCEEDED
    release, started = threading.Event(), threading.Event()

    def stuck(report):
        started.set()
        release.wait(10)
        raise RuntimeError("released")

    running = first.submit("b", stuck).id
    assert started.wait(5)
    queued = first.submit("c", stuck).id
    # A new process reads the records while the first one still "runs" (as if it had been killed).
    second = JobRunner(records=records)
    try:
        assert second.status(done) == first.status(done)
        for job_id, was in ((running, "running"), (queued, "queued")):
            status = second.status(job_id)
            assert status.state is JobState.FAILED and status.interrupted and status.version is None
            assert status.error.startswith("interrupted") and was in status.error
            assert status.to_dict()["interrupted"] is True
        assert not second.status(done).interrupted
    finally:
        release.set()
        first.shutdown()
        second.shutdown()


def test_a_second_rebuild_of_one_index_is_refused_while_the_first_runs(runner: JobRunner) -> None:
    release, started = threading.Event(), threading.Event()

    def slow(report):
        started.set()
        release.wait(5)
        raise ValueError("stopped")

    first = runner.submit("demo", slow).id
    assert started.wait(5)
    with pytest.raises(RebuildInProgressError, match=first) as caught:
        runner.submit("demo", slow)
    assert caught.value.job_id == first
    other = runner.submit("other", slow).id  # another index may queue meanwhile
    release.set()
    assert runner.wait(first, 5).state is JobState.FAILED and runner.wait(other, 5).state is JobState.FAILED
    assert runner.wait(runner.submit("demo", lambda report: (_ for _ in ()).throw(ValueError("x"))).id, 5).finished


def test_a_killed_build_leaves_no_version_and_its_files_are_cleaned(tmp_path) -> None:
    """A builder process killed mid-build: the index has no new version, and its temporary files go."""
    script = ("import os, sys; from indexes.store import IndexStore\n"
              "with IndexStore(sys.argv[1]).build_dir('demo') as temp:\n"
              "    (temp / 'vectors.faiss').write_bytes(b'half')\n"
              "    os.kill(os.getpid(), 9)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=Path(__file__).parents[1])
    assert killed.returncode == -9
    store = IndexStore(tmp_path)
    assert store.versions("demo") == [] and store.current_version("demo") is None
    leftovers = [p for p in store.index_dir("demo").iterdir()]
    assert len(leftovers) == 1 and store.clean_stale_builds("demo") == leftovers
    assert list(store.index_dir("demo").iterdir()) == []
