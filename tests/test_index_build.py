"""Build, store and load round trip; versioning; killed builds; removal; name validation."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from indexes.build import build_index
from indexes.errors import IndexBuildError, IndexInUseError, InvalidIndexNameError, UnknownIndexError
from indexes.reference_index import ReferenceIndex
from indexes.store import CURRENT_FILE, OWNER_FILE, IndexStore
from tests.index_toys import ROUTING_SHAPE, ToyEmbedder, ToyEncoder, is_toy_correct, toy_samples

SPEC = {"source": "synthetic", "split": "reference"}


def _build(store: IndexStore, samples=None, encoder=None, **kwargs):
    return build_index("demo", samples or toy_samples(60), encoder or ToyEncoder(), ToyEmbedder(), store, SPEC,
                       batch_size=16, progress=False, **kwargs)


@pytest.fixture
def store(tmp_path) -> IndexStore:
    return IndexStore(tmp_path / "indexes")


def test_round_trip_keeps_correct_samples_and_finds_them(store: IndexStore) -> None:
    samples = toy_samples(60)
    manifest = _build(store, samples)
    correct = [s for s in samples if is_toy_correct(s.id)]
    assert manifest.version == 1 and manifest.seen == 60 and manifest.kept == len(correct)
    assert manifest.index_type == "flat" and manifest.routing_shape == ROUTING_SHAPE
    assert manifest.payload_fields == ("features", "token_ids") and manifest.dataset == SPEC
    assert store.current_version("demo") == 1 and store.versions("demo") == [1]

    index = ReferenceIndex.load(store, "demo", expected_fingerprint="toy-model-1", expected_embedder=ToyEmbedder.name)
    assert index.size == len(correct) and index.all_routings.shape == (len(correct), *ROUTING_SHAPE)
    target = correct[7]
    hit = index.search(ToyEmbedder().embed([target])[0], k=3)
    assert hit.ids[0] == target.id and hit.answers[0] == target.answer
    assert hit.similarities[0] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(hit.similarities) <= 0)
    expected = ToyEncoder().encode_references([target])
    np.testing.assert_allclose(hit.routings[0], expected.routings[0])
    np.testing.assert_array_equal(hit.payload["features"][0], expected.payload["features"][0])
    assert hit.embeddings.shape == (3, 8) and hit.payload["token_ids"].shape == (3, 5)
    assert index.record(int(hit.rows[0]))["question"] == target.question
    assert len(index.search(hit.embeddings[0], k=1000)) == index.size
    with pytest.raises(ValueError, match="shape"):
        index.search(np.ones(3, dtype=np.float32), k=2)
    with pytest.raises(ValueError):
        index.all_routings[0, 0, 0] = 1.0  # snapshots are read-only


def test_cap_is_deterministic_and_stops_early(store: IndexStore) -> None:
    first = _build(store, cap=10)
    second = _build(store, cap=10)
    assert first.kept == second.kept == 10 and first.seen < 60
    ids = [ReferenceIndex.load(store, "demo", v).take(np.arange(10)).ids for v in (1, 2)]
    assert ids[0] == ids[1]
    assert sorted(json.loads(open(store.version_dir("demo", 2) / "samples.jsonl").readline())) == [
        "answer", "id", "key", "question", "task"]


def test_each_build_is_a_new_version_and_moves_current(store: IndexStore) -> None:
    _build(store)
    manifest = _build(store)
    assert manifest.version == 2 and store.versions("demo") == [1, 2] and store.current_version("demo") == 2


def test_failed_build_leaves_current_and_lists_nothing_new(store: IndexStore) -> None:
    _build(store)
    with pytest.raises(RuntimeError, match="crashed"):
        _build(store, encoder=ToyEncoder(fail_after_batches=2))
    assert store.versions("demo") == [1] and store.current_version("demo") == 1
    assert [p.name for p in store.index_dir("demo").iterdir() if p.is_dir()] == ["v0001"]
    assert ReferenceIndex.load(store, "demo").version == 1


def test_build_with_no_correct_answers_fails_cleanly(store: IndexStore) -> None:
    samples = [s for s in toy_samples(30) if not is_toy_correct(s.id)]
    with pytest.raises(IndexBuildError, match="none of"):
        _build(store, samples)


def test_killed_build_temp_dir_is_ignored_then_cleaned(store: IndexStore) -> None:
    _build(store)
    demo = store.index_dir("demo")
    # A real process that dies, leaving a temp dir that it owned, with data but no manifest.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = demo / ".tmp-killed"
    stale.mkdir()
    (stale / OWNER_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    (stale / "payload.npz").write_bytes(b"half")
    live = demo / ".tmp-running"
    live.mkdir()
    (live / OWNER_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid()}))
    (demo / "v0009").mkdir()  # a version dir without a manifest is not a version
    assert store.versions("demo") == [1]
    _build(store)
    assert not stale.exists() and live.exists()
    assert store.versions("demo") == [1, 10] and store.current_version("demo") == 10


def test_remove_version_refuses_current_unless_forced(store: IndexStore) -> None:
    _build(store)
    _build(store)
    with pytest.raises(IndexInUseError):
        store.remove_version("demo", 2)
    store.remove_version("demo", 1)
    assert store.versions("demo") == [2]
    store.remove_version("demo", 2, force=True)
    assert store.versions("demo") == [] and store.current_version("demo") is None
    assert not (store.index_dir("demo") / CURRENT_FILE).exists()
    store.remove_index("demo")
    assert store.names() == []
    with pytest.raises(UnknownIndexError, match="known: none"):
        store.versions("demo")


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "x" * 65, "sp ace", "-lead"])
def test_bad_names_are_refused(store: IndexStore, name: str) -> None:
    with pytest.raises(InvalidIndexNameError):
        store.index_dir(name)


def test_root_comes_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("R2T2_INDEX_DIR", str(tmp_path / "elsewhere"))
    assert IndexStore().root == (tmp_path / "elsewhere").resolve()


def test_malformed_encoder_output_is_refused(store: IndexStore) -> None:
    class WrongShape(ToyEncoder):
        def encode_references(self, samples):
            batch = super().encode_references(samples)
            return type(batch)(batch.payload, batch.routings[:, 0], batch.correct)

    with pytest.raises(IndexBuildError, match="routings"):
        _build(store, encoder=WrongShape())
    assert store.names() == []


def test_duplicate_ids_are_refused(store: IndexStore) -> None:
    samples = toy_samples(5) + toy_samples(2)
    with pytest.raises(ValueError, match="unique"):
        _build(store, samples)
