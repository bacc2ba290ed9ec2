"""IndexManager deployment: lists, describes, rebuilds and deletes reference indexes for the HTTP API.

Exactly one replica, because it runs the rebuild jobs (one index is rebuilt by one job at a time). Job
records are files beside the store (`<index_dir>/.jobs/`), so a restarted manager still answers for jobs
of the one before it; those that were unfinished say they were interrupted, and the temporary builds they
left are removed at start-up (a version only appears once its build finished). It never serves chat requests: a build only moves the store's CURRENT pointer, and every
re-router replica swaps to the new version on its own next refresh.

It also takes the verified answers (serving/deployments/feedback.py): it keeps answered completions for a while,
writes each accepted answer to its index's feedback log, fits its routing, and compacts a grown index into a new
version on request.

The store is shared by every served model; an index belongs to the model whose fingerprint its CURRENT
manifest records. A rebuild builds with its model's own pipeline (model and embedder), loaded on the first
rebuild for that model only, so a server that never rebuilds never pays for a second copy.
"""
from __future__ import annotations

import functools
import json
import logging
import threading
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from indexes.compact import compact
from indexes.errors import (IndexInUseError, InvalidIndexNameError, RebuildInProgressError, UnknownIndexError,
                            UnknownJobError, UnknownVersionError)
from indexes.growth import grown
from indexes.jobs import JobRunner, ProgressCallback
from indexes.manifest import Manifest
from indexes.specs import (DatasetFileMissing, DatasetSourceForbidden, DatasetSpecError, build_from_spec,
                           validate_spec)
from indexes.store import IndexStore, validate_name
from r2t2.compat import install_torchvision_fix
from serving.config import ServerConfig
from serving.api.errors import ApiError, Conflict, Forbidden, InvalidRequest, NotFound
from serving.api.logs import quiet_client_errors
from serving.deployments.feedback import FeedbackDesk, Intake, Kept
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
        self._default_index: dict[str, str] = {}  # served model id -> its default index
        for name, handle in rerouters.items():
            info = await handle.model_info.remote()
            self._owners.setdefault(info["fingerprint"], name)
            self._default_index[name] = info["default_index"]
        self._pipelines: dict[str, Pipeline] = {}  # model id -> its pipeline (the job and feedback threads load it)
        self._pipeline_lock = threading.Lock()
        self._feedback = FeedbackDesk(config.feedback, self._store, self._pipeline) if config.feedback_enabled else None

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
        with self._pipeline_lock:
            if model not in self._pipelines:
                entry = self._config.model(model)
                self._pipelines[model] = build_pipeline(self._config, entry, build_default_index=False,
                                                        dtype=self._config.rerouter_options(entry).dtype,
                                                        **whole_model(entry))
            return self._pipelines[model]

    # ---- verified answers ----------------------------------------------------------------------------
    def keep_completion(self, completion_id: str, model: str, image: Any, question: str, answer: str,
                        at: float) -> None:
        """Keep an answered completion for `feedback.retain_s`, so that a verified answer may name it."""
        if self._feedback is not None:
            self._feedback.completions.keep(completion_id, Kept(model, image, question, answer, at))

    @_mapped
    def accept_references(self, model: str, index: str | None, intake: list[Intake], source: str) -> dict[str, Any]:
        """Each item accepted (on disk before this returns), a duplicate, or refused; and the index they grow."""
        name = self._feedback_index(model, index)
        return {"model": model, "index": name, "data": self._desk().accept(model, name, intake, source)}

    @_mapped
    def references(self, model: str, index: str | None, ids: list[str] | None) -> dict[str, Any]:
        """The verified answers of an index (all, or those named), oldest first, and what became of each."""
        name = self._feedback_index(model, index)
        return {"model": model, "index": name, "data": self._desk().items(name, ids)}

    @_mapped
    def remove_references(self, model: str, index: str | None, ids: list[str], by: str) -> dict[str, Any]:
        """Take verified answers' rows out of an index; returns the ids that were live (or waiting)."""
        name = self._feedback_index(model, index)
        return {"model": model, "index": name, "removed": self._desk().remove(name, ids, by)}

    @_mapped
    def start_compaction(self, name: str) -> dict[str, Any]:
        """Write an index grown by verified answers out as its next version (a job, as a rebuild)."""
        current = self._store.current_version(validate_name(name))
        model = self._owner(name, current)
        if model is None:
            raise NotFound(f"index {name!r} serves no model of this server", param="name", code="index_not_found")
        desk = self._desk()

        def compaction(progress: ProgressCallback) -> Manifest:
            state = desk.state(name)
            through = 0 if state is None else state.last_seq
            version = self._pipeline(model).reference_index(name)
            return compact(self._store, version if state is None else grown(version, state), through)

        return self._jobs.submit(name, compaction).to_dict()

    def feedback_counts(self) -> dict[str, dict[str, int]]:
        """Per index with a feedback log: its verified answers by fate, the duplicates sent since this manager
        started, and the references it serves (for /metrics)."""
        if self._feedback is None:
            return {}
        counts = {}
        for name in self._store.names():
            state = self._feedback.state(name)
            current = self._store.current_version(name)
            if state is not None and current is not None:
                manifest = self._store.manifest(name, current)
                counts[name] = {**state.counts(), "duplicates": self._feedback.duplicates.get(name, 0),
                                "references": state.size(manifest.kept, manifest.feedback_through)}
        return counts

    def _desk(self) -> FeedbackDesk:
        if self._feedback is None:
            raise Forbidden("verified answers are off: start the server with R2T2_FEEDBACK_TOKEN (or "
                            "R2T2_ADMIN_TOKEN) set", code="feedback_disabled")
        return self._feedback

    def _feedback_index(self, model: str, index: str | None) -> str:
        """The index a model's verified answers grow: the one named (it must serve that model), else its default."""
        if model not in self._default_index:
            raise NotFound(f"model {model!r} is not served here; served models: {', '.join(self._default_index)}",
                           param="model", code="model_not_found")
        name = validate_name(index or self._default_index[model])
        owner = self._owner(name, self._store.current_version(name) if name in self._store.names() else None)
        if owner != model:
            raise Conflict(f"index {name!r} does not serve model {model!r}" + (f" (it serves {owner!r})" if owner else ""),
                           param="index", code="index_model_mismatch")
        return name

    def __del__(self) -> None:
        # Serve calls this on replica shutdown; a running build is abandoned (its temp dir is cleaned later), and
        # verified answers waiting to be fitted wait in their logs for the next manager.
        jobs = getattr(self, "_jobs", None)
        if jobs is not None:
            jobs.shutdown(wait=False)
        feedback = getattr(self, "_feedback", None)
        if feedback is not None:
            feedback.close()


def _manifest_dict(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest.to_json())
