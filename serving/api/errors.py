"""API errors and their mapping to the OpenAI error shape.

Every failure the client can fix becomes an `ApiError` with a 4xx status before it reaches the
HTTP layer, so a bad request is answered and never takes a replica down.
"""
from __future__ import annotations

from typing import Any

from r2t2.errors import NotFoundError, QuestionTooLong
from serving.api.schemas import ErrorDetail, ErrorResponse


class ApiError(Exception):
    """An error with the HTTP status and OpenAI error fields it should be reported with."""

    status: int = 400
    type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray re-raises errors from other replicas by pickling them; keyword-only fields need this.
        return (_rebuild, (type(self), self.message, self.param, self.code))

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients expect."""
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()


def _rebuild(cls: type[ApiError], message: str, param: str | None, code: str | None) -> ApiError:
    return cls(message, param=param, code=code)


class InvalidRequest(ApiError):
    """The request is malformed or asks for something unsupported (400)."""


class Unauthorized(ApiError):
    """A missing or wrong admin token (401)."""

    status = 401
    type = "authentication_error"


class Forbidden(ApiError):
    """The endpoint is disabled on this server (403)."""

    status = 403
    type = "permission_error"


class Conflict(ApiError):
    """The request conflicts with the server's state, e.g. deleting the serving version (409)."""

    status = 409
    type = "conflict_error"


class NotFound(ApiError):
    """An unknown model, index or other named thing (404)."""

    status = 404
    type = "not_found_error"


class PayloadTooLarge(ApiError):
    """An image over the configured size or pixel limits (413)."""

    status = 413


class UnsupportedMediaType(ApiError):
    """An image that is not one of the accepted formats (415)."""

    status = 415


class IndexOfAnotherModel(InvalidRequest):
    """A request named an index built for another model (400). The re-router knows only the owner's
    fingerprint; the ingress, which knows every served model, names it with `naming`."""

    def __init__(self, index: str, fingerprint: str, model: str) -> None:
        super().__init__(f"index {index!r} belongs to another model (fingerprint {fingerprint}), not {model!r}",
                         param="r2t2.index", code="index_model_mismatch")
        self.index, self.fingerprint, self.model = index, fingerprint, model

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.index, self.fingerprint, self.model))

    def naming(self, owners: dict[str, str]) -> InvalidRequest:
        """The same 400 naming the owner among `owners` (fingerprint -> served model id)."""
        owner = owners.get(self.fingerprint)
        whose = f"model {owner!r}" if owner else f"a model that is not served here (fingerprint {self.fingerprint})"
        return InvalidRequest(f"index {self.index!r} belongs to {whose}, not to {self.model!r}",
                              param=self.param, code=self.code)


class ServiceUnavailable(ApiError):
    """The generation engine is not healthy (503); clients should retry elsewhere."""

    status = 503
    type = "server_error"


class InternalError(ApiError):
    """Anything unexpected (500); the message hides internals."""

    status = 500
    type = "server_error"


def root_cause(error: BaseException) -> BaseException:
    """The user-level exception inside a Ray task error (Ray wraps errors raised in other replicas)."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        cause = getattr(error, "cause", None)
        if not isinstance(cause, BaseException):
            break
        error = cause
    return error


def to_api_error(error: BaseException) -> ApiError:
    """Map any exception to the ApiError it is reported as; unknown ones are internal (500)."""
    error = root_cause(error)
    if isinstance(error, ApiError):
        return error
    return InternalError(f"internal error ({type(error).__name__}); see the server log")


def from_pipeline_error(error: Exception) -> ApiError | None:
    """The ApiError for an error the re-routing pipeline documents, or None for any other error.

    The pipeline's contract: ValueError means a bad option value, NotFoundError an unknown index,
    QuestionTooLong a question over the model's limit.
    """
    if isinstance(error, NotFoundError):
        return NotFound(str(error), param="r2t2.index", code="index_not_found")
    if isinstance(error, QuestionTooLong):
        return InvalidRequest(str(error), param="messages.0.content", code="question_too_long")
    if isinstance(error, ValueError):
        return InvalidRequest(str(error), param="r2t2")
    return None
