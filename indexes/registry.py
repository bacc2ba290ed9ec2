"""Hot swap: name -> the snapshot currently served, refreshed from each index's CURRENT file and feedback log.

Every serving replica (possibly on several machines sharing the index directory) holds its own
registry. A rebuild moves CURRENT; each replica notices on its next refresh (periodic or on demand),
loads and verifies the new version off the request path, and swaps one dict entry. Requests that
already hold the old snapshot finish on it; the old snapshot is freed when the last one lets go.
Verified answers grow an index the same way: each refresh reads what its feedback log gained, and when the live
feedback rows changed, swaps in the version extended by them (indexes/growth.py). Searches never wait for either.

Several models may share one index directory. A registry serves only the indexes built for its own
model: any other index is recognised from its manifest's fingerprint alone (no FAISS file is read or
verified) and skipped quietly, so serving two models never fills the log with mismatch errors.
"""
from __future__ import annotations

import logging
import threading

from indexes.errors import ReferenceIndexError, UnknownIndexError
from indexes.feedback_log import LOG_FILE, LogTail
from indexes.feedback_state import FeedbackState
from indexes.growth import grown
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore, validate_name
from r2t2.errors import NotFoundError

log = logging.getLogger(__name__)


class ForeignIndexError(UnknownIndexError):
    """No such index for this model: the name exists but belongs to another model (`fingerprint`)."""

    def __init__(self, name: str, fingerprint: str) -> None:
        super().__init__(name, fingerprint)
        self.name = name
        self.fingerprint = fingerprint

    def __str__(self) -> str:
        return f"index {self.name!r} was built for another model (fingerprint {self.fingerprint})"


