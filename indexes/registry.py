"""Hot swap: name -> the snapshot currently served, refreshed from each index's CURRENT file.

Every serving replica (possibly on several machines sharing the index directory) holds its own
registry. A rebuild moves CURRENT; each replica notices on its next refresh (periodic or on demand),
loads and verifies the new version off the request path, and swaps one dict entry. Requests that
already hold the old snapshot finish on it; the old snapshot is freed when the last one lets go.

Several models may share one index directory. A registry serves only the indexes built for its own
model: any other index is recognised from its manifest's fingerprint alone (no FAISS file is read or
verified) and skipped quietly, so serving two models never fills the log with mismatch errors.
"""
from __future__ import annotations

import logging
import threading

from indexes.errors import ReferenceIndexError, UnknownIndexError
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
                    self._foreign.pop(index_name, None)
                    continue
                served = self._served.get(index_name)
                if (served is not None and served.version == version) or self._failed.get(index_name) == version:
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
                self._served[index_name] = snapshot  # one reference assignment: atomic for readers
                swapped[index_name] = version
                log.info("index %s now serving v%d (%d references)", index_name, version, snapshot.size)
        return swapped

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
