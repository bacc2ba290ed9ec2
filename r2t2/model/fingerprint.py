"""A checkpoint's fingerprint: the content hash of its weight files, what reference indexes are tied to."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

FINGERPRINT = "FINGERPRINT"  # the file a checkpoint records its fingerprint in
_CHUNK = 64 << 20  # read in pieces: a shard of a published checkpoint is several GB


def files_fingerprint(paths: Iterable[Path]) -> str:
    """16 hex digits over the files' names and bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]
