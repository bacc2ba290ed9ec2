"""The config's reference-index sections: hot swap and rebuilds (`indexes`), verified answers (`feedback`)."""
from __future__ import annotations

from pydantic import Field

from serving.config.base import Strict
from serving.config.deployments import Resources


class IndexOptions(Strict):
    """Reference-index management over HTTP and hot swap in the re-routers."""

    refresh_interval_s: float = Field(1.0, gt=0)  # how often every re-router re-reads each index's CURRENT
    # JSONL rebuild specs may only name files under this directory; unset refuses JSONL specs over HTTP.
    data_dir: str | None = None
    num_cpus: float = Field(0.25, ge=0)  # the IndexManager's single replica (builds run in it)
    resources: Resources = Field(default_factory=dict)  # custom resources pinning it, as for the deployments


class FeedbackOptions(Strict):
    """Verified answers (POST /v1/references): how long answered completions are kept to be verified by id, how
    many references verified answers may add to an index, and how hard each one's routing is searched for."""

    retain_s: float = Field(900.0, ge=0)  # a completion can be verified by its id this long after it was answered
    retain_max: int = Field(5000, ge=0)  # and at most this many completions are kept (the oldest go first)
    max_references: int = Field(5000, ge=1)  # live references from feedback per index; beyond, the oldest is evicted
    max_items: int = Field(256, ge=1)  # items in one request
    batch_size: int = Field(16, ge=1)  # verified answers fitted together
    fit_steps: int = Field(20, ge=0, le=1000)  # Adam steps of a verified answer's vision-row fit
    margin_loss: float = Field(0.1, gt=0)  # the answer loss a fitted routing must reach
