"""Hot swap: held snapshots keep answering, refresh picks up CURRENT, bad versions never serve."""
from __future__ import annotations

import time

import numpy as np
import pytest

from indexes.build import build_index
from indexes.errors import UnknownIndexError
from indexes.layout import PAYLOAD_FILE
from indexes.registry import IndexRegistry
from indexes.store import IndexStore
from r2t2.errors import NotFoundError
from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples


def _build(store: IndexStore, n: int, name: str = "demo") -> None:
    build_index(name, toy_samples(n), ToyEncoder(), ToyEmbedder(), store, {"n": n}, progress=False)


@pytest.fixture
def store(tmp_path) -> IndexStore:
    store = IndexStore(tmp_path)
    _build(store, 30)
    return store


def _registry(store: IndexStore) -> IndexRegistry:
    return IndexRegistry(store, expected_fingerprint="toy-model-1", expected_embedder=ToyEmbedder.name)


def test_held_snapshot_survives_swap_and_get_returns_new_after_refresh(store: IndexStore) -> None:
    registry = _registry(store)
    held = registry.get("demo")
    query = held.take(np.array([0])).embeddings[0]
    before = held.search(query, 3)
    _build(store, 90)
    assert registry.get("demo") is held  # nothing changes until a refresh
    assert registry.refresh() == {"demo": 2}
    assert registry.get("demo").version == 2 and registry.get("demo").size > held.size
    store.remove_version("demo", 1)  # even with its files gone, the held snapshot still answers
    after = held.search(query, 3)
    assert held.version == 1 and after.ids == before.ids
    assert registry.refresh() == {}


def test_version_that_fails_verification_never_serves(store: IndexStore, caplog) -> None:
    registry = _registry(store)
    registry.get("demo")
    _build(store, 60)
    payload = store.version_dir("demo", 2) / PAYLOAD_FILE
    payload.write_bytes(payload.read_bytes()[:-1])
    assert registry.refresh() == {}
    assert registry.get("demo").version == 1 and "old version keeps serving" in caplog.text


def test_other_model_index_is_not_served(store: IndexStore) -> None:
    registry = IndexRegistry(store, expected_fingerprint="other", expected_embedder=None)
    with pytest.raises(UnknownIndexError):
        registry.get("demo")


def test_unknown_name_lists_known_indexes(store: IndexStore) -> None:
    _build(store, 20, name="other")
    registry = _registry(store)
    with pytest.raises(NotFoundError, match="no servable index named 'nope'; known indexes: demo, other"):
        registry.get("nope")


def test_removed_index_stops_serving(store: IndexStore) -> None:
    registry = _registry(store)
    registry.get("demo")
    store.remove_index("demo")
    registry.refresh()
    assert registry.names() == []


def test_auto_refresh_thread_swaps(store: IndexStore) -> None:
    registry = _registry(store)
    registry.get("demo")
    registry.start_auto_refresh(0.02)
    try:
        _build(store, 45)
        deadline = time.monotonic() + 5
        while registry.get("demo").version != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert registry.get("demo").version == 2
    finally:
        registry.close()
