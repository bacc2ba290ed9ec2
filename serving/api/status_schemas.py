"""Bodies of the server's own status endpoints: /healthz and /placement."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HealthStatus(BaseModel):
    """GET /healthz while every model can answer; otherwise a 503 error body naming what cannot."""

    status: Literal["ok", "degraded"] = Field(
        "ok", description="ok: every part at full strength; degraded: every model answers, some part below strength")
    models: list[str] = Field(description="the served model ids")
    degraded: list[str] = Field(default_factory=list,
                                description="each part below strength and why, e.g. 'm re-router: 1 of 2 replicas "
                                            "running' (a replica lost or restarting while another serves)")


class PlacementNode(BaseModel):
    """A Ray node of the cluster the server runs on."""

    node_id: str
    name: str = Field(description="the node's name (`ray start --node-name`), else its IP address")
    ip: str
    alive: bool = Field(description="false for a node that was lost (its replicas were started elsewhere)")
    resources: dict[str, float] = Field(description="its r2t2_* custom resources, which deployments are pinned with "
                                                    "(`resources` in a deployment's config section)")


class PlacementReplica(BaseModel):
    """One replica of a deployment and the node it runs on."""

    replica: str = Field(description="the Serve replica id (a record's `rerouted_by.replica`)")
    state: str = Field(description="Serve's replica state: STARTING, RUNNING, STOPPING, ...")
    pid: int | None
    node_id: str | None
    node: str | None = Field(description="the name of its node")
    node_ip: str | None


class PlacementReport(BaseModel):
    """GET /placement: which node every replica of this server runs on."""

    nodes: list[PlacementNode] = Field(description="every node the cluster has had, the live ones first")
    deployments: dict[str, list[PlacementReplica]] = Field(description="deployment name -> its replicas")
