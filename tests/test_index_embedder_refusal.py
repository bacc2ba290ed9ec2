"""An index built with one neighbour embedder is refused, with a message naming both, by a server expecting another."""
import pytest

from indexes.build import build_index
from indexes.errors import IndexMismatchError, UnknownIndexError
from indexes.registry import IndexRegistry
from indexes.store import IndexStore
from serving.pipeline.factory import ensure_default_index
from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples


class OtherEmbedder(ToyEmbedder):
    """The same vectors under another name: only the recorded embedder differs."""

    name = "toy-other/question"


@pytest.fixture
def store(tmp_path) -> IndexStore:
    store = IndexStore(tmp_path)
    build_index("family", toy_samples(20), ToyEncoder(), OtherEmbedder(), store, {"n": 20}, progress=False)
    return store


def test_registry_refuses_it_naming_both_embedders(store: IndexStore) -> None:
    registry = IndexRegistry(store, expected_fingerprint="toy-model-1", expected_embedder=ToyEmbedder.name)
    with pytest.raises(UnknownIndexError, match="cannot be served: .*embedder 'toy-other/question', "
                                                "expected 'toy-hash/question'"):
        registry.get("family")
    assert IndexRegistry(store, "toy-model-1", OtherEmbedder.name).get("family").size > 0


def test_server_start_refuses_a_default_index_of_another_embedder(store: IndexStore) -> None:
    with pytest.raises(IndexMismatchError, match="built with embedder 'toy-other/question', but this server "
                                                 "embeds questions with 'toy-hash/question'"):
        ensure_default_index(ToyEncoder(), ToyEmbedder(), store, "family")
    ensure_default_index(ToyEncoder(), OtherEmbedder(), store, "family")  # its own embedder: accepted as is
