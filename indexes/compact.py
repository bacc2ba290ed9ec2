"""Compaction: an index grown by verified answers written out as a new version of its own.

The new version holds every row a search of the grown snapshot can find (the version's own rows, less those whose
feedback was removed, then the rows feedback added), and records the last feedback-log record folded in
(`feedback_through`), so readers extend it only by what the log gains afterwards. It is a version like any other:
activated at once, and the one before it stays for a roll-back.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

from indexes.errors import IndexBuildError, ReferenceIndexError
from indexes.layout import VersionData, write_files
from indexes.manifest import Manifest
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from indexes.vectors import VectorIndex


def compact(store: IndexStore, grown: ReferenceIndex, through: int) -> Manifest:
    """Publish `grown` (a version extended by its feedback log up to record `through`) as the index's next version
    and make it CURRENT; CURRENT is left as it was on any failure."""
    started = time.perf_counter()
    base = grown.manifest
    rows = grown.pool_rows
    found = grown.take(rows)
    embeddings = found.embeddings.astype("float32")
    vectors = VectorIndex.build(embeddings, base.index_type)
    records = tuple(dict(grown.record(int(row))) for row in rows)
    data = VersionData(vectors, embeddings, found.routings.astype("float32"), dict(found.payload), records)
    with store.build_dir(base.name) as build_dir:
        files = write_files(build_dir, data)
        manifest = store.publish(base.name, build_dir, Manifest(
            name=base.name, version=0, model_fingerprint=base.model_fingerprint, embedder_name=base.embedder_name,
            embedder_dim=base.embedder_dim,
            dataset={"source": "compaction", "from_version": base.version, "feedback_rows": grown.added},
            seen=len(records), kept=len(records), index_type=vectors.kind,
            build_seconds=round(time.perf_counter() - started, 3),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            routing_shape=base.routing_shape, payload_fields=base.payload_fields, files=files,
            routing_rows=base.routing_rows, feedback_through=through))
    try:
        ReferenceIndex.load(store, base.name, manifest.version, base.model_fingerprint, base.embedder_name,
                            base.routing_rows)
    except ReferenceIndexError as err:
        store.remove_version(base.name, manifest.version)
        raise IndexBuildError(f"index {base.name!r} v{manifest.version} failed verification after writing: {err}") \
            from err
    store.set_current(base.name, manifest.version)
    return manifest
