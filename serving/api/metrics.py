"""Prometheus metrics of the ingress, in a registry owned by one ingress replica.

Each replica exports its own counts at /metrics; Prometheus sums replicas. Stage latencies come from
the r2t2 record's timings, so the re-router's work is measured where it happened.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServingMetrics:
    """Request, latency, fallback and error metrics for chat completions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "r2t2_requests", "Chat completion requests by strategy and HTTP status.",
            ["strategy", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "r2t2_request_latency_seconds", "End-to-end latency of successful requests.",
            ["strategy"], buckets=_BUCKETS, registry=self.registry,
        )
        self.stage_latency = Histogram(
            "r2t2_stage_latency_seconds", "Latency of one stage (encode, embed, search, reroute, generate).",
            ["strategy", "stage"], buckets=_BUCKETS, registry=self.registry,
        )
        self.fallbacks = Counter(
            "r2t2_reroute_fallbacks", "Requests where re-routing fell back to the base routing.",
            ["strategy"], registry=self.registry,
        )
        self.errors = Counter(
            "r2t2_errors", "Failed requests by error type.", ["type"], registry=self.registry,
        )

    def observe_success(self, strategy: str, total_s: float, timings: dict[str, float], fallback: bool) -> None:
        """Record one answered request."""
        self.requests.labels(strategy=strategy, status="200").inc()
        self.latency.labels(strategy=strategy).observe(total_s)
        for stage, seconds in timings.items():
            if stage != "total":
                self.stage_latency.labels(strategy=strategy, stage=stage).observe(seconds)
        if fallback:
            self.fallbacks.labels(strategy=strategy).inc()

    def observe_error(self, strategy: str, status: int, error_type: str) -> None:
        """Record one failed request."""
        self.requests.labels(strategy=strategy, status=str(status)).inc()
        self.errors.labels(type=error_type).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
