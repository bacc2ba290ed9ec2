"""The index manager's feedback desk, on a toy index and a toy request path: accepted items are on disk before the
reply, duplicates add nothing, a newer answer replaces an older one, the worker adds or refuses each, the cap
evicts the oldest, kept completions expire, and a desk started on a log with waiting items processes them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexes.build import build_index
from indexes.feedback_log import LOG_FILE, LogTail
from indexes.feedback_state import FeedbackState
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from serving.config import FeedbackOptions
from serving.deployments.feedback import Completions, FeedbackDesk, Intake, Kept
from serving.pipeline.verified import NewRow, Refused
from tests.index_toys import ROUTING_SHAPE, ToyEmbedder, ToyEncoder, toy_samples


class ToyPath:
    """A request path whose verified rows are made from the toy embedder; "never" answers are refused."""

    def __init__(self, store: IndexStore, gate: threading.Event | None = None) -> None:
        self.store, self.gate, self.calls = store, gate, 0

    def verified_rows(self, samples: list, settings: object, index: str | None = None) -> list[NewRow | Refused]:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait()
        embeddings = ToyEmbedder().embed(samples)
        return [Refused("no routing answers it") if s.answer == "never" else
                NewRow(embeddings[i], np.full(ROUTING_SHAPE, 0.25, dtype=np.float32),
                       {"features": np.zeros(3, np.float32), "token_ids": np.arange(5)}, {"method": "toy"})
                for i, s in enumerate(samples)]

    def reference_index(self, name: str | None = None) -> ReferenceIndex:
        return ReferenceIndex.load(self.store, "refs")


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    store = IndexStore(tmp_path)
    build_index("refs", toy_samples(20), ToyEncoder(), ToyEmbedder(), store, {"n": 20}, progress=False)
    return store


def image(shade: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (shade, 0, 0))


def wait_until(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def on_disk(store: IndexStore) -> FeedbackState:
    state = FeedbackState()
    state.fold(LogTail(store.index_dir("refs") / LOG_FILE).read_new())
    return state


def test_accepted_is_on_disk_duplicates_add_nothing_and_the_worker_decides(store: IndexStore) -> None:
    gate = threading.Event()
    desk = FeedbackDesk(FeedbackOptions(), store, lambda model: ToyPath(store, gate))
    try:
        replies = desk.accept("toy", "refs", [Intake("red", "color", image=image(1), question="what color?"),
                                               Intake("Red", image=image(1), question="what  Color?"),
                                               Intake("never", image=image(2), question="what color?"),
                                               Intake("", image=image(3), question="q?")], "labeller")
        assert [r["status"] for r in replies] == ["accepted", "duplicate", "accepted", "refused"]
        assert replies[1]["id"] == replies[0]["id"]
        waiting = on_disk(store)  # read by another reader, while the worker is still held at the gate
        assert [i.status for i in waiting.items.values()] == ["accepted", "accepted"]
        gate.set()
        wait_until(lambda: not on_disk(store).pending())
        state = on_disk(store)
        assert state.items[replies[0]["id"]].status == "added" and state.items[replies[2]["id"]].status == "refused"
        assert state.items[replies[0]["id"]].source["token"] == "labeller"
        again = desk.accept("toy", "refs", [Intake("red", image=image(1), question="what color?")], "admin")
        assert again[0]["status"] == "duplicate"
        newer = desk.accept("toy", "refs", [Intake("blue", image=image(1), question="what color?")], "admin")
        wait_until(lambda: on_disk(store).items[newer[0]["id"]].status == "added")
        assert on_disk(store).items[replies[0]["id"]].reason == "replaced"
    finally:
        desk.close()


def test_the_cap_evicts_the_oldest_references(store: IndexStore) -> None:
    desk = FeedbackDesk(FeedbackOptions(max_references=2), store, lambda model: ToyPath(store))
    try:
        ids = [desk.accept("toy", "refs", [Intake("red", image=image(i), question="what color?")], "a")[0]["id"]
               for i in range(3)]
        wait_until(lambda: not on_disk(store).pending() and len(on_disk(store).rows) == 2)
        state = on_disk(store)
        assert state.items[ids[0]].status == "removed" and state.items[ids[0]].reason == "evicted"
        assert list(state.rows) == ids[1:]
    finally:
        desk.close()


KILLED_WHILE_FITTING = """
import sys, threading
from pathlib import Path
from indexes.store import IndexStore
from serving.config import FeedbackOptions
from serving.deployments.feedback import FeedbackDesk, Intake
from tests.test_feedback_desk import ToyPath, image
store = IndexStore(Path(sys.argv[1]))
desk = FeedbackDesk(FeedbackOptions(), store, lambda model: ToyPath(store, threading.Event()))  # fits forever
print(desk.accept("toy", "refs", [Intake("red", image=image(1), question="what color?")], "a")[0]["id"], flush=True)
threading.Event().wait()
"""


def test_a_manager_killed_while_fitting_leaves_the_item_to_the_next_one(store: IndexStore) -> None:
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_FITTING, str(store.root)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    item = writer.stdout.readline().strip()  # the reply: accepted
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert on_disk(store).items[item].status == "accepted"
    desk = FeedbackDesk(FeedbackOptions(), store, lambda model: ToyPath(store))
    try:
        wait_until(lambda: on_disk(store).items[item].status == "added")
        records = LogTail(store.index_dir("refs") / LOG_FILE).read_new()
        assert [r["kind"] for r in records] == ["accepted", "added"]  # once each
    finally:
        desk.close()


def test_kept_completions_are_bounded_by_count_and_age() -> None:
    kept = Completions(retain_s=60, retain_max=2)
    now = time.time()
    for i in range(3):
        kept.keep(f"c{i}", Kept("m", image(i), "q?", "a", now))
    assert kept.get("c0") is None and kept.get("c2") is not None
    kept.keep("old", Kept("m", image(9), "q?", "a", now - 120))
    assert kept.get("old") is None
