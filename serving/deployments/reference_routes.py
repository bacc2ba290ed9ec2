"""The verified-answers routes of the HTTP API (/v1/references): send answers, see what became of them, take them
out. Each needs a token: the admin token, or a feedback token (R2T2_FEEDBACK_TOKEN), whose name the answers it sends
are kept under. Images are checked here, as a chat request's are; the index manager keeps and fits the answers."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse, Response
from ray.serve.handle import DeploymentHandle

from serving.api import openapi
from serving.api.auth import feedback_source
from serving.api.errors import InvalidRequest, NotFound
from serving.api.images import load_image
from serving.api.reference_schemas import ItemFate, ReferencesReply, RemovedReferences, parse_references
from serving.config import ServerConfig
from serving.deployments.feedback import Intake
from serving.deployments.http import answered, api

WAIT_POLL_S = 0.25


def _since(text: str | None, name: str) -> float | None:
    """A time filter: Unix seconds (a number) or ISO 8601."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InvalidRequest(f"{name} must be Unix seconds or an ISO 8601 time, got {text!r}", param=name) from None


def _required(model: str | None) -> str:
    if not model:
        raise InvalidRequest("say which served model's verified answers: ?model=...", param="model")
    return model


def _matching(items: list[dict[str, Any]], ids: list[str] | None, source: str | None, since: float | None,
              until: float | None, status: str | None) -> list[dict[str, Any]]:
    return [item for item in items
            if (ids is None or item["id"] in ids) and (source is None or item["source"].get("token") == source)
            and (since is None or item["accepted_at"] >= since) and (until is None or item["accepted_at"] < until)
            and (status is None or item["status"] == status)]


def _fate(item: dict[str, Any], position: int | None = None) -> ItemFate:
    return ItemFate(index=position, id=item["id"], status=item["status"], reason=item.get("reason"),
                    how=item.get("how"), question=item.get("question"), answer=item.get("answer"),
                    task=item.get("task"), source=item.get("source"))


class ReferenceRoutes:
    """Mixed into the ingress, whose `_config`, `_indexes` (the index manager) and `_models` they use."""

    _config: ServerConfig
    _indexes: DeploymentHandle
    _models: dict[str, Any]

    @api.post("/v1/references", response_model=None,
              responses={200: {"model": ReferencesReply}, **openapi.errors(400, 401, 403, 404, 409, 413, 415)})
    @answered
    async def send_references(self, request: Request, authorization: str | None = Header(None)) -> Response:
        """Verified answers: each item is the id of a completion this server answered (within `feedback.retain_s`)
        or an image and question of its own, with the right answer. Each is accepted (on disk before this reply),
        a duplicate, or refused with the reason; an accepted one is then added as a reference, its routing fitted
        to the answer, or refused when no routing answers it. `wait_s` waits for that outcome."""
        source = feedback_source(self._config, authorization)
        body = parse_references(await request.body(), self._config.feedback.max_items)
        if body.model not in self._models:
            raise NotFound(f"model {body.model!r} is not served here; served models: {', '.join(self._models)}",
                           param="model", code="model_not_found")
        intake = []
        for i, item in enumerate(body.references):
            image = None
            if item.image_url is not None:
                image = await load_image(item.image_url, self._config.images, param=f"references.{i}.image",
                                         bare_base64=True)
            intake.append(Intake(answer=item.answer.strip(), task=item.task, completion_id=item.completion_id,
                                 image=image, question=item.question_text or None))
        reply = await self._indexes.accept_references.remote(body.model, body.index, intake, source)
        fates = {entry["index"]: entry for entry in reply["data"]}
        if body.wait_s > 0:
            fates = await self._waited(body.model, reply["index"], fates, body.wait_s)
        data = [ItemFate(**{key: value for key, value in fates[i].items() if key != "accepted_at"})
                for i in range(len(intake))]
        return JSONResponse(ReferencesReply(model=body.model, index=reply["index"], data=data).model_dump(mode="json"))

    async def _waited(self, model: str, index: str, fates: dict[int, dict[str, Any]],
                      wait_s: float) -> dict[int, dict[str, Any]]:
        """The fates once every accepted item was processed, or `wait_s` passed (those still waiting stay accepted)."""
        deadline = time.monotonic() + wait_s
        waiting = {entry["id"]: i for i, entry in fates.items() if entry["status"] == "accepted"}
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(WAIT_POLL_S)
            found = await self._indexes.references.remote(model, index, list(waiting))
            for item in found["data"]:
                if item["status"] != "accepted":
                    position = waiting.pop(item["id"])
                    fates[position] = {**_fate(item, position).model_dump(), "index": position}
        return fates

    @api.get("/v1/references", response_model=None,
             responses={200: {"model": ReferencesReply}, **openapi.errors(400, 401, 403, 404, 409)})
    @answered
    async def list_references(self, model: str | None = Query(None, description="the served model (required)"),
                              index: str | None = Query(None, description="default: the model's default index"),
                              id: str | None = Query(None, description="comma-separated ids"),  # noqa: A002
                              source: str | None = Query(None, description="the token name that sent them"),
                              status: str | None = Query(None, description="accepted, added, refused or removed"),
                              since: str | None = Query(None, description="accepted at or after (Unix s or ISO)"),
                              until: str | None = Query(None, description="accepted before (Unix s or ISO)"),
                              authorization: str | None = Header(None)) -> Response:
        """An index's verified answers, oldest first, with what became of each and where it came from."""
        feedback_source(self._config, authorization)
        model = _required(model)
        ids = [part for part in (id or "").split(",") if part] or None
        found = await self._indexes.references.remote(model, index, ids)
        chosen = _matching(found["data"], ids, source, _since(since, "since"), _since(until, "until"), status)
        reply = ReferencesReply(model=model, index=found["index"], data=[_fate(item) for item in chosen])
        return JSONResponse(reply.model_dump(mode="json"))

    @api.delete("/v1/references", response_model=None,
                responses={200: {"model": RemovedReferences}, **openapi.errors(400, 401, 403, 404, 409)})
    @answered
    async def remove_references(self, model: str | None = Query(None, description="the served model (required)"),
                                index: str | None = Query(None, description="default: the model's default index"),
                                id: str | None = Query(None, description="comma-separated ids"),  # noqa: A002
                                source: str | None = Query(None, description="the token name that sent them"),
                                since: str | None = Query(None, description="accepted at or after (Unix s or ISO)"),
                                until: str | None = Query(None, description="accepted before (Unix s or ISO)"),
                                authorization: str | None = Header(None)) -> Response:
        """Take verified answers out of an index (by id, source or time; at least one). The admin token may remove
        any; a feedback token only those it sent. Removed references leave every re-router within a refresh."""
        who = feedback_source(self._config, authorization)
        model = _required(model)
        if id is None and source is None and since is None and until is None:
            raise InvalidRequest("say which verified answers to remove: id, source, since or until", param="id")
        if who != "admin":
            if source not in (None, who):
                raise InvalidRequest(f"the feedback token {who!r} may remove only the answers it sent",
                                     param="source")
            source = who
        ids = [part for part in (id or "").split(",") if part] or None
        found = await self._indexes.references.remote(model, index, ids)
        chosen = [item["id"] for item in _matching(found["data"], ids, source, _since(since, "since"),
                                                   _since(until, "until"), None)]
        removed = await self._indexes.remove_references.remote(model, found["index"], chosen, who)
        return JSONResponse(RemovedReferences(**removed).model_dump(mode="json"))
