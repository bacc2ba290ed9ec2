"""An index grows by its feedback log: re-routers' registries serve the version extended by the rows verified answers
added (searched, taken and pooled like the version's own), stop serving removed ones, and a compaction writes the
grown index out as a version that the log then extends only by what comes after."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.build import build_index
from indexes.compact import compact
from indexes.feedback_log import LOG_FILE, FeedbackLog
from indexes.feedback_state import ROW_PREFIX, FeedbackState, accepted, added, removed
from indexes.growth import grown
from indexes.registry import IndexRegistry
from indexes.store import IndexStore
from tests.index_toys import ROUTING_SHAPE, TOY_DIM, ToyEmbedder, ToyEncoder, toy_samples

from PIL import Image


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    store = IndexStore(tmp_path)
    build_index("refs", toy_samples(30), ToyEncoder(), ToyEmbedder(), store, {"n": 30}, progress=False)
    return store


def _row(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal(TOY_DIM).astype(np.float32)
    routing = rng.random(ROUTING_SHAPE).astype(np.float32)
    return {"embedding": embedding / np.linalg.norm(embedding), "routing": routing / routing.sum(-1, keepdims=True),
            "payload": {"features": np.full(3, 1000 + seed, dtype=np.float32), "token_ids": np.arange(5) + seed}}


def _feed(store: IndexStore, *items: tuple[str, dict]) -> None:
    log = FeedbackLog.open(store.index_dir("refs") / LOG_FILE)
    records = []
    for i, (item, row) in enumerate(items):
        image = Image.new("RGB", (4, 4), (i, 0, 0))
        records.append(accepted(item, "toy", image, f"verified question {item}?", f"ans-{item}", "color",
                                {"token": "tester"}))
        records.append(added(item, row["embedding"], row["routing"], row["payload"], {"method": "test"}))
    log.append(records)
    log.close()


def _remove(store: IndexStore, *items: str) -> None:
    log = FeedbackLog.open(store.index_dir("refs") / LOG_FILE)
    log.append([removed(list(items), "removed", "tester")])
    log.close()


def test_added_rows_are_searched_taken_and_pooled_beside_the_version(store: IndexStore) -> None:
    registry = IndexRegistry(store, "toy-model-1", ToyEmbedder.name)
    before = registry.get("refs")
    row = _row(1)
    _feed(store, ("x1", row), ("x2", _row(2)))
    registry.refresh()
    after = registry.get("refs")
    assert before.size + 2 == after.size and after.added == 2 and before.added == 0  # the held snapshot is unchanged
    hits = after.search(row["embedding"], 3)
    assert hits.ids[0] == ROW_PREFIX + "x1" and hits.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert hits.answers[0] == "ans-x1" and np.allclose(hits.routings[0], row["routing"])
    assert hits.payload["features"][0][0] == 1001 and list(hits.payload["token_ids"][0]) == [1, 2, 3, 4, 5]
    assert after.all_routings.shape == (after.size, *ROUTING_SHAPE)
    assert np.allclose(after.all_routings[after.size - 2], row["routing"])
    assert after.take(after.pool_rows[-1:]).ids == (ROW_PREFIX + "x2",)
    assert "ans x1" in after.answers_near(hits.rows[:1], 3)  # normalised


def test_removed_rows_leave_the_served_index(store: IndexStore) -> None:
    registry = IndexRegistry(store, "toy-model-1", ToyEmbedder.name)
    _feed(store, ("x1", _row(1)), ("x2", _row(2)))
    registry.refresh()
    size = registry.get("refs").size
    _remove(store, "x1")
    registry.refresh()
    served = registry.get("refs")
    assert served.size == size - 1 and ROW_PREFIX + "x1" not in served.search(_row(1)["embedding"], 40).ids


def test_a_compacted_index_is_extended_only_by_later_rows_and_hides_rows_removed_after(store: IndexStore) -> None:
    _feed(store, ("x1", _row(1)), ("x2", _row(2)))
    log = FeedbackLog.open(store.index_dir("refs") / LOG_FILE)
    state = FeedbackState()
    state.fold(log.records)
    log.close()
    registry = IndexRegistry(store, "toy-model-1", ToyEmbedder.name)
    own = store.manifest("refs", 1).kept
    manifest = compact(store, grown(registry.get("refs"), state), state.last_seq)
    assert manifest.version == 2 and manifest.feedback_through == state.last_seq and manifest.kept == own + 2
    registry.refresh()
    served = registry.get("refs")
    assert served.version == 2 and served.added == 0 and served.size == own + 2  # nothing counted twice
    _feed(store, ("x3", _row(3)))
    _remove(store, "x1")
    registry.refresh()
    served = registry.get("refs")
    assert served.version == 2 and served.added == 1 and served.size == own + 2
    found = served.search(_row(1)["embedding"], 40).ids
    assert ROW_PREFIX + "x1" not in found and ROW_PREFIX + "x2" in found and ROW_PREFIX + "x3" in found
    assert served.all_routings.shape[0] == own + 2 and len(served.pool_rows) == own + 2


def test_a_row_that_does_not_fit_the_version_is_left_out_and_logged(store: IndexStore, caplog) -> None:
    bad = _row(1)
    bad["routing"] = np.ones((3, 3), dtype=np.float32) / 3
    _feed(store, ("x1", bad), ("x2", _row(2)))
    registry = IndexRegistry(store, "toy-model-1", ToyEmbedder.name)
    served = registry.get("refs")
    assert served.added == 1 and "x1 left out" in caplog.text
