"""Verified answers, from the request to the index: kept completions, the durable intake, and the fitting worker.

Lives in the index manager (one replica): it holds each index's feedback log open for writing. An item is
`accepted` once its record is on disk (fsync) and only then is the client told; the worker thread then fits its
routing (serving/pipeline/verified.py) and writes `added` or `refused`. A manager killed at any point loses
nothing accepted: at start every log is replayed and what was accepted without an outcome is processed again; a
client that retries an item it never heard back about is told it is a `duplicate` of the one already accepted.
Re-routers read the logs themselves (indexes/registry.py), within a refresh interval of an outcome.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from indexes.feedback_log import LOG_FILE, FeedbackLog
from indexes.feedback_state import (FeedbackRow, FeedbackState, Item, accepted, added, image_of, new_item_id, refused,
                                    removed)
from indexes.growth import fits
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from r2t2.data.answers import normalise_answer, same_answer
from r2t2.data.identity import sample_key
from r2t2.data.sample import TASKS, USER, Sample
from r2t2.routing.fit import FitSettings
from serving.config import FeedbackOptions
from serving.pipeline.protocol import Pipeline
from serving.pipeline.verified import NewRow

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Kept:
    """An answered completion, kept so that a verified answer may name it by id."""

    model: str
    image: Image.Image
    question: str
    answer: str
    at: float


class Completions:
    """The completions answered lately: bounded by count and by age, the oldest dropped first."""

    def __init__(self, retain_s: float, retain_max: int) -> None:
        self._retain_s, self._max = retain_s, retain_max
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, completion_id: str, kept: Kept) -> None:
        with self._lock:
            self._kept[completion_id] = kept
            self._expire(time.time())
            while len(self._kept) > self._max:
                self._kept.popitem(last=False)

    def get(self, completion_id: str) -> Kept | None:
        now = time.time()
        with self._lock:
            self._expire(now)
            kept = self._kept.get(completion_id)
        return kept if kept is not None and now - kept.at <= self._retain_s else None

    def _expire(self, now: float) -> None:
        while self._kept and now - next(iter(self._kept.values())).at > self._retain_s:
            self._kept.popitem(last=False)


@dataclass(frozen=True)
class Intake:
    """One item of a request, checked by the ingress: a completion's id, or an image and question; the answer."""

    answer: str
    task: str | None = None
    completion_id: str | None = None
    image: Image.Image | None = None
    question: str | None = None


