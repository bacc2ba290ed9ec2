"""FAISS wrapper: type chosen by size, cosine ranking matches brute force, approximate recall holds."""
from __future__ import annotations

import numpy as np
import pytest

from indexes.vectors import VectorIndex, choose_index_type, ivf_cells
from tests.index_toys import unit_vectors


def test_type_chosen_by_size_with_overrides() -> None:
    assert choose_index_type(99_999) == "flat" and choose_index_type(100_000) == "hnsw"
    assert choose_index_type(50, flat_threshold=10) == "hnsw"
    assert choose_index_type(10**7, "flat") == "flat" and choose_index_type(5, "ivf") == "ivf"
    with pytest.raises(ValueError, match="unknown index type"):
        choose_index_type(5, "annoy")
    assert VectorIndex.build(unit_vectors(300, 16), flat_threshold=100).kind == "hnsw"


def test_ivf_cells_follow_sqrt_rule_with_enough_training_points() -> None:
    assert ivf_cells(1_000_000) == 4000 and ivf_cells(100_000) == 1264 and ivf_cells(1000) == 25 and ivf_cells(10) == 1


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_search_ranks_by_cosine(kind: str) -> None:
    base = unit_vectors(3000, 32, seed=1)
    queries = unit_vectors(50, 32, seed=2)
    index = VectorIndex.build(base, kind)
    assert index.kind == kind and index.size == 3000 and index.dim == 32
    assert index.serialized_bytes() >= 3000 * 32 * 4
    similarities, rows = index.search(queries, 5)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :5]
    recall = np.mean([len(set(r) & set(e)) / 5 for r, e in zip(rows, exact)])
    assert recall >= (1.0 if kind == "flat" else 0.8)
    found = rows >= 0
    np.testing.assert_allclose(similarities[found], np.take_along_axis(queries @ base.T, rows, 1)[found], atol=1e-5)
    assert np.all(np.diff(similarities, axis=1) <= 1e-6)


def test_k_larger_than_index_and_bad_input() -> None:
    index = VectorIndex.build(unit_vectors(4, 8), "hnsw")
    similarities, rows = index.search(unit_vectors(1, 8), 100)
    assert rows.shape == (1, 4) and sorted(rows[0]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="dimension"):
        index.search(unit_vectors(1, 9), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(unit_vectors(1, 8), 0)
    with pytest.raises(ValueError, match="non-finite"):
        VectorIndex.build(np.full((3, 8), np.nan, dtype=np.float32))
