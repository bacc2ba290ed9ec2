"""The reference-index routes of the HTTP API: list and describe indexes; rebuild, compact, activate and delete
versions (admin only); follow a job. The index manager does the work; these check and shape requests and replies."""
from __future__ import annotations

from typing import Any

from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse, Response
from ray.serve.handle import DeploymentHandle

from serving.api import openapi
from serving.api.auth import require_admin
from serving.api.index_schemas import (DeletedVersion, IndexDetail, IndexJob, IndexList, IndexSummary, parse_force,
                                       parse_rebuild, parse_version)
from serving.config import ServerConfig
from serving.deployments.http import answered, api


class IndexRoutes:
    """Mixed into the ingress, whose `_config` and `_indexes` (the index manager) they use."""

    _config: ServerConfig
    _indexes: DeploymentHandle

    @api.get("/v1/indexes", response_model=None, responses={200: {"model": IndexList}})
    @answered
    async def list_indexes(self) -> Response:
        """Every reference index in the store: current version, versions, size and the model it serves; and
        whether this server accepts the admin calls that change them."""
        summaries = await self._indexes.list_indexes.remote()
        listed = IndexList(data=[IndexSummary(**s) for s in summaries],
                           admin_enabled=self._config.admin_token is not None)
        return JSONResponse(listed.model_dump(mode="json"))

    @api.get("/v1/indexes/{name}", response_model=None,
             responses={200: {"model": IndexDetail}, **openapi.errors(400, 404)})
    @answered
    async def describe_index(self, name: str) -> Response:
        """One index: its summary, the current version's manifest, and every version's size, date and data set."""
        return JSONResponse(IndexDetail(**await self._indexes.describe.remote(name)).model_dump(mode="json"))

    @api.post("/v1/indexes/{name}/rebuild", response_model=None, status_code=202,
              responses={202: {"model": IndexJob}, **openapi.errors(400, 401, 403, 404, 409)})
    @answered
    async def rebuild_index(self, name: str, request: Request, authorization: str | None = Header(None)) -> Response:
        """Admin only. 202 with the job to poll at `Location`; the new version is served once it succeeds.

        The body's `model` picks the served model to build for; by default the index's owner, or the only
        served model (with several, a new index needs `model`).
        """
        require_admin(self._config, authorization)
        body = parse_rebuild(await request.body())
        job = IndexJob(**await self._indexes.start_rebuild.remote(name, body.model, body.dataset, body.cap,
                                                                  body.index_type))
        return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @api.get("/v1/jobs/{job_id}", response_model=None, responses={200: {"model": IndexJob}, **openapi.errors(404)})
    @answered
    async def job(self, job_id: str) -> Response:
        """A rebuild job: poll until `state` is succeeded (its `version` is now current) or failed (`error`)."""
        return JSONResponse(IndexJob(**await self._indexes.job.remote(job_id)).model_dump(mode="json"))

    @api.delete("/v1/indexes/{name}/versions/{version}", response_model=None,
                responses={200: {"model": DeletedVersion}, **openapi.errors(400, 401, 403, 404, 409)})
    @answered
    async def delete_version(self, name: str, version: str,
                             force: str = Query("false", description="true deletes even the current version"),
                             authorization: str | None = Header(None)) -> Response:
        """Admin only. Deleting the CURRENT version needs `?force=true` (the index then serves nothing)."""
        require_admin(self._config, authorization)
        deleted = await self._indexes.delete_version.remote(name, parse_version(version), parse_force(force))
        return JSONResponse(DeletedVersion(**deleted).model_dump(mode="json"))

    @api.post("/v1/indexes/{name}/versions/{version}/activate", response_model=None,
              responses={200: {"model": IndexSummary}, **openapi.errors(400, 401, 403, 404, 409)})
    @answered
    async def activate_version(self, name: str, version: str, authorization: str | None = Header(None)) -> Response:
        """Admin only. Make an existing version current again (e.g. after a bad rebuild); re-routers swap to it
        like to a rebuilt one, within `indexes.refresh_interval_s`. 409 if it was built for a model not served."""
        require_admin(self._config, authorization)
        summary = await self._indexes.activate_version.remote(name, parse_version(version))
        return JSONResponse(IndexSummary(**summary).model_dump(mode="json"))

    @api.post("/v1/indexes/{name}/compact", response_model=None, status_code=202,
              responses={202: {"model": IndexJob}, **openapi.errors(400, 401, 403, 404, 409)})
    @answered
    async def compact_index(self, name: str, authorization: str | None = Header(None)) -> Response:
        """Admin only. Write the index as verified answers grew it out as its next version (a job, as a rebuild):
        the rows they added become the version's own, and the version before stays for a roll-back."""
        require_admin(self._config, authorization)
        job = IndexJob(**await self._indexes.start_compaction.remote(name))
        return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
