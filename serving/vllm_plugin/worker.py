"""A worker extension: lets the backend collect, per request, the experts its LM rows made the engine run."""
from __future__ import annotations

from serving.vllm_plugin.slots import reports_of


class RoutingReports:
    """Mixed into vLLM's worker (`worker_extension_cls`); called through `collective_rpc`."""

    def r2t2_routing_reports(self, keys: list[str]) -> dict[str, dict[int, dict]]:
        """{key: {layer: {"experts": [...], "tokens": n}}} for these requests, forgotten once read."""
        return reports_of(keys)
