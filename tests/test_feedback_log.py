"""The feedback log: appended records survive a kill, a torn last frame is set aside and reported, a damaged frame
in the middle is skipped and reported, and readers follow the file as it grows without reading half a frame."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexes.feedback_log import FeedbackLog, FeedbackLogBusy, LogTail, decode_array, encode_array, frame

ROOT = Path(__file__).resolve().parents[1]


def _log(path: Path, *records: dict) -> None:
    log = FeedbackLog.open(path)
    try:
        log.append(list(records))
    finally:
        log.close()


def test_records_come_back_in_order_with_rising_sequence_numbers(tmp_path: Path) -> None:
    path = tmp_path / "feedback.log"
    _log(path, {"kind": "a"}, {"kind": "b"})
    _log(path, {"kind": "c"})
    log = FeedbackLog.open(path)
    assert [(r["kind"], r["seq"]) for r in log.records] == [("a", 1), ("b", 2), ("c", 3)]
    assert log.next_seq == 4 and log.report.torn_tail is None and not log.report.damaged
    log.close()


def test_a_second_writer_is_refused_while_the_first_holds_the_log(tmp_path: Path) -> None:
    first = FeedbackLog.open(tmp_path / "feedback.log")
    with pytest.raises(FeedbackLogBusy):
        FeedbackLog.open(tmp_path / "feedback.log")
    first.close()
    FeedbackLog.open(tmp_path / "feedback.log").close()


def test_a_torn_last_frame_is_set_aside_and_reported_and_nothing_before_it_lost(tmp_path: Path) -> None:
    path = tmp_path / "feedback.log"
    _log(path, {"kind": "a"}, {"kind": "b"})
    whole = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(frame({"kind": "c", "seq": 3})[:-5])  # the writer died mid-write
    log = FeedbackLog.open(path)
    assert [r["kind"] for r in log.records] == ["a", "b"]
    assert log.report.torn_tail is not None and log.report.torn_tail[0] == whole
    assert path.stat().st_size == whole and (tmp_path / f"feedback.log.torn-{whole}").is_file()
    log.append([{"kind": "d"}])
    log.close()
    assert [r["kind"] for r in FeedbackLog.open(path).records] == ["a", "b", "d"]


def test_a_damaged_frame_between_whole_ones_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "feedback.log"
    _log(path, {"kind": "a"}, {"kind": "b", "text": "x" * 50}, {"kind": "c"})
    data = bytearray(path.read_bytes())
    middle = data.index(b"xxxx")
    data[middle] ^= 0xFF  # one flipped byte inside the second frame: its CRC no longer matches
    path.write_bytes(bytes(data))
    tail = LogTail(path)
    assert [r["kind"] for r in tail.read_new()] == ["a", "c"] and len(tail.report.damaged) == 1
    log = FeedbackLog.open(path)
    assert [r["kind"] for r in log.records] == ["a", "c"] and len(log.report.damaged) == 1
    log.close()


def test_a_reader_follows_the_log_and_waits_at_a_frame_not_yet_whole(tmp_path: Path) -> None:
    path = tmp_path / "feedback.log"
    tail = LogTail(path)
    assert tail.read_new() == []  # no log yet
    _log(path, {"kind": "a"})
    assert [r["kind"] for r in tail.read_new()] == ["a"]
    assert tail.read_new() == []
    half = frame({"kind": "b", "seq": 2})
    with path.open("ab") as handle:
        handle.write(half[:7])
        handle.flush()
        assert tail.read_new() == []  # half a frame: read again later
        handle.write(half[7:])
    assert [r["kind"] for r in tail.read_new()] == ["b"]
    path.unlink()
    _log(path, {"kind": "z"})  # removed and made anew: the reader starts over and says so
    restarts = tail.restarts
    assert [r["kind"] for r in tail.read_new()] == ["z"] and tail.restarts == restarts + 1
    _log(path, {"kind": "y"})
    assert [r["kind"] for r in tail.read_new()] == ["y"]
    with path.open("r+b") as handle:  # written anew in place, the inode kept: longer than what was read
        handle.truncate(0)
        handle.write(frame({"kind": "w", "seq": 1, "pad": "p" * 200}))
    assert [r["kind"] for r in tail.read_new()] == ["w"] and tail.restarts == restarts + 2


def test_arrays_round_trip_with_their_dtype_and_shape() -> None:
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.int32(7) * np.ones((), dtype=np.int32),
                  np.zeros((0, 4), dtype=np.int64)):
        back = decode_array(encode_array(array))
        assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


WRITER = """
import sys
from pathlib import Path
from indexes.feedback_log import FeedbackLog
log = FeedbackLog.open(Path(sys.argv[1]))
print("open", flush=True)
while True:
    written = log.append([{"kind": "accepted", "pad": "y" * 3000} for _ in range(3)])
    print(written[-1]["seq"], flush=True)  # the client is told only after append returned
"""


def test_every_record_a_killed_writer_confirmed_is_there_and_none_twice(tmp_path: Path) -> None:
    """SIGKILL mid-stream, five times: every record whose append had returned is read back, each once."""
    path = tmp_path / "feedback.log"
    confirmed = 0
    for _ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                  cwd=ROOT)
        assert writer.stdout.readline().strip() == "open"
        time.sleep(0.3)
        os.kill(writer.pid, signal.SIGKILL)
        out, _ = writer.communicate()
        seqs = [int(line) for line in out.split()]
        confirmed = max([confirmed, *seqs])
        log = FeedbackLog.open(path)
        numbers = [r["seq"] for r in log.records]
        log.close()
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= confirmed
