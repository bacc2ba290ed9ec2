"""A checkpoint's fingerprint: large weights are hashed once per path, size and modification time."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from r2t2.model import fingerprint as fingerprints


@pytest.fixture
def shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("R2T2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprints, "_CACHED_FROM_BYTES", 8)  # these few bytes count as large
    paths = [tmp_path / "model-00001-of-00002.safetensors", tmp_path / "model-00002-of-00002.safetensors"]
    for n, path in enumerate(paths):
        path.write_bytes(bytes([n]) * 64)
    return paths


def test_a_large_checkpoint_is_hashed_once_and_found_by_every_later_load(shards: list[Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    digest = fingerprints.files_fingerprint(shards)
    assert digest == fingerprints._hash(sorted(shards)) and len(digest) == 16
    monkeypatch.setattr(fingerprints, "_hash", lambda files: pytest.fail("hashed again"))
    assert fingerprints.files_fingerprint(reversed(shards)) == digest


def test_rewritten_bytes_are_hashed_again(shards: list[Path]) -> None:
    digest = fingerprints.files_fingerprint(shards)
    stat = shards[0].stat()
    shards[0].write_bytes(b"\xff" * 64)  # the same size...
    os.utime(shards[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # ...and a clock that barely moved
    assert fingerprints.files_fingerprint(shards) != digest


def test_small_checkpoints_are_not_cached(shards: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fingerprints, "_CACHED_FROM_BYTES", 1 << 30)
    fingerprints.files_fingerprint(shards)
    assert not (tmp_path / "cache").exists()