class IndexRegistry:
    def __init__(
        self, store: IndexStore, expected_fingerprint: str | None, expected_embedder: str | None,
        expected_rows: tuple[str, ...] | None = None,
    ) -> None:
        self.store = store
        self.expected_fingerprint = expected_fingerprint
        self.expected_embedder = expected_embedder
        self.expected_rows = expected_rows
        self._served: dict[str, ReferenceIndex] = {}
        self._failed: dict[str, int] = {}  # name -> version that failed to load (not retried until CURRENT moves)
        self._why_failed: dict[str, str] = {}  # name -> why that version failed (e.g. built with another embedder)
        self._foreign: dict[str, tuple[int, str]] = {}  # name -> (version, fingerprint) of another model's index
        self._versions: dict[str, ReferenceIndex] = {}  # name -> the version served, before its feedback rows
        self._feedback: dict[str, tuple[LogTail, FeedbackState]] = {}  # name -> its log followed, and folded
        self._grown_from: dict[str, int] = {}  # name -> the folded state's `version` the served snapshot reflects
        self._load_lock = threading.Lock()  # one loader at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def names(self) -> list[str]:
        """Indexes being served now."""
        return sorted(self._served)

    def get(self, name: str) -> ReferenceIndex:
        """The snapshot to use for one request; keep using this object for the whole request."""
        snapshot = self._served.get(name)
        if snapshot is not None:
            return snapshot
        self.refresh(validate_name(name))
        snapshot = self._served.get(name)
        if snapshot is None:
            foreign = self._foreign.get(name)
            if foreign is not None:
                raise ForeignIndexError(name, foreign[1])
            if name in self._why_failed:
                raise UnknownIndexError(f"index {name!r} cannot be served: {self._why_failed[name]}")
            known = sorted(set(self._served) | (set(self.store.names()) - set(self._foreign)))
            raise UnknownIndexError(f"no servable index named {name!r}; known indexes: {', '.join(known) or 'none'}")
        return snapshot

    def refresh(self, name: str | None = None) -> dict[str, int]:
        """Load newer CURRENT versions (all indexes, or one); returns {name: version} of those swapped in.

        Cheap when nothing changed: one small file read per index. A version that fails to load or
        verify is logged and skipped; the previous snapshot keeps serving. A version built for another
        model is skipped after reading its manifest only, and stops this registry serving that name.
        """
        swapped: dict[str, int] = {}
        with self._load_lock:
            names = [name] if name is not None else sorted(set(self.store.names()) | set(self._served))
            for index_name in names:
                try:
                    version = self.store.current_version(index_name)
                except UnknownIndexError:
                    version = None  # the index was removed
                except (ReferenceIndexError, NotFoundError) as err:
                    log.error("index %s: cannot read CURRENT, keeping what is served (%s)", index_name, err)
                    continue
                if version is None:
                    self._served.pop(index_name, None)  # removed, or nothing left to serve
                    self._versions.pop(index_name, None)
                    self._foreign.pop(index_name, None)
                    continue
                served = self._versions.get(index_name)
                if (served is not None and served.version == version) or self._failed.get(index_name) == version:
                    if served is not None and self._follow_feedback(index_name, served):
                        swapped[index_name] = version
                    continue
                if self._is_foreign(index_name, version):
                    self._served.pop(index_name, None)
                    continue
                try:
                    snapshot = ReferenceIndex.load(
                        self.store, index_name, version, self.expected_fingerprint, self.expected_embedder,
                        self.expected_rows
                    )
                except (ReferenceIndexError, NotFoundError) as err:
                    self._failed[index_name] = version
                    self._why_failed[index_name] = str(err)
                    log.error("index %s v%d not loaded, old version keeps serving: %s", index_name, version, err)
                    continue
                self._failed.pop(index_name, None)
                self._why_failed.pop(index_name, None)
                self._versions[index_name] = snapshot
                self._grown_from.pop(index_name, None)
                if not self._follow_feedback(index_name, snapshot):
                    self._served[index_name] = snapshot  # one reference assignment: atomic for readers
                swapped[index_name] = version
                log.info("index %s now serving v%d (%d references)", index_name, version, self._served[index_name].size)
        return swapped

    def _follow_feedback(self, name: str, version: ReferenceIndex) -> bool:
        """Read what the index's feedback log gained; when its live rows changed since the served snapshot was
        made, serve `version` extended by them. Returns whether a new snapshot was swapped in."""
        tail, state = self._feedback.setdefault(name, (LogTail(self.store.index_dir(name) / LOG_FILE),
                                                       FeedbackState()))
        restarts = tail.restarts
        try:
            records = tail.read_new()
            if tail.restarts != restarts:  # the log was replaced (its index removed and made anew): fold it afresh
                state = FeedbackState()
                self._feedback[name] = (tail, state)
                self._grown_from.pop(name, None)
            state.fold(records)
        except (KeyError, TypeError, ValueError) as err:  # a record of the wrong shape: the log's writer is at fault
            log.error("index %s: feedback log record not understood, growth paused: %s", name, err)
            return False
        if self._grown_from.get(name) == state.version:
            return False
        self._served[name] = grown(version, state)
        self._grown_from[name] = state.version
        if state.rows:
            log.info("index %s v%d: %d references with %d added by verified answers", name, version.version,
                     self._served[name].size, self._served[name].added)
        return True

    def feedback(self, name: str) -> FeedbackState | None:
        """The folded feedback log of a served index, as of the last refresh (None before the first)."""
        followed = self._feedback.get(name)
        return None if followed is None else followed[1]

    def _is_foreign(self, name: str, version: int) -> bool:
        """Whether `version` of `name` belongs to another model, from its manifest alone (remembered)."""
        if self.expected_fingerprint is None:
            return False
        known = self._foreign.get(name)
        if known is not None and known[0] == version:
            return True
        try:
            built_for = self.store.manifest(name, version).model_fingerprint
        except (ReferenceIndexError, NotFoundError):
            return False  # unreadable: the load below reports it once, as for any broken version
        if built_for == self.expected_fingerprint:
            self._foreign.pop(name, None)
            return False
        self._foreign[name] = (version, built_for)
        log.debug("index %s v%d belongs to model %s, not served here", name, version, built_for)
        return True

    def start_auto_refresh(self, interval_s: float) -> None:
        """Refresh in a daemon thread every interval_s seconds until close()."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if self._thread is not None:
            raise RuntimeError("auto refresh already started")
        self._thread = threading.Thread(target=self._refresh_loop, args=(interval_s,), daemon=True,
                                        name="index-refresh")
        self._thread.start()

    def _refresh_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:  # a refresh error must never kill the refresher
                log.exception("index refresh failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
