"""A checkpoint's fingerprint: the content hash of its weight files, what reference indexes are tied to."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from r2t2.cache import cache_root

FINGERPRINT = "FINGERPRINT"  # the file a checkpoint records its fingerprint in
_CHUNK = 64 << 20  # read in pieces: a shard of a published checkpoint is several GB
# Weights this large are hashed once per (path, size, modification time) and the hash kept in the cache: every
# process that loads a 62 GB checkpoint (re-router, index manager, start-up checks) would otherwise read it all.
_CACHED_FROM_BYTES = 1 << 30


def files_fingerprint(paths: Iterable[Path]) -> str:
    """16 hex digits over the files' names and bytes, in path order. A file rewritten in place changes its
    modification time, so a cached hash is never one of other bytes."""
    files = sorted(Path(p).resolve() for p in paths)
    stats = [(str(path), stat.st_size, stat.st_mtime_ns) for path, stat in ((p, p.stat()) for p in files)]
    if sum(size for _, size, _ in stats) < _CACHED_FROM_BYTES:
        return _hash(files)
    kept = cache_root() / "fingerprints" / hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    if kept.is_file():
        return kept.read_text().strip()
    digest = _hash(files)
    kept.parent.mkdir(parents=True, exist_ok=True)
    partial = kept.with_suffix(".partial")
    partial.write_text(digest + "\n")
    partial.replace(kept)  # whole or absent, whatever process writes it
    return digest


def _hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]
