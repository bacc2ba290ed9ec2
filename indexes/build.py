"""Build a new index version from reference samples: run the model, keep what it got right, publish.

Samples are visited in a fixed pseudo-random order (by hash of their id) so that the cap keeps the same
subset every time, mixed across tasks, and the build can stop as soon as the cap is reached instead
of running the model on the whole data set. With Ray initialised, batches run as Ray tasks, unless the model
is too large to copy into each task (`SHIPPED_AT_MOST`).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from indexes.errors import IndexBuildError, ReferenceIndexError
from indexes.layout import VersionData, write_files
from indexes.manifest import Manifest
from indexes.protocols import Embedder, ReferenceEncoder
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore, validate_name
from indexes.vectors import FLAT_THRESHOLD, VectorIndex
from r2t2.data.identity import sample_key

if TYPE_CHECKING:
    from r2t2.model.protocol import EncodedBatch

_UNIT_TOLERANCE = 1e-3
# Every Ray task deserialises its own copy of the encoder, beside the object store's and the caller's: a model
# with more bytes of weights than this is encoded where it is loaded (one copy, and the caller's GPU if any).
SHIPPED_AT_MOST = 1 << 30


@dataclass(frozen=True)
class _BatchResult:
    encoded: EncodedBatch
    embeddings: np.ndarray


def _encode_batch(encoder: ReferenceEncoder, embedder: Embedder, samples: list[Any]) -> _BatchResult:
    return _BatchResult(encoder.encode_references(samples), embedder.embed(samples))


def _in_process(encoder: ReferenceEncoder, embedder: Embedder, batches: list[list[Any]]) -> Iterator[_BatchResult]:
    for batch in batches:
        yield _encode_batch(encoder, embedder, batch)


def _on_ray(encoder: ReferenceEncoder, embedder: Embedder, batches: list[list[Any]]) -> Iterator[_BatchResult]:
    """Results in batch order, a bounded window of tasks in flight; unneeded tasks cancelled on stop."""
    ray = sys.modules["ray"]
    task = ray.remote(_encode_batch)
    encoder_ref, embedder_ref = ray.put(encoder), ray.put(embedder)  # shipped once, not per batch
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: list[Any] = []
    next_batch = 0
    try:
        while next_batch < len(batches) or pending:
            while next_batch < len(batches) and len(pending) < window:
                pending.append(task.remote(encoder_ref, embedder_ref, batches[next_batch]))
                next_batch += 1
            yield ray.get(pending.pop(0))
    finally:
        for ref in pending:
            ray.cancel(ref)


def _ray_ready() -> bool:
    """Ray is running *and* has a CPU free for a task.

    Inside a Serve replica on a small machine every CPU can be reserved by deployments; tasks would
    then queue forever, so the build runs in-process instead.
    """
    ray = sys.modules.get("ray")  # never imported means never initialised: no import cost here
    return ray is not None and ray.is_initialized() and ray.available_resources().get("CPU", 0) >= 1


def _check_result(result: _BatchResult, size: int, dim: int) -> None:
    try:
        result.encoded.validate(size)
    except ValueError as err:
        raise IndexBuildError(f"encoder returned a malformed batch: {err}") from err
    emb = result.embeddings
    if not isinstance(emb, np.ndarray) or emb.shape != (size, dim) or not np.isfinite(emb).all():
        raise IndexBuildError(f"embedder must return finite [{size}, {dim}] vectors, got {getattr(emb, 'shape', emb)}")
    if not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=_UNIT_TOLERANCE):
        raise IndexBuildError("embedder returned vectors that are not unit length")


def _build_order(samples: list[Any]) -> list[Any]:
    ids = [sample.id for sample in samples]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"sample ids must be unique; duplicated: {duplicates}")
    return sorted(samples, key=lambda s: hashlib.sha256(s.id.encode()).digest())


def build_index(
    name: str,
    samples: list[Any],
    encoder: ReferenceEncoder,
    embedder: Embedder,
    store: IndexStore,
    dataset_spec: dict[str, Any],
    index_type: str = "auto",
    batch_size: int = 64,
    cap: int = 5000,
    progress: bool = True,
    flat_threshold: int = FLAT_THRESHOLD,
    on_progress: Callable[[float], None] | None = None,
) -> Manifest:
    """Encode and embed `samples`, keep up to `cap` correctly answered ones, publish a verified new
    version and make it CURRENT. On any failure CURRENT and existing versions are left untouched."""
    validate_name(name)
    if not samples:
        raise ValueError("no samples to build an index from")
    if batch_size < 1 or cap < 1:
        raise ValueError(f"batch_size and cap must be >= 1, got {batch_size}, {cap}")
    try:
        json.dumps(dataset_spec)
    except TypeError as err:
        raise ValueError(f"dataset_spec must be JSON-serialisable: {err}") from err
    started = time.perf_counter()
    ordered = _build_order(samples)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    run = _on_ray if _ray_ready() and getattr(encoder, "weight_bytes", 0) <= SHIPPED_AT_MOST else _in_process

    kept: list[tuple[list[Any], _BatchResult, np.ndarray]] = []
    n_kept = seen = 0
    with tqdm(total=len(ordered), unit="sample", desc=f"building index {name}", disable=not progress) as bar:
        results = run(encoder, embedder, batches)
        try:
            for batch, result in zip(batches, results):
                _check_result(result, len(batch), embedder.dim)
                mask = result.encoded.correct
                kept.append((batch, result, mask))
                n_kept += int(mask.sum())
                seen += len(batch)
                bar.update(len(batch))
                bar.set_postfix(kept=n_kept)
                if on_progress is not None:
                    on_progress(min(0.95, max(seen / len(ordered), n_kept / cap)))
                if n_kept >= cap:
                    break
        finally:
            results.close()
    if n_kept == 0:
        raise IndexBuildError(f"the model answered none of the {seen} samples correctly; nothing to index")

    embeddings, routings, payload, records = _assemble(kept, cap)
    vectors = VectorIndex.build(embeddings, index_type, flat_threshold)
    data = VersionData(vectors, embeddings, routings, payload, records)
    with store.build_dir(name) as build_dir:
        files = write_files(build_dir, data)
        manifest = store.publish(name, build_dir, Manifest(
            name=name, version=0, model_fingerprint=encoder.fingerprint, embedder_name=embedder.name,
            embedder_dim=embedder.dim, dataset=dataset_spec, seen=seen, kept=len(records),
            index_type=vectors.kind, build_seconds=round(time.perf_counter() - started, 3),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            routing_shape=tuple(routings.shape[1:]), payload_fields=tuple(sorted(payload)), files=files,
            routing_rows=routing_row_names(encoder),
        ))
    try:
        ReferenceIndex.load(store, name, manifest.version, encoder.fingerprint, embedder.name,
                            routing_row_names(encoder))
    except ReferenceIndexError as err:
        store.remove_version(name, manifest.version)
        raise IndexBuildError(f"index {name!r} v{manifest.version} failed verification after writing: {err}") from err
    store.set_current(name, manifest.version)
    if on_progress is not None:
        on_progress(1.0)
    return manifest


def routing_row_names(model: Any) -> tuple[str, ...]:
    """The names of the model's routing rows, as an index records them (empty for an encoder without a
    `routing_layout`: its indexes are then served without a row check)."""
    layout = getattr(model, "routing_layout", None)
    return () if layout is None else tuple(layout.names)


def _assemble(
    kept: list[tuple[list[Any], _BatchResult, np.ndarray]], cap: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], tuple[dict[str, str], ...]]:
    """Concatenate the correct rows of every batch, in build order, truncated to the cap."""
    fields = tuple(sorted(kept[0][1].encoded.payload))
    for _, result, _ in kept:
        if tuple(sorted(result.encoded.payload)) != fields:
            raise IndexBuildError(f"payload fields differ between batches: {fields} vs {sorted(result.encoded.payload)}")
    try:
        embeddings = np.concatenate([r.embeddings[m] for _, r, m in kept])[:cap].astype(np.float32)
        routings = np.concatenate([r.encoded.routings[m] for _, r, m in kept])[:cap].astype(np.float32)
        payload = {f: np.concatenate([r.encoded.payload[f][m] for _, r, m in kept])[:cap] for f in fields}
    except ValueError as err:
        raise IndexBuildError(f"batches have inconsistent array shapes: {err}") from err
    samples = [s for batch, _, m in kept for s, keep in zip(batch, m) if keep][:cap]
    records = tuple({"id": s.id, "question": s.question, "answer": s.answer, "task": s.task,
                     "key": sample_key(s.image, s.question)} for s in samples)
    return embeddings, routings, payload, records
