"""One loaded index version: an immutable snapshot that many request threads read at once.

A request keeps the snapshot object it got for its whole life, so a hot swap never changes the
neighbours, routings or payload halfway through a request.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from indexes.errors import UnknownVersionError
from indexes.layout import VersionData, read_files
from indexes.manifest import Manifest
from indexes.store import IndexStore
from r2t2.data.answers import normalise_answer


@dataclass(frozen=True)
class Candidates:
    """Reference rows found for one query, best first, with everything a strategy needs about them."""

    rows: np.ndarray  # [n] int64 row numbers in the index
    ids: tuple[str, ...]
    similarities: np.ndarray  # [n] float32 cosine similarity to the query (nan when not from a search)
    embeddings: np.ndarray  # [n, D]
    routings: np.ndarray  # [n, L, E]
    answers: tuple[str, ...]
    questions: tuple[str, ...]
    tasks: tuple[str, ...]
    payload: Mapping[str, np.ndarray]  # each [n, ...]

    def __len__(self) -> int:
        return len(self.ids)


class ReferenceIndex:
    """Read-only view of one version; FAISS searches and numpy reads are safe from many threads."""

    def __init__(self, manifest: Manifest, data: VersionData) -> None:
        self.manifest = manifest
        self._data = data

    @classmethod
    def load(
        cls,
        store: IndexStore,
        name: str,
        version: int | None = None,
        expected_fingerprint: str | None = None,
        expected_embedder: str | None = None,
        expected_rows: tuple[str, ...] | None = None,
    ) -> "ReferenceIndex":
        """Load a version (CURRENT by default), refusing a mismatched model, embedder or routing rows before
        reading data."""
        if version is None:
            version = store.current_version(name)
            if version is None:
                raise UnknownVersionError(f"index {name!r} has no CURRENT version yet (no finished build)")
        directory = store.version_dir(name, version)
        manifest = Manifest.read(directory)
        manifest.check_compatible(expected_fingerprint, expected_embedder, expected_rows)
        return cls(manifest, read_files(directory, manifest))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def size(self) -> int:
        return self._data.vectors.size

    @property
    def dim(self) -> int:
        return self._data.vectors.dim

    @property
    def all_routings(self) -> np.ndarray:
        """[N, L, E] read-only: the pool mean-shift mode finding searches in routing space."""
        return self._data.routings

    def search(self, query_embedding: np.ndarray, k: int) -> Candidates:
        """The k most similar references to one unit query vector [D] (fewer if the index is smaller)."""
        query = np.asarray(query_embedding, dtype=np.float32)
        if query.shape != (self.dim,):
            raise ValueError(f"query embedding must have shape ({self.dim},), got {query.shape}")
        similarities, rows = self._data.vectors.search(query[None, :], k)
        found = rows[0] >= 0
        return self.take(rows[0][found], similarities[0][found])

    def take(self, rows: np.ndarray, similarities: np.ndarray | None = None) -> Candidates:
        """Candidates for given row numbers (e.g. chosen in routing space); similarities default to nan."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.size)):
            raise ValueError(f"rows must be a 1-D array of row numbers in [0, {self.size})")
        if similarities is None:
            similarities = np.full(rows.shape, np.nan, dtype=np.float32)
        records = [self._data.records[i] for i in rows]
        return Candidates(
            rows=rows,
            ids=tuple(r["id"] for r in records),
            similarities=np.asarray(similarities, dtype=np.float32),
            embeddings=self._data.embeddings[rows],
            routings=self._data.routings[rows],
            answers=tuple(r["answer"] for r in records),
            questions=tuple(r["question"] for r in records),
            tasks=tuple(r["task"] for r in records),
            payload=MappingProxyType({k: v[rows] for k, v in self._data.payload.items()}),
        )

    def answers_near(self, rows: np.ndarray, m: int) -> frozenset[str]:
        """The answers of the `m` references whose questions are nearest each of these rows' (rows included):
        the answers an index holds for questions like theirs, whatever the data set or its task labels. Normalised
        (`normalise_answer`), so spellings of one answer ("Fire hydrant", "fire-hydrant") count once."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return frozenset()
        _, found = self._data.vectors.search(self._data.embeddings[rows], m)
        return frozenset(normalise_answer(self._data.records[int(i)]["answer"])
                         for i in np.concatenate([rows, found.ravel()]) if i >= 0)

    def record(self, row: int) -> Mapping[str, str]:
        """id, question, answer and task of one row (for explanations and inspection)."""
        return MappingProxyType(self._data.records[row])
