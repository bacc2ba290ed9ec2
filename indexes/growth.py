"""An index version grown by its feedback log: the rows added after the version, and its own rows since removed.

Readers rebuild the extension whenever the folded log's live rows change (a FAISS flat index over the added rows'
embeddings, which stay few beside the version's); the version's own files are never touched.
"""
from __future__ import annotations

import logging

import numpy as np

from indexes.feedback_state import ROW_PREFIX, FeedbackRow, FeedbackState
from indexes.layout import VersionData
from indexes.reference_index import Extension, ReferenceIndex
from indexes.vectors import VectorIndex

log = logging.getLogger(__name__)


def rows_data(rows: list[FeedbackRow]) -> VersionData:
    """Feedback rows as index data (row i = rows[i]), searched exactly."""
    embeddings = np.stack([row.embedding for row in rows]).astype(np.float32)
    payload = {name: np.stack([row.payload[name] for row in rows]) for name in rows[0].payload}
    records = tuple({"id": row.row_id, "question": row.question, "answer": row.answer, "task": row.task,
                     "key": row.key} for row in rows)
    return VersionData(VectorIndex.build(embeddings, "flat"), embeddings,
                       np.stack([row.routing for row in rows]).astype(np.float32), payload, records)


def fits(snapshot: ReferenceIndex, row: FeedbackRow) -> str | None:
    """Why a row cannot extend this version (another embedding width, routing shape or payload), or None."""
    if row.embedding.shape != (snapshot.dim,):
        return f"embedding of width {row.embedding.shape} for an index of width {snapshot.dim}"
    if tuple(row.routing.shape) != tuple(snapshot.manifest.routing_shape):
        return f"routing {tuple(row.routing.shape)} for an index of routings {tuple(snapshot.manifest.routing_shape)}"
    if set(row.payload) != set(snapshot.manifest.payload_fields):
        return f"payload fields {sorted(row.payload)}, the index stores {list(snapshot.manifest.payload_fields)}"
    own = snapshot.take(np.zeros(1, dtype=np.int64)).payload if snapshot.rows else {}
    for name, value in row.payload.items():
        if name in own and (value.shape != own[name].shape[1:] or value.dtype != own[name].dtype):
            return f"payload {name!r} {value.dtype}{list(value.shape)}, the index stores {own[name].dtype}" \
                   f"{list(own[name].shape[1:])}"
    return None


def grown(snapshot: ReferenceIndex, state: FeedbackState) -> ReferenceIndex:
    """The version of `snapshot` extended by the live feedback rows added after it (and its own removed ones
    hidden). Rows that do not fit the version are left out, each logged once per rebuild."""
    base = snapshot.manifest.feedback_through
    rows = []
    for row in state.rows_after(base):
        why = fits(snapshot, row)
        if why is None:
            rows.append(row)
        else:
            log.error("index %s v%d: verified answer %s left out: %s", snapshot.name, snapshot.version, row.item, why)
    live = state.live_ids()
    hidden = frozenset(number for row_id, number in own_feedback_rows(snapshot).items() if row_id not in live)
    return snapshot.extended(Extension(rows_data(rows) if rows else None, hidden,
                                       {row.row_id: row.source for row in rows}))


def own_feedback_rows(snapshot: ReferenceIndex) -> dict[str, int]:
    """The version's own rows that feedback added before a compaction: row id -> row number."""
    return {snapshot.record(i)["id"]: i for i in range(snapshot.rows - snapshot.added)
            if snapshot.record(i)["id"].startswith(ROW_PREFIX)}
