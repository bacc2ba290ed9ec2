"""IndexManager deployment: lists, describes, rebuilds and deletes reference indexes for the HTTP API.

Exactly one replica, because it runs the rebuild jobs (one index is rebuilt by one job at a time). Job
records are files beside the store (`<index_dir>/.jobs/`), so a restarted manager still answers for jobs
of the one before it; those that were unfinished say they were interrupted, and the temporary builds they
left are removed at start-up (a version only appears once its build finished). It never serves chat requests: a build only moves the store's CURRENT pointer, and every
re-router replica swaps to the new version on its own next refresh.

The store is shared by every served model; an index belongs to the model whose fingerprint its CURRENT
manifest records. A rebuild builds with its model's own pipeline (model and embedder), loaded on the first
rebuild for that model only, so a server that never rebuilds never pays for a second copy.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from indexes.errors import (IndexInUseError, InvalidIndexNameError, RebuildInProgressError, UnknownIndexError,
                            UnknownJobError, UnknownVersionError)
from indexes.jobs import JobRunner, ProgressCallback
from indexes.manifest import Manifest
from indexes.specs import (DatasetFileMissing, DatasetSourceForbidden, DatasetSpecError, build_from_spec,
                           validate_spec)
from indexes.store import IndexStore, validate_name
from r2t2.compat import install_torchvision_fix
from serving.config import ServerConfig
from serving.api.errors import ApiError, Conflict, Forbidden, InvalidRequest, NotFound
from serving.api.logs import quiet_client_errors
from serving.pipeline.protocol import Pipeline
from serving.model_pipelines import build_pipeline, whole_model

logger = logging.getLogger("ray.serve")
JOB_RECORDS = ".jobs"  # beside the indexes in the store's root (not an index name: those start alphanumeric)


def _api_error(err: Exception) -> ApiError | None:
    """The 4xx an index operation's documented error becomes, or None for anything else."""
    if isinstance(err, UnknownJobError):
        return NotFound(str(err), param="job_id", code="job_not_found")
    if isinstance(err, UnknownVersionError):
        return NotFound(str(err), param="version", code="version_not_found")
    if isinstance(err, UnknownIndexError):
        return NotFound(str(err), param="name", code="index_not_found")
    if isinstance(err, RebuildInProgressError):
        return Conflict(str(err), param="name", code="rebuild_in_progress")
    if isinstance(err, IndexInUseError):
        return Conflict(str(err), param="force", code="index_in_use")
    if isinstance(err, DatasetSourceForbidden):
        return Forbidden(str(err), param=err.field, code="dataset_forbidden")
    if isinstance(err, DatasetFileMissing):
        return NotFound(str(err), param=err.field, code="file_not_found")
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

    async def __init__(self, config: ServerConfig, rerouters: dict[str, DeploymentHandle]) -> None:
        install_torchvision_fix()  # before the model imports open_clip and transformers, which import torchvision
        quiet_client_errors()
        self._config = config
        self._store = IndexStore(config.index_dir)
        self._data_dir = None if config.indexes.data_dir is None else Path(config.indexes.data_dir)
        for name in self._store.names():  # builds of a manager that died with them
            for removed in self._store.clean_stale_builds(name):
                logger.warning("index %s: removed the unfinished build %s", name, removed.name)
        # One build at a time (also serialises the lazy loads below); records survive a restart.
        self._jobs = JobRunner(max_workers=1, records=self._store.root / JOB_RECORDS)
        self._owners: dict[str, str] = {}  # fingerprint -> served model id: which model an index belongs to
        for name, handle in rerouters.items():
            self._owners.setdefault((await handle.model_info.remote())["fingerprint"], name)
        self._pipelines: dict[str, Pipeline] = {}  # model id -> its pipeline, touched by the job thread only

    @_mapped
    def list_indexes(self) -> list[dict[str, Any]]:
        """Every index: name, CURRENT version, versions, the current version's size and model."""
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
    def start_rebuild(self, name: str, model: str | None, dataset: dict[str, Any], cap: int,
                      index_type: str) -> dict[str, Any]:
        """Validate now (a bad spec or model is a 4xx), build in the job thread; returns the queued job."""
        validate_name(name)
        model = self._rebuild_model(name, model)
        spec = validate_spec(dataset, self._data_dir)

        def rebuild(progress: ProgressCallback) -> Manifest:
            pipeline = self._pipeline(model)
            return build_from_spec(name, dataset, pipeline.model, pipeline.embedder, self._store, data_dir=self._data_dir,
                                   cap=cap, index_type=index_type, on_progress=progress)

        job = self._jobs.submit(name, rebuild)
        logger.info("index %s: rebuild job %s for model %s queued (%s)", name, job.id, model, spec)
        return job.to_dict()  # as queued: the 202 reply never says a job runs before it was polled

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

    @_mapped
    def activate_version(self, name: str, version: int) -> dict[str, Any]:
        """Make an existing version CURRENT again (undoing a bad rebuild); re-routers swap to it on their next
        refresh, as after a rebuild. Refused (409) for a version of a model that is not served, or of another
        served model than the one the index serves now (that model would lose its index silently)."""
        built_for = self._store.manifest(validate_name(name), version).model_fingerprint
        model = self._owners.get(built_for)
        if model is None:
            raise Conflict(f"index {name!r} v{version} was built for a model that is not served here (fingerprint "
                           f"{built_for})", param="version", code="index_model_mismatch")
        owner = self._owner(name, self._store.current_version(name))
        if owner not in (None, model):
            raise Conflict(f"index {name!r} serves model {owner!r}; v{version} was built for {model!r}",
                           param="version", code="index_model_mismatch")
        self._store.set_current(name, version)
        logger.info("index %s: v%d made current", name, version)
        return self._summary(name)

    async def check_health(self) -> None:
        """The store is a directory; a live replica is a healthy one."""

    def _owner(self, name: str, current: int | None) -> str | None:
        """The served model the current version was built for, or None."""
        return None if current is None else self._owners.get(self._store.manifest(name, current).model_fingerprint)

    def _summary(self, name: str) -> dict[str, Any]:
        current = self._store.current_version(name)
        size = None if current is None else self._store.manifest(name, current).kept
        return {"name": name, "current_version": current, "versions": self._store.versions(name), "size": size,
                "model": self._owner(name, current)}

    def _rebuild_model(self, name: str, asked: str | None) -> str:
        """The model a rebuild builds for: the one asked, else the index's owner, else the only one served.

        An index that serves one model is never rebuilt for another: that model would lose it silently.
        """
        served = self._config.model_names
        if asked is not None and asked not in served:
            raise NotFound(f"model {asked!r} is not served here; served models: {', '.join(served)}",
                           param="model", code="model_not_found")
        current = self._store.current_version(name) if name in self._store.names() else None
        owner = self._owner(name, current)
        if owner is not None and asked not in (None, owner):
            raise Conflict(f"index {name!r} belongs to model {owner!r}; rebuild it for {owner!r} or choose "
                           f"another index name for {asked!r}", param="model", code="index_model_mismatch")
        chosen = asked or owner or (served[0] if len(served) == 1 else None)
        if chosen is None:
            raise InvalidRequest(f"say which model to build index {name!r} for: set `model` to one of "
                                 f"{', '.join(served)}", param="model")
        return chosen

    def _pipeline(self, model: str) -> Pipeline:
        if model not in self._pipelines:
            entry = self._config.model(model)
            self._pipelines[model] = build_pipeline(self._config, entry, build_default_index=False,
                                                    dtype=self._config.rerouter_options(entry).dtype, **whole_model(entry))
        return self._pipelines[model]

    def __del__(self) -> None:
        # Serve calls this on replica shutdown; a running build is abandoned (its temp dir is cleaned later).
        jobs = getattr(self, "_jobs", None)
        if jobs is not None:
            jobs.shutdown(wait=False)


def _manifest_dict(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest.to_json())
