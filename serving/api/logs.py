"""Logging policy of the deployments: a client's mistake is one line, only a server fault gets a traceback.

Ray Serve logs every exception a deployment method raises as "Request failed." with its traceback. A 4xx
`ApiError` raised on purpose (a bad option, an unknown index) is not a fault of the server: the ingress
logs it as one line with the request id (`client_error_line`), and the filter here drops Ray's copy.
"""
from __future__ import annotations

import logging

from serving.api.errors import ApiError, root_cause

SERVE_LOGGER = "ray.serve"


class _DropClientErrorTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or record.exc_info[1] is None:
            return True
        error = root_cause(record.exc_info[1])
        return not (isinstance(error, ApiError) and error.status < 500)


_FILTER = _DropClientErrorTracebacks()


def quiet_client_errors() -> None:
    """Install the filter on Ray Serve's logger in this process (idempotent; every deployment calls it)."""
    logger = logging.getLogger(SERVE_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def client_error_line(request_id: str, method: str, path: str, error: ApiError) -> str:
    """One line naming the request, its status and why: what the log shows for a refused request."""
    where = f" (param {error.param})" if error.param else ""
    return f"request {request_id or '-'} {method} {path} refused: {error.status} {error.type}{where}: {error.message}"
