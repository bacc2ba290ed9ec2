"""Errors that callers (CLI, HTTP layer) map to user-facing messages."""


class R2T2Error(Exception):
    """Base class for r2t2's own errors."""


class NotFoundError(R2T2Error, KeyError):
    """A named thing (index, version, job, model) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
