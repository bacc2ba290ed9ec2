"""The manifest: what an index version contains, how it was made, and checksums of every file.

Written last into a version directory, so a directory with a manifest is a finished build. On load the
checksums catch corrupted or truncated files and the recorded model fingerprint and embedder catch an
index that would silently give wrong neighbours or routings to a different model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexes.errors import IndexIntegrityError, IndexMismatchError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    model_fingerprint: str
    embedder_name: str
    embedder_dim: int
    dataset: dict[str, Any]
    seen: int  # samples the model answered during the build
    kept: int  # of those, answered correctly and kept (after the cap)
    index_type: str
    build_seconds: float
    created_at: str  # ISO 8601, UTC
    routing_shape: tuple[int, int]  # (L, E)
    payload_fields: tuple[str, ...]
    files: dict[str, FileRecord] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    routing_rows: tuple[str, ...] = ()  # the model's routing row names (empty: built before rows were recorded)
    # The last feedback-log record folded into this version's rows (a compaction); rows added after it extend it.
    feedback_through: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        data["routing_shape"] = list(self.routing_shape)
        data["payload_fields"] = list(self.payload_fields)
        data["routing_rows"] = list(self.routing_rows)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> "Manifest":
        """Parse and check a manifest; anything malformed is an integrity problem of that version."""
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {data.get('format_version')!r}")
            data["files"] = {name: FileRecord(**record) for name, record in data["files"].items()}
            data["routing_shape"] = tuple(int(v) for v in data["routing_shape"])
            data["payload_fields"] = tuple(data["payload_fields"])
            data["routing_rows"] = tuple(data.get("routing_rows", ()))
            manifest = cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise IndexIntegrityError(f"{where}: unreadable manifest ({err})") from err
        if len(manifest.routing_shape) != 2:
            raise IndexIntegrityError(f"{where}: routing_shape must be (L, E), got {manifest.routing_shape}")
        return manifest

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = directory / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise IndexIntegrityError(f"{path}: cannot read manifest ({err})") from err
        return cls.from_json(text, where=str(path))

    def verify_files(self, directory: Path) -> None:
        """Check size then sha256 of every recorded file (size first: truncation gets a clear message)."""
        for name, record in self.files.items():
            path = directory / name
            if not path.is_file():
                raise IndexIntegrityError(f"{path}: file listed in the manifest is missing")
            actual_bytes = path.stat().st_size
            if actual_bytes != record.bytes:
                raise IndexIntegrityError(
                    f"{path}: truncated or altered, manifest says {record.bytes} bytes, found {actual_bytes}"
                )
            if file_sha256(path) != record.sha256:
                raise IndexIntegrityError(f"{path}: checksum mismatch, the file is corrupted")

    def check_compatible(self, expected_fingerprint: str | None, expected_embedder: str | None,
                         expected_rows: tuple[str, ...] | None = None) -> None:
        """Refuse an index made by another model or embedder, or whose stored routings have other rows than
        the model routes (None skips that check): its routings would be mixed up with the model's."""
        label = f"index {self.name!r} v{self.version}"
        if expected_fingerprint is not None and self.model_fingerprint != expected_fingerprint:
            raise IndexMismatchError(
                f"{label} was built with model {self.model_fingerprint!r}, the serving model is "
                f"{expected_fingerprint!r}; rebuild the index with this model"
            )
        if expected_embedder is not None and self.embedder_name != expected_embedder:
            raise IndexMismatchError(
                f"{label} was built with embedder {self.embedder_name!r}, expected {expected_embedder!r}"
            )
        if expected_rows is not None and self.routing_rows != tuple(expected_rows):
            stored = ", ".join(self.routing_rows) if self.routing_rows else "rows not recorded (built before LM rows)"
            raise IndexMismatchError(
                f"{label} stores routings of rows [{stored}] but the model routes [{', '.join(expected_rows)}]; "
                f"rebuild the index (`r2t2 index build --name {self.name}`, or POST /v1/indexes/{self.name}/rebuild)"
            )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> FileRecord:
    return FileRecord(sha256=file_sha256(path), bytes=path.stat().st_size)