class FeedbackDesk:
    """Every index's feedback log open for writing, the completions kept, and the worker that fits routings."""

    def __init__(self, options: FeedbackOptions, store: IndexStore,
                 pipeline_of: Callable[[str], Pipeline]) -> None:
        self._options = options
        self._store = store
        self._pipeline_of = pipeline_of
        self.completions = Completions(options.retain_s, options.retain_max)
        self._logs: dict[str, tuple[FeedbackLog, FeedbackState]] = {}
        self._lock = threading.Lock()  # the logs and their states: intake, worker and removals take turns
        self._work = threading.Condition(self._lock)
        self._stopping = False
        self.duplicates: dict[str, int] = {}  # per index, since this manager started (duplicates write nothing)
        for name in store.names():
            if (store.index_dir(name) / LOG_FILE).exists():
                self._log(name)  # replays it: anything accepted and never processed is processed now
        self._worker = threading.Thread(target=self._run, name="feedback-worker", daemon=True)
        self._worker.start()

    def _log(self, index: str) -> tuple[FeedbackLog, FeedbackState]:
        """The index's log, opened (and replayed) on first use, and again when the file was replaced (its index
        removed and built anew); the caller holds the lock or is the constructor."""
        if index in self._logs and not self._logs[index][0].is_current():
            self._logs.pop(index)[0].close()
        if index not in self._logs:
            log = FeedbackLog.open(self._store.index_dir(index) / LOG_FILE)
            state = FeedbackState()
            state.fold(log.records)
            self._logs[index] = (log, state)
            if log.report.torn_tail or log.report.damaged:
                logger.error("index %s: feedback log damage found at start: %s", index, log.report.to_dict())
        return self._logs[index]

    # ---- intake --------------------------------------------------------------------------------------
    def accept(self, model: str, index: str, intake: list[Intake], source: str) -> list[dict[str, Any]]:
        """Each item's fate now: accepted (durable), duplicate (of an item accepted before) or refused (why).
        Everything accepted by one call is written in one group commit before this returns."""
        replies: list[dict[str, Any]] = []
        records = []
        with self._lock:
            log, state = self._log(index)
            seen: dict[str, tuple[str, str]] = {}  # key -> (item, answer) accepted earlier in this same call
            for position, item in enumerate(intake):
                sample = self._sample(model, item)
                if isinstance(sample, str):
                    replies.append({"index": position, "status": "refused", "reason": sample})
                    continue
                image, question, answer, task, completion = sample
                key = sample_key(image, question)
                held = state.items.get(state.by_key.get(key, ""))
                earlier = seen.get(key) or ((held.id, held.answer) if held is not None else None)
                if earlier is not None and same_answer(earlier[1], answer):
                    self.duplicates[index] = self.duplicates.get(index, 0) + 1
                    replies.append({"index": position, "id": earlier[0], "status": "duplicate",
                                    "reason": "this image and question were verified with this answer already"})
                    continue
                item_id = new_item_id()
                seen[key] = (item_id, answer)
                records.append(accepted(item_id, model, image, question, answer, task,
                                        {"token": source, "completion_id": completion, "at": time.time()}))
                replies.append({"index": position, "id": item_id, "status": "accepted"})
            if records:
                state.fold(log.append(records))
                self._work.notify_all()
        return replies

    def _sample(self, model: str, item: Intake) -> tuple[Image.Image, str, str, str, str | None] | str:
        """The image, question, answer, task and completion id an item verifies; or why it cannot be taken."""
        if not normalise_answer(item.answer):
            return "the answer is empty once normalised (only punctuation or articles)"
        task = item.task or USER
        if task not in TASKS + (USER,):
            return f"unknown task {task!r}; one of {', '.join(TASKS + (USER,))}"
        if item.completion_id is None:
            assert item.image is not None and item.question is not None  # checked by the ingress
            return item.image, item.question, item.answer.strip(), task, None
        kept = self.completions.get(item.completion_id)
        if kept is None:
            return (f"no completion {item.completion_id!r} is kept here: unknown, or answered more than "
                    f"{self._options.retain_s:.0f} s ago (send the image and question instead)")
        if kept.model != model:
            return f"completion {item.completion_id!r} was answered by model {kept.model!r}, not {model!r}"
        return kept.image, kept.question, item.answer.strip(), task, item.completion_id

    # ---- the worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        # At normal priority on purpose: a thread of lower priority that holds the GIL when the scheduler takes it
        # off the CPU stalls this actor's other calls (the completions every chat reply hands over) until it runs
        # again; under load that stalled serving (docs/benchmark_diary.md, section 9).
        while True:
            with self._work:
                while not self._stopping and not self._next_batch():
                    self._work.wait(timeout=5.0)
                if self._stopping:
                    return
                index, batch = self._next_batch()
            try:
                self._process(index, batch)
            except Exception:  # noqa: BLE001 (the worker must outlive any one batch; the items stay pending)
                logger.exception("index %s: verified answers not processed; retrying in 5 s", index)
                time.sleep(5.0)

    def _next_batch(self) -> tuple[str, list[Item]] | None:
        """The oldest pending items of one index and model, at most `batch_size` (the caller holds the lock)."""
        for index, (_, state) in self._logs.items():
            pending = state.pending()
            if pending:
                model = pending[0].model
                return index, [item for item in pending if item.model == model][:self._options.batch_size]
        return None

    def _process(self, index: str, items: list[Item]) -> None:
        """Fit the items' routings (outside the lock: intake goes on meanwhile) and write each one's outcome."""
        pipeline = self._pipeline_of(items[0].model)
        verified_rows = getattr(pipeline, "verified_rows", None)
        if verified_rows is None or not hasattr(pipeline, "reference_index"):
            made: list[Any] = [f"model {items[0].model!r}'s pipeline makes no references from verified answers "
                               f"(it has no verified_rows)"] * len(items)
            snapshot = None
        else:
            samples = [Sample(id=item.id, image=image_of(item.image), question=item.question, answer=item.answer,
                              task=item.task, split=USER, source="feedback") for item in items]
            made = verified_rows(samples, FitSettings(steps=self._options.fit_steps,
                                                      margin_loss=self._options.margin_loss), index)
            snapshot = pipeline.reference_index(index)
        with self._lock:
            log, state = self._log(index)
            records = []
            for item, row in zip(items, made):
                if state.items[item.id].status != "accepted":
                    continue  # removed while it was being fitted
                records.extend(self._outcome(state, snapshot, item, row))
            if records:
                state.fold(log.append(records))
                records = self._evictions(state)
                if records:
                    state.fold(log.append(records))

    @staticmethod
    def _outcome(state: FeedbackState, snapshot: ReferenceIndex | None, item: Item, row: NewRow | Any) -> list[dict]:
        if isinstance(row, str):
            return [refused(item.id, row)]
        if not isinstance(row, NewRow) or snapshot is None:
            return [refused(item.id, row.reason)]
        probe = FeedbackRow(item.id, 0, row.embedding, row.routing, row.payload, item.question, item.answer,
                            item.task, item.source, row.how)
        why = fits(snapshot, probe)
        if why is not None:
            return [refused(item.id, f"the index cannot hold it ({why}): rebuild the index")]
        older = [other.id for other in state.items.values()
                 if other.key == item.key and other.id != item.id and other.status in ("accepted", "added")]
        return ([removed(older, "replaced", item.id)] if older else []) + [
            added(item.id, row.embedding, row.routing, row.payload, row.how)]

    def _evictions(self, state: FeedbackState) -> list[dict]:
        """Past `max_references` live rows, the oldest rows go (a `removed` record, why "evicted")."""
        over = len(state.rows) - self._options.max_references
        return [removed(list(state.rows)[:over], "evicted", "cap")] if over > 0 else []

    # ---- reading and removing ------------------------------------------------------------------------
    def items(self, index: str, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The index's verified answers (or those named), oldest first, as the API shows them."""
        with self._lock:
            if index not in self._logs and not (self._store.index_dir(index) / LOG_FILE).exists():
                return []
            state = self._log(index)[1]
            chosen = [state.items[i] for i in ids if i in state.items] if ids is not None else state.items.values()
            return [item.to_dict() for item in chosen]

    def remove(self, index: str, ids: list[str], by: str) -> list[str]:
        """Take these items' rows out (and stop any still waiting); returns the ids that were live or waiting."""
        with self._lock:
            log, state = self._log(index)
            live = [i for i in ids if i in state.items and state.items[i].status in ("accepted", "added")]
            if live:
                state.fold(log.append([removed(live, "removed", by)]))
            return live

    def state(self, index: str) -> FeedbackState | None:
        with self._lock:
            if index not in self._logs and not (self._store.index_dir(index) / LOG_FILE).exists():
                return None
            return self._log(index)[1]

    def close(self) -> None:
        with self._work:
            self._stopping = True
            self._work.notify_all()
        self._worker.join(timeout=10.0)
        with self._lock:
            for log, _ in self._logs.values():
                log.close()
            self._logs.clear()
