"""IndexManager deployment: lists, describes, rebuilds and deletes reference indexes for the HTTP API.

Exactly one replica, because rebuild jobs live in its memory (a job id must always reach the replica
that runs it). It never serves chat requests: a build only moves the store's CURRENT pointer, and every
re-router replica swaps to the new version on its own next refresh. The model and embedder are loaded
on the first rebuild only, so a server that never rebuilds never pays for a second copy.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from ray import serve

from indexes.errors import IndexInUseError, InvalidIndexNameError, UnknownIndexError, UnknownJobError, UnknownVersionError
from indexes.jobs import JobRunner, ProgressCallback
from indexes.manifest import Manifest
from indexes.specs import DatasetSpecError, build_from_spec, validate_spec
from indexes.store import IndexStore, validate_name
from serving.config import ServerConfig
from serving.errors import ApiError, Conflict, InvalidRequest, NotFound

logger = logging.getLogger("ray.serve")


def _api_error(err: Exception) -> ApiError | None:
    """The 4xx an index operation's documented error becomes, or None for anything else."""
    if isinstance(err, UnknownJobError):
        return NotFound(str(err), param="job_id", code="job_not_found")
    if isinstance(err, UnknownVersionError):
        return NotFound(str(err), param="version", code="version_not_found")
    if isinstance(err, UnknownIndexError):
        return NotFound(str(err), param="name", code="index_not_found")
    if isinstance(err, IndexInUseError):
        return Conflict(str(err), param="force", code="index_in_use")
    if isinstance(err, DatasetSpecError):
        return InvalidRequest(str(err), param=err.field)
    if isinstance(err, InvalidIndexNameError):
        return InvalidRequest(str(err), param="name")
    return None


def _mapped(method: Any) -> Any:
    """Raise documented errors as ApiErrors so the ingress answers them with their 4xx status."""

    @functools.wraps(method)
    def call(self: "IndexManager", *args: Any) -> Any:
        try:
            return method(self, *args)
        except Exception as err:
            api_error = _api_error(err)
            if api_error is None:
                raise
            raise api_error from None

    return call


@serve.deployment(num_replicas=1)
class IndexManager:
    """Owns the index store and the rebuild jobs of this server."""

    def __init__(self, config: ServerConfig) -> None:
        import r2t2  # noqa: F401  (torchvision fix before the model imports open_clip/transformers)

        self._store = IndexStore(config.index_dir)
        self._data_dir = None if config.indexes.data_dir is None else Path(config.indexes.data_dir)
        self._jobs = JobRunner(max_workers=1)  # one build at a time; also serialises the lazy load below
        self._encoders: tuple[Any, Any] | None = None  # (model, embedder), touched by the job thread only

    @_mapped
    def list_indexes(self) -> list[dict[str, Any]]:
        """Every index: name, CURRENT version, versions and the current version's size."""
        return [self._summary(name) for name in self._store.names()]

    @_mapped
    def describe(self, name: str) -> dict[str, Any]:
        """One index: its summary, the current manifest, and every version's size, date and data set."""
        summary = self._summary(validate_name(name))
        manifests = [self._store.manifest(name, v) for v in summary["versions"]]
        current = next((m for m in manifests if m.version == summary["current_version"]), None)
        return {**summary, "manifest": None if current is None else _manifest_dict(current),
                "version_details": [{"version": m.version, "size": m.kept, "created_at": m.created_at,
                                     "dataset": m.dataset} for m in manifests]}

    @_mapped
    def start_rebuild(self, name: str, dataset: dict[str, Any], cap: int, index_type: str) -> dict[str, Any]:
        """Validate now (a bad spec is a 400), build in the job thread; returns the queued job."""
        validate_name(name)
        spec = validate_spec(dataset, self._data_dir)

        def rebuild(progress: ProgressCallback) -> Manifest:
            model, embedder = self._load_encoders()
            return build_from_spec(name, spec, model, embedder, self._store, data_dir=self._data_dir, cap=cap,
                                   index_type=index_type, on_progress=progress)

        job_id = self._jobs.submit(name, rebuild)
        logger.info("index %s: rebuild job %s queued (%s)", name, job_id, spec)
        return self._jobs.status(job_id).to_dict()

    @_mapped
    def job(self, job_id: str) -> dict[str, Any]:
        """A job's state, progress, error and produced version."""
        return self._jobs.status(job_id).to_dict()

    @_mapped
    def delete_version(self, name: str, version: int, force: bool) -> dict[str, Any]:
        """Remove one version; the CURRENT one only with force (the index then serves nothing)."""
        self._store.remove_version(validate_name(name), version, force=force)
        logger.info("index %s: v%d deleted (force=%s)", name, version, force)
        return {"name": name, "version": version, "current_version": self._store.current_version(name)}

    async def check_health(self) -> None:
        """The store is a directory; a live replica is a healthy one."""

    def _summary(self, name: str) -> dict[str, Any]:
        current = self._store.current_version(name)
        size = None if current is None else self._store.manifest(name, current).kept
        return {"name": name, "current_version": current, "versions": self._store.versions(name), "size": size}

    def _load_encoders(self) -> tuple[Any, Any]:
        if self._encoders is None:
            from indexes.embedders import MiniLMEmbedder
            from r2t2.model import load_default_model

            self._encoders = (load_default_model(), MiniLMEmbedder())
        return self._encoders

    def __del__(self) -> None:
        # Serve calls this on replica shutdown; a running build is abandoned (its temp dir is cleaned later).
        jobs = getattr(self, "_jobs", None)
        if jobs is not None:
            jobs.shutdown(wait=False)


def _manifest_dict(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest.to_json())
