"""One loaded index version, grown by the verified answers after it: an immutable snapshot that many request threads
read at once.

A request keeps the snapshot object it got for its whole life, so a hot swap or a growth step never changes the
neighbours, routings or payload halfway through a request. Rows 0..N-1 are the version's own; the rows a feedback
log added after the version (its `Extension`) follow them, searched with FAISS beside the version's index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
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


@dataclass(frozen=True)
class Extension:
    """What verified answers changed since a version was built: rows added after it (row numbers N, N+1, ... in
    `data`), the version's own rows whose feedback was removed since (`hidden`), and where each added row came
    from (`sources`, by row id)."""

    data: VersionData | None
    hidden: frozenset[int] = frozenset()
    sources: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


class ReferenceIndex:
    """Read-only view of one version and its extension; FAISS searches and numpy reads are safe from many threads."""

    def __init__(self, manifest: Manifest, data: VersionData, extension: Extension | None = None) -> None:
        self.manifest = manifest
        self._data = data
        self.extension = extension or Extension(None)
        self._added = self.extension.data
        self._own = data.vectors.size  # N: the version's own rows
        self._hidden = np.asarray(sorted(self.extension.hidden), dtype=np.int64)

    def extended(self, extension: Extension) -> "ReferenceIndex":
        """The same version with another extension (a growth step): a new snapshot; this one is left as it is."""
        return ReferenceIndex(self.manifest, self._data, extension)

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
    def rows(self) -> int:
        """Row numbers run from 0 to this (exclusive): the version's own rows, then the rows added after it."""
        return self._own + (0 if self._added is None else self._added.vectors.size)

    @property
    def size(self) -> int:
        """The references a search can find: the version's own rows not hidden, and the rows added after it."""
        return self.rows - self._hidden.size

    @property
    def added(self) -> int:
        """Rows verified answers added after the version was built."""
        return self.rows - self._own

    @property
    def dim(self) -> int:
        return self._data.vectors.dim

    @cached_property
    def pool_rows(self) -> np.ndarray:
        """The row number of each entry of `all_routings`: every row a search can find, in row order."""
        rows = np.arange(self.rows, dtype=np.int64)
        return np.delete(rows, self._hidden) if self._hidden.size else rows

    @cached_property
    def all_routings(self) -> np.ndarray:
        """[size, L, E] read-only: the pool mean-shift mode finding searches in routing space (rows `pool_rows`)."""
        if self._added is None and not self._hidden.size:
            return self._data.routings
        routings = self._column("routings", self.pool_rows)
        routings.setflags(write=False)
        return routings

    def search(self, query_embedding: np.ndarray, k: int) -> Candidates:
        """The k most similar references to one unit query vector [D] (fewer if the index is smaller)."""
        query = np.asarray(query_embedding, dtype=np.float32)
        if query.shape != (self.dim,):
            raise ValueError(f"query embedding must have shape ({self.dim},), got {query.shape}")
        similarities, rows = self._search(query[None, :], k)
        return self.take(rows[0], similarities[0])

    def _search(self, queries: np.ndarray, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per query, the k best rows (and similarities) over the version's rows and the added ones, best first;
        ties keep FAISS's order, the version's rows before the added ones."""
        own_sims, own_rows = self._data.vectors.search(queries, k + self._hidden.size)
        if self._added is None and not self._hidden.size:
            return [sims[rows >= 0] for sims, rows in zip(own_sims, own_rows)], [rows[rows >= 0] for rows in own_rows]
        parts = [(own_sims, own_rows)]
        if self._added is not None:
            added_sims, added_rows = self._added.vectors.search(queries, k)
            parts.append((added_sims, np.where(added_rows >= 0, added_rows + self._own, -1)))
        sims_out, rows_out = [], []
        for q in range(len(queries)):
            sims = np.concatenate([part[0][q] for part in parts])
            rows = np.concatenate([part[1][q] for part in parts])
            keep = (rows >= 0) & ~np.isin(rows, self._hidden)
            sims, rows = sims[keep], rows[keep]
            order = np.argsort(-sims, kind="stable")[:k]
            sims_out.append(sims[order])
            rows_out.append(rows[order])
        return sims_out, rows_out

    def take(self, rows: np.ndarray, similarities: np.ndarray | None = None) -> Candidates:
        """Candidates for given row numbers (e.g. chosen in routing space); similarities default to nan."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.rows)):
            raise ValueError(f"rows must be a 1-D array of row numbers in [0, {self.rows})")
        if similarities is None:
            similarities = np.full(rows.shape, np.nan, dtype=np.float32)
        records = [self._record(int(i)) for i in rows]
        return Candidates(
            rows=rows,
            ids=tuple(r["id"] for r in records),
            similarities=np.asarray(similarities, dtype=np.float32),
            embeddings=self._column("embeddings", rows),
            routings=self._column("routings", rows),
            answers=tuple(r["answer"] for r in records),
            questions=tuple(r["question"] for r in records),
            tasks=tuple(r["task"] for r in records),
            payload=MappingProxyType({k: self._column(k, rows) for k in self._data.payload}),
        )

    def _column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """One stored array (embeddings, routings or a payload field) at the given rows, whichever part holds them."""
        own = self._data.payload[name] if name in self._data.payload else getattr(self._data, name)
        if self._added is None:
            return own[rows]
        added = self._added.payload[name] if name in self._added.payload else getattr(self._added, name)
        out = np.empty((len(rows), *own.shape[1:]), dtype=own.dtype)
        mine = rows < self._own
        out[mine] = own[rows[mine]]
        out[~mine] = added[rows[~mine] - self._own]
        return out

    def _record(self, row: int) -> Mapping[str, str]:
        return self._data.records[row] if row < self._own else self._added.records[row - self._own]  # type: ignore[union-attr]

    def answers_near(self, rows: np.ndarray, m: int) -> frozenset[str]:
        """The answers of the `m` references whose questions are nearest each of these rows' (rows included):
        the answers an index holds for questions like theirs, whatever the data set or its task labels. Normalised
        (`normalise_answer`), so spellings of one answer ("Fire hydrant", "fire-hydrant") count once."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return frozenset()
        _, found = self._search(self._column("embeddings", rows), m)
        return frozenset(normalise_answer(self._record(int(i))["answer"]) for i in np.concatenate([rows, *found]))

    def record(self, row: int) -> Mapping[str, str]:
        """id, question, answer and task of one row (for explanations and inspection), and its sample key where the
        index recorded one."""
        return MappingProxyType(self._record(row))

    @cached_property
    def sample_keys(self) -> frozenset[str]:
        """The keys (r2t2.data.identity) of every row a search can find that recorded one."""
        return frozenset(key for row in self.pool_rows if (key := self._record(int(row)).get("key")))

    @cached_property
    def sample_ids(self) -> frozenset[str]:
        """The sample ids of every row a search can find."""
        return frozenset(self._record(int(row))["id"] for row in self.pool_rows)
