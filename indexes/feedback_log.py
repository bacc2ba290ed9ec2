"""The append-only log of verified answers: one file per index, `<index>/feedback.log`.

Every record is one frame: the magic bytes, the payload's length and CRC-32, then the payload (a JSON object).
The writer holds an exclusive lock on the file for as long as it has it open, gives each record the next
sequence number, and returns from `append` only after the frames are on disk (one write and one fsync per call:
a group commit of every record of that call). Readers take no lock and follow the file as it grows.

A crash can leave a torn last frame (a write cut short). Readers wait at a frame that is not whole yet; the next
writer to open the file moves the torn bytes aside to `feedback.log.torn-<offset>` and reports it, and nothing
before it is lost. A damaged frame with whole frames after it is skipped and reported, never silently: the
search for the next magic bytes resumes right after it.
"""
from __future__ import annotations

import base64
import errno
import fcntl
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import ReferenceIndexError

log = logging.getLogger(__name__)

LOG_FILE = "feedback.log"
MAGIC = b"R2FB"
_HEADER = struct.Struct("<4sII")  # magic, payload length, CRC-32 of the payload
MAX_RECORD_BYTES = 64 << 20  # a length field above this is damage, not a record

Record = dict[str, Any]


class FeedbackLogBusy(ReferenceIndexError):
    """Another process holds the log open for writing."""


@dataclass
class LogReport:
    """What reading a log found besides its records: damage skipped and a torn tail set aside."""

    damaged: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) of each frame skipped
    torn_tail: tuple[int, int] | None = None  # (offset, bytes) of a cut-short last frame, set aside by a writer

    def to_dict(self) -> dict[str, Any]:
        return {"damaged_frames": [{"offset": o, "bytes": n} for o, n in self.damaged],
                "torn_tail": None if self.torn_tail is None else {"offset": self.torn_tail[0],
                                                                   "bytes": self.torn_tail[1]}}


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A numeric array as JSON: dtype, shape and the little-endian bytes in base64."""
    array = np.ascontiguousarray(array) if np.ndim(array) else np.asarray(array)  # a 0-d array stays 0-d
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def decode_array(encoded: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.dtype(encoded["dtype"])).reshape(
        encoded["shape"]).copy()


def frame(record: Record) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _scan(data: bytes, base: int, report: LogReport) -> tuple[list[Record], int, bool]:
    """Whole, valid frames of `data` (the file's bytes from offset `base`): (records, bytes consumed up to the end
    of the last whole frame, whether a frame that is not whole or not valid remains at the end). Damaged frames
    with whole frames after them are skipped and go into `report`, at their offsets in the file."""
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            return records, offset, True
        magic, length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        valid = magic == MAGIC and length <= MAX_RECORD_BYTES
        if valid and end > len(data):
            return records, offset, True  # still being written, or torn
        payload = data[offset + _HEADER.size:end] if valid else b""
        if valid and zlib.crc32(payload) == crc:
            try:
                records.append(json.loads(payload))
                offset = end
                continue
            except ValueError:
                pass
        resume = data.find(MAGIC, offset + 1)
        if resume < 0:
            return records, offset, True  # nothing whole after it: a tail not yet (or never) finished
        report.damaged.append((base + offset, resume - offset))
        log.error("feedback log: skipped %d damaged bytes at offset %d", resume - offset, base + offset)
        offset = resume
    return records, offset, False


class LogTail:
    """Follows a log as it grows: each `read_new` returns the records appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.report = LogReport()
        # (device, inode, its first frame's header): a log removed and created anew starts over, even where the new
        # file got the old one's inode number
        self._identity: tuple[int, int, bytes] | None = None
        self.restarts = 0  # how many times the file was found replaced: what was read from it before no longer holds

    def read_new(self) -> list[Record]:
        try:
            with self.path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                identity = (stat.st_dev, stat.st_ino, handle.read(_HEADER.size))
                if identity != self._identity or stat.st_size < self.offset:
                    if self._identity is not None:
                        self.restarts += 1
                    self.offset, self.report, self._identity = 0, LogReport(), identity
                if stat.st_size == self.offset:
                    return []
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            if self._identity is not None:
                self.restarts += 1
            self.offset, self._identity = 0, None
            return []
        records, consumed, _ = _scan(data, self.offset, self.report)
        self.offset += consumed
        return records


class FeedbackLog:
    """The one writer of a log: replays it at open, repairs a torn tail, appends durably."""

    def __init__(self, path: Path, handle: int, records: list[Record], report: LogReport) -> None:
        self.path = path
        self._fd = handle
        self.records = records  # every valid record at open, in order
        self.report = report
        self.next_seq = 1 + max((int(r.get("seq", 0)) for r in records), default=0)

    @classmethod
    def open(cls, path: Path) -> "FeedbackLog":
        """Open (creating it if needed) and lock; FeedbackLogBusy when another writer has it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise FeedbackLogBusy(f"{path} is open for writing in another process") from None
            raise
        try:
            with open(fd, "rb", closefd=False) as handle:
                handle.seek(0)
                data = handle.read()
            report = LogReport()
            records, end, unfinished = _scan(data, 0, report)
            if unfinished:
                cls._set_aside(path, fd, data, end, report)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, records, report)

    @staticmethod
    def _set_aside(path: Path, fd: int, data: bytes, end: int, report: LogReport) -> None:
        """A cut-short last frame (the writer died mid-write): keep its bytes beside the log, then cut it off."""
        torn = path.with_name(f"{path.name}.torn-{end}")
        torn.write_bytes(data[end:])
        os.ftruncate(fd, end)
        os.fsync(fd)
        report.torn_tail = (end, len(data) - end)
        log.error("feedback log %s: a torn last frame of %d bytes at offset %d was set aside in %s", path,
                  len(data) - end, end, torn.name)

    def append(self, records: list[Record]) -> list[Record]:
        """Write the records (each given the next `seq`) in one write and one fsync; returns them as written."""
        written = []
        for record in records:
            written.append({**record, "seq": self.next_seq})
            self.next_seq += 1
        data = b"".join(frame(record) for record in written)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.records.extend(written)
        return written

    def is_current(self) -> bool:
        """Whether the path still names the file this writer holds (not removed, nor replaced by another)."""
        try:
            found, held = os.stat(self.path), os.fstat(self._fd)
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1
