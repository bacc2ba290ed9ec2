"""What an index's feedback log says: the verified answers accepted, added, refused and removed, folded in order.

The writer and every reader fold the same records the same way, so they agree on which references feedback added
without talking to each other. The records:

- `accepted`: a verified answer, durable before the client is told: its id, the model, the sample (question,
  answer, task, the image as PNG) and its source (the token's name, the completion it verifies, when).
- `added`: the row it became: question embedding, routing, the model's payload, and how the routing was found.
- `refused`: why no row was made (no routing within the step budget answers it, say).
- `removed`: rows taken out again: by a person (`removed`), by the cap (`evicted`), or by a newer verified
  answer to the same image and question (`replaced`).
"""
from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from indexes.feedback_log import Record, decode_array, encode_array
from r2t2.data.identity import sample_key

ROW_PREFIX = "feedback/"  # a feedback row's id in an index: ROW_PREFIX + the item's id


def new_item_id() -> str:
    return "vr-" + uuid.uuid4().hex[:20]


def image_record(image: Image.Image) -> dict[str, str]:
    """An image as a log record holds it: lossless PNG, base64."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return {"png": base64.b64encode(buffer.getvalue()).decode()}


def image_of(record: Mapping[str, str]) -> Image.Image:
    with Image.open(io.BytesIO(base64.b64decode(record["png"]))) as image:
        return image.convert("RGB")


def accepted(item: str, model: str, image: Image.Image, question: str, answer: str, task: str,
             source: dict[str, Any]) -> Record:
    return {"kind": "accepted", "id": item, "at": time.time(), "model": model, "key": sample_key(image, question),
            "question": question, "answer": answer, "task": task, "image": image_record(image), "source": source}


def added(item: str, embedding: np.ndarray, routing: np.ndarray, payload: Mapping[str, np.ndarray],
          how: dict[str, Any]) -> Record:
    return {"kind": "added", "id": item, "at": time.time(), "embedding": encode_array(embedding),
            "routing": encode_array(routing), "payload": {k: encode_array(v) for k, v in payload.items()}, "how": how}


def refused(item: str, reason: str) -> Record:
    return {"kind": "refused", "id": item, "at": time.time(), "reason": reason}


def removed(items: list[str], why: str, by: str) -> Record:
    return {"kind": "removed", "ids": items, "at": time.time(), "why": why, "by": by}


@dataclass(frozen=True)
class FeedbackRow:
    """A reference that a verified answer added: everything an index row holds, and where it came from."""

    item: str
    seq: int  # the `added` record's sequence number: rows after a version's `feedback_through` extend it
    embedding: np.ndarray  # [D]
    routing: np.ndarray  # [L, E]
    payload: dict[str, np.ndarray]  # each [...], one row of the model's payload
    question: str
    answer: str
    task: str
    source: dict[str, Any]
    how: dict[str, Any]
    key: str = ""  # the sample's key (r2t2.data.identity): its image and question

    @property
    def row_id(self) -> str:
        return ROW_PREFIX + self.item


@dataclass
class Item:
    """One verified answer as the log tells it."""

    id: str
    seq: int
    at: float
    model: str
    key: str
    question: str
    answer: str
    task: str
    source: dict[str, Any]
    status: str = "accepted"  # accepted | added | refused | removed
    reason: str | None = None  # why refused, or why removed (removed | evicted | replaced)
    how: dict[str, Any] | None = None
    image: dict[str, Any] | None = None  # the accepted record's image while the item waits to be processed
    added_seq: int | None = None  # the `added` record's sequence number, once it was added

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "reason": self.reason, "model": self.model,
                "question": self.question, "answer": self.answer, "task": self.task, "source": self.source,
                "accepted_at": self.at, "how": self.how}


class FeedbackState:
    """The log folded: items by id, the live rows in the order they were added, what waits to be processed."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.rows: dict[str, FeedbackRow] = {}  # live rows by item id, in the order they were added
        self.by_key: dict[str, str] = {}  # sample key -> the item that holds it now (accepted or added)
        self.last_seq = 0
        self.version = 0  # bumped whenever the live rows change: readers rebuild their view then

    def fold(self, records: Iterable[Record]) -> None:
        for record in records:
            self.last_seq = max(self.last_seq, int(record.get("seq", 0)))
            kind = record.get("kind")
            if kind == "accepted":
                self._accepted(record)
            elif kind == "added":
                self._added(record)
            elif kind == "refused":
                self._closed(record["id"], "refused", record.get("reason"))
            elif kind == "removed":
                for item in record["ids"]:
                    self._closed(item, "removed", record.get("why"))

    def _accepted(self, record: Record) -> None:
        item = Item(id=record["id"], seq=int(record["seq"]), at=float(record["at"]), model=record["model"],
                    key=record["key"], question=record["question"], answer=record["answer"], task=record["task"],
                    source=record.get("source", {}), image=record["image"])
        self.items[item.id] = item
        self.by_key[item.key] = item.id

    def _added(self, record: Record) -> None:
        item = self.items.get(record["id"])
        if item is None or item.status != "accepted":
            return  # an outcome for an item not (or no longer) waiting: already folded once
        item.status, item.how, item.image, item.added_seq = "added", record.get("how"), None, int(record["seq"])
        self.rows[item.id] = FeedbackRow(
            item=item.id, seq=int(record["seq"]), embedding=decode_array(record["embedding"]),
            routing=decode_array(record["routing"]),
            payload={name: decode_array(array) for name, array in record["payload"].items()},
            question=item.question, answer=item.answer, task=item.task, source=item.source, how=item.how or {},
            key=item.key)
        self.version += 1

    def _closed(self, item_id: str, status: str, reason: str | None) -> None:
        item = self.items.get(item_id)
        if item is None or item.status in ("refused", "removed"):
            return
        item.status, item.reason, item.image = status, reason, None
        if self.by_key.get(item.key) == item_id:
            del self.by_key[item.key]
        if self.rows.pop(item_id, None) is not None:
            self.version += 1

    def pending(self) -> list[Item]:
        """Accepted items without an outcome yet, oldest first."""
        return [item for item in self.items.values() if item.status == "accepted"]

    def rows_after(self, seq: int) -> list[FeedbackRow]:
        """Live rows added after `seq` (a version's `feedback_through`), in the order they were added."""
        return [row for row in self.rows.values() if row.seq > seq]

    def live_ids(self) -> set[str]:
        return {row.row_id for row in self.rows.values()}

    def counts(self) -> dict[str, int]:
        """Verified answers accepted in all, waiting to be fitted, ever added, refused, removed; and live rows."""
        statuses = [item.status for item in self.items.values()]
        return {"accepted": len(statuses), "waiting": statuses.count("accepted"),
                "added": sum(item.added_seq is not None for item in self.items.values()),
                "refused": statuses.count("refused"), "removed": statuses.count("removed"), "live": len(self.rows)}

    def size(self, kept: int, through: int) -> int:
        """The references a version of `kept` rows, compacted through record `through`, serves grown by this log."""
        gone = sum(item.status == "removed" and item.added_seq is not None and item.added_seq <= through
                   for item in self.items.values())
        return kept - gone + len(self.rows_after(through))
