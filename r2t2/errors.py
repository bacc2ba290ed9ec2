"""Errors that callers (CLI, HTTP layer) map to user-facing messages."""


class R2T2Error(Exception):
    """Base class for r2t2's own errors."""


class NotFoundError(R2T2Error, KeyError):
    """A named thing (index, version, job, model) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class QuestionTooLong(R2T2Error, ValueError):
    """A question longer than the model reads: refused rather than cut, so no words are silently dropped."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"the question is {tokens} tokens long; this model reads at most {limit} "
                         f"(max_question_tokens in /v1/models): shorten it")
        self.tokens, self.limit = tokens, limit

    def __reduce__(self) -> tuple:
        return (type(self), (self.tokens, self.limit))
