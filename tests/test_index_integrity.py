"""Loading refuses damaged files and indexes made for another model or embedder."""
from __future__ import annotations

import pytest

from indexes.build import build_index
from indexes.errors import IndexIntegrityError, IndexMismatchError, UnknownVersionError
from indexes.layout import INDEX_FILE, PAYLOAD_FILE, SAMPLES_FILE
from indexes.manifest import MANIFEST_FILE
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples


@pytest.fixture
def store(tmp_path) -> IndexStore:
    store = IndexStore(tmp_path)
    build_index("demo", toy_samples(40), ToyEncoder(), ToyEmbedder(), store, {"source": "synthetic"}, progress=False)
    return store


@pytest.mark.parametrize("file", [INDEX_FILE, PAYLOAD_FILE, SAMPLES_FILE])
def test_flipped_byte_is_detected(store: IndexStore, file: str) -> None:
    path = store.version_dir("demo", 1) / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match="checksum"):
        ReferenceIndex.load(store, "demo")


@pytest.mark.parametrize("file", [INDEX_FILE, PAYLOAD_FILE, SAMPLES_FILE])
def test_truncated_file_is_detected(store: IndexStore, file: str) -> None:
    path = store.version_dir("demo", 1) / file
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexIntegrityError, match="truncated"):
        ReferenceIndex.load(store, "demo")


def test_missing_file_is_detected(store: IndexStore) -> None:
    (store.version_dir("demo", 1) / PAYLOAD_FILE).unlink()
    with pytest.raises(IndexIntegrityError, match="missing"):
        ReferenceIndex.load(store, "demo")


def test_garbled_manifest_is_detected(store: IndexStore) -> None:
    (store.version_dir("demo", 1) / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(IndexIntegrityError, match="unreadable manifest"):
        ReferenceIndex.load(store, "demo")


def test_other_model_is_refused(store: IndexStore) -> None:
    with pytest.raises(IndexMismatchError, match="toy-model-1.*other-model.*rebuild"):
        ReferenceIndex.load(store, "demo", expected_fingerprint="other-model")


def test_other_embedder_is_refused(store: IndexStore) -> None:
    with pytest.raises(IndexMismatchError, match="embedder"):
        ReferenceIndex.load(store, "demo", expected_fingerprint="toy-model-1", expected_embedder="all-MiniLM-L6-v2/question")


def test_unknown_version_lists_existing(store: IndexStore) -> None:
    with pytest.raises(UnknownVersionError, match=r"versions: \[1\]"):
        ReferenceIndex.load(store, "demo", version=7)


def test_an_index_of_other_routing_rows_is_refused_with_how_to_rebuild(tmp_path) -> None:
    import json

    from r2t2.routing.layout import LayoutRow, RoutingLayout
    from indexes.registry import IndexRegistry
    from indexes.errors import UnknownIndexError

    class RowedEncoder(ToyEncoder):
        routing_layout = RoutingLayout((LayoutRow("v", "vision", tuple("abcd")),
                                        LayoutRow("lm.layer1", "lm", tuple("abcd"), layer=1)))

    store = IndexStore(tmp_path)
    build_index("rowed", toy_samples(30), RowedEncoder(), ToyEmbedder(), store, {"source": "synthetic"}, progress=False)
    assert store.manifest("rowed", 1).routing_rows == ("v", "lm.layer1")
    assert ReferenceIndex.load(store, "rowed", expected_rows=("v", "lm.layer1")).size > 0
    with pytest.raises(IndexMismatchError, match=r"rows \[v, lm.layer1\] but the model routes \[v\].*rebuild"):
        ReferenceIndex.load(store, "rowed", expected_rows=("v",))
    # A manifest written before rows were recorded reads as "not recorded", and is refused by a model that has rows.
    path = store.version_dir("rowed", 1) / MANIFEST_FILE
    data = json.loads(path.read_text())
    del data["routing_rows"]
    path.write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="not recorded"):
        ReferenceIndex.load(store, "rowed", expected_rows=("v", "lm.layer1"))
    registry = IndexRegistry(store, "toy-model-1", ToyEmbedder.name, expected_rows=("v", "lm.layer1"))
    with pytest.raises(UnknownIndexError, match="cannot be served.*rebuild"):
        registry.get("rowed")
