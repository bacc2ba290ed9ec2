"""FAISS vector index for cosine neighbour search (inner product on unit vectors).

Exact search ("flat") is fast enough up to about 100k vectors; beyond that an approximate index keeps
per-query latency low: HNSW (no training, best recall per millisecond, slower to build) or IVF
(trained k-means cells, quicker to build, lower recall at the same latency).
"""
from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

INDEX_TYPES: tuple[str, ...] = ("flat", "hnsw", "ivf")
FLAT_THRESHOLD = 100_000  # below this many vectors exact search is chosen by "auto"
HNSW_NEIGHBOURS = 32  # graph degree M
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 64
IVF_NPROBE = 32
IVF_MIN_POINTS_PER_CELL = 39  # faiss k-means warns below this many training points per centroid
IVF_TRAIN_POINTS_PER_CELL = 64  # training sample size per cell: k-means cost grows with it


def choose_index_type(n: int, requested: str = "auto", flat_threshold: int = FLAT_THRESHOLD) -> str:
    """Resolve "auto" by size; pass explicit choices through after checking them."""
    if requested == "auto":
        return "flat" if n < flat_threshold else "hnsw"
    if requested not in INDEX_TYPES:
        raise ValueError(f"unknown index type {requested!r}; valid: auto, {', '.join(INDEX_TYPES)}")
    return requested


def ivf_cells(n: int) -> int:
    """nlist ~ 4*sqrt(n), but never so many cells that k-means lacks training points per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // IVF_MIN_POINTS_PER_CELL))


def _check_vectors(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty [n, D] array, got shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"vectors have dimension {vectors.shape[1]}, index has {dim}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain non-finite values")
    return vectors


class VectorIndex:
    """A built FAISS index plus the knowledge of which kind it is (for per-query search parameters)."""

    def __init__(self, index: faiss.Index, kind: str) -> None:
        if kind not in INDEX_TYPES:
            raise ValueError(f"unknown index type {kind!r}")
        self._index = index
        self.kind = kind

    @classmethod
    def build(
        cls, vectors: np.ndarray, index_type: str = "auto", flat_threshold: int = FLAT_THRESHOLD
    ) -> "VectorIndex":
        """Build over unit vectors [n, D]; row i of `vectors` becomes result row number i."""
        vectors = _check_vectors(vectors)
        n, dim = vectors.shape
        kind = choose_index_type(n, index_type, flat_threshold)
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            nlist = ivf_cells(n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            # A deterministic sample bounds k-means cost on large sets; results do not depend on luck.
            n_train = min(n, nlist * IVF_TRAIN_POINTS_PER_CELL)
            train = vectors if n_train == n else vectors[np.random.default_rng(0).choice(n, n_train, replace=False)]
            index.train(train)
            index.nprobe = min(nlist, IVF_NPROBE)
        index.add(vectors)
        return cls(index, kind)

    @classmethod
    def read(cls, path: Path, kind: str) -> "VectorIndex":
        return cls(faiss.read_index(str(path)), kind)

    def write(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    def serialized_bytes(self) -> int:
        """Size of the index file, counted without writing it (memory per vector in benchmarks)."""
        total = 0

        def count(chunk: bytes) -> int:
            nonlocal total
            total += len(chunk)
            return len(chunk)

        writer = faiss.PyCallbackIOWriter(count)
        faiss.write_index(self._index, writer)
        del writer  # flushes the last buffered chunk
        return total

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine for each query [m, D] -> (similarities [m, k'], rows [m, k']), best first.

        k' = min(k, size). An approximate index can find fewer than k' hits; missing slots hold row -1
        and similarity -inf. Epsilon-balls are done by the caller: ask for enough k, then filter.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = _check_vectors(queries, self.dim)
        k = min(k, self.size)
        params = None
        if self.kind == "hnsw" and k > HNSW_EF_SEARCH:
            params = faiss.SearchParametersHNSW(efSearch=2 * k)  # per call: no shared state changes
        similarities, rows = self._index.search(queries, k, params=params)
        similarities[rows < 0] = -np.inf
        return similarities, rows
