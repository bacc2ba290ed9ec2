"""Prometheus metrics of the ingress, in a registry owned by one ingress replica.

Each replica exports its own counts at /metrics; Prometheus sums replicas. Stage latencies come from
the r2t2 record's timings, so the re-router's work is measured where it happened.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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

    def render(self, feedback: dict[str, dict[str, int]] | None = None) -> bytes:
        """The text exposition format; with `feedback` (the index manager's counts per index), the verified answers
        by fate and each grown index's size too (the same on every replica: read from the feedback logs)."""
        text = generate_latest(self.registry)
        if not feedback:
            return text
        registry = CollectorRegistry()
        items = Gauge("r2t2_feedback_items", "Verified answers by fate: accepted (in all), waiting (to be fitted), "
                      "added (in all), refused, removed, duplicate (sent again, since the index manager started).",
                      ["index", "fate"], registry=registry)
        size = Gauge("r2t2_index_references", "References an index serves, verified answers included.", ["index"],
                     registry=registry)
        live = Gauge("r2t2_feedback_references", "References verified answers added that an index serves now.",
                     ["index"], registry=registry)
        for index, counts in feedback.items():
            for fate in ("accepted", "waiting", "added", "refused", "removed"):
                items.labels(index=index, fate=fate).set(counts[fate])
            items.labels(index=index, fate="duplicate").set(counts["duplicates"])
            size.labels(index=index).set(counts["references"])
            live.labels(index=index).set(counts["live"])
        return text + generate_latest(registry)
