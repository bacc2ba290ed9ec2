"""The files inside one index version directory, written and read in one place.

index.faiss   the FAISS index over the embeddings (row i = reference sample i)
payload.npz   embeddings [N, D], routings [N, L, E] and the model's payload arrays, uncompressed
samples.jsonl one JSON object per row: id, question, answer, task, and the sample's key (r2t2.data.identity) where
              the build knew its image
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from indexes.errors import IndexIntegrityError
from indexes.manifest import FileRecord, Manifest, file_record
from indexes.vectors import VectorIndex

INDEX_FILE = "index.faiss"
PAYLOAD_FILE = "payload.npz"
SAMPLES_FILE = "samples.jsonl"
SAMPLE_FIELDS = ("id", "question", "answer", "task")
OPTIONAL_FIELDS = ("key",)  # absent from versions built before they were recorded
_PAYLOAD_PREFIX = "payload__"


@dataclass(frozen=True)
class VersionData:
    """Everything stored for one index version, row-aligned."""

    vectors: VectorIndex
    embeddings: np.ndarray  # [N, D] float32 unit vectors
    routings: np.ndarray  # [N, L, E] float32
    payload: Mapping[str, np.ndarray]  # each [N, ...]
    records: tuple[dict[str, str], ...]  # N rows with SAMPLE_FIELDS

    def check_aligned(self) -> None:
        """All parts describe the same N rows; a mismatch means the files do not belong together."""
        n = self.embeddings.shape[0]
        sizes = {
            "index": self.vectors.size,
            "routings": self.routings.shape[0],
            "samples": len(self.records),
            **{f"payload[{k}]": v.shape[0] for k, v in self.payload.items()},
        }
        bad = {part: size for part, size in sizes.items() if size != n}
        if bad:
            raise IndexIntegrityError(f"parts disagree on the number of rows: embeddings {n}, {bad}")
        if self.embeddings.ndim != 2 or self.embeddings.shape[1] != self.vectors.dim:
            raise IndexIntegrityError(f"embeddings {self.embeddings.shape} do not match index dim {self.vectors.dim}")
        if self.routings.ndim != 3:
            raise IndexIntegrityError(f"routings must be [N, L, E], got {self.routings.shape}")


def write_files(directory: Path, data: VersionData) -> dict[str, FileRecord]:
    """Write the three data files and return their checksums for the manifest."""
    data.check_aligned()
    data.vectors.write(directory / INDEX_FILE)
    arrays = {"embeddings": data.embeddings, "routings": data.routings}
    arrays.update({_PAYLOAD_PREFIX + key: value for key, value in data.payload.items()})
    with (directory / PAYLOAD_FILE).open("wb") as handle:
        np.savez(handle, **arrays)
    with (directory / SAMPLES_FILE).open("w", encoding="utf-8") as handle:
        for record in data.records:
            handle.write(json.dumps({key: record[key] for key in SAMPLE_FIELDS + OPTIONAL_FIELDS if key in record})
                         + "\n")
    return {name: file_record(directory / name) for name in (INDEX_FILE, PAYLOAD_FILE, SAMPLES_FILE)}


def read_files(directory: Path, manifest: Manifest) -> VersionData:
    """Verify checksums, then read; arrays come back read-only so a snapshot cannot be altered."""
    if set(manifest.files) != {INDEX_FILE, PAYLOAD_FILE, SAMPLES_FILE}:
        raise IndexIntegrityError(f"{directory}: manifest lists files {sorted(manifest.files)}")
    manifest.verify_files(directory)
    try:
        vectors = VectorIndex.read(directory / INDEX_FILE, manifest.index_type)
        with np.load(directory / PAYLOAD_FILE, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        with (directory / SAMPLES_FILE).open(encoding="utf-8") as handle:
            records = tuple(json.loads(line) for line in handle)
    except (OSError, ValueError, RuntimeError) as err:  # faiss raises RuntimeError on a bad file
        raise IndexIntegrityError(f"{directory}: cannot read index files ({err})") from err
    missing = {"embeddings", "routings"} - arrays.keys()
    missing |= {_PAYLOAD_PREFIX + f for f in manifest.payload_fields} - arrays.keys()
    if missing:
        raise IndexIntegrityError(f"{directory}/{PAYLOAD_FILE}: missing arrays {sorted(missing)}")
    for array in arrays.values():
        array.setflags(write=False)
    payload = {f: arrays[_PAYLOAD_PREFIX + f] for f in manifest.payload_fields}
    data = VersionData(vectors, arrays["embeddings"], arrays["routings"], MappingProxyType(payload), records)
    data.check_aligned()
    if tuple(data.routings.shape[1:]) != manifest.routing_shape:
        raise IndexIntegrityError(f"routings {data.routings.shape} disagree with manifest {manifest.routing_shape}")
    if data.vectors.dim != manifest.embedder_dim:
        raise IndexIntegrityError(f"index dim {data.vectors.dim} disagrees with manifest {manifest.embedder_dim}")
    return data
