"""Bodies of the verified-answers API (/v1/references): what a client sends and what it is told of each item."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.api.errors import InvalidRequest
from serving.api.schemas import ImageUrl  # the chat message's form of an image, taken here too

MAX_TEXT = 1000  # characters of a question or an answer


class VerifiedAnswer(BaseModel):
    """One verified answer: the id of a completion this server answered, or a sample of its own (image and question);
    then the answer that is right."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str | None = Field(None, min_length=1, max_length=200,
                                      description="the `id` of a chat completion this server answered, within "
                                                  "`feedback.retain_s` (its r2t2 record's `verify_until`)")
    image: str | ImageUrl | None = Field(None, description="a data: URL, bare base64, or {\"url\": ...} as in a "
                                                           "chat message (http(s) where the server fetches images)")
    question: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    answer: str = Field(min_length=1, max_length=MAX_TEXT, description="the right answer: a word or a short phrase")
    task: str | None = Field(None, description="the sample's task (color, shape, presence, count, spatial, digit); "
                                               "default user")

    @model_validator(mode="after")
    def _one_form(self) -> "VerifiedAnswer":
        has_sample = self.image is not None or self.question is not None
        if (self.completion_id is None) == (not has_sample) or (has_sample and (self.image is None or
                                                                              self.question is None)):
            raise ValueError("send either completion_id, or both image and question")
        if not self.question_text and self.completion_id is None:
            raise ValueError("the question is empty")
        return self

    @property
    def question_text(self) -> str:
        return (self.question or "").strip()

    @property
    def image_url(self) -> str | None:
        return self.image.url if isinstance(self.image, ImageUrl) else self.image


class ReferencesRequest(BaseModel):
    """Body of POST /v1/references."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="the served model the answers are for")
    index: str | None = Field(None, description="the index they grow; default the model's default index")
    references: list[VerifiedAnswer] = Field(min_length=1, description="one or many verified answers")
    wait_s: float = Field(0.0, ge=0, le=60, description="wait up to this long for the items to be processed (added "
                                                        "or refused); 0: reply once they are accepted (durable)")


class ItemFate(BaseModel):
    """What became of one item: accepted (on disk; its routing is fitted next), added (a reference now), duplicate
    (of the item `id`, accepted before), refused (`reason`), or removed."""

    object: Literal["reference"] = "reference"
    index: int | None = Field(None, description="the item's position in the request")
    id: str | None = Field(None, description="the verified answer's id (null when refused before it was kept)")
    status: Literal["accepted", "added", "duplicate", "refused", "removed"]
    reason: str | None = None
    how: dict[str, Any] | None = Field(None, description="added: how its routing was found (steps, the answer's "
                                                         "loss under the router's routing and under this one)")
    question: str | None = None
    answer: str | None = None
    task: str | None = None
    source: dict[str, Any] | None = Field(None, description="who verified it (the token's name), when, and the "
                                                            "completion it verifies")


class ReferencesReply(BaseModel):
    object: Literal["list"] = "list"
    model: str
    index: str = Field(description="the index the answers grow")
    data: list[ItemFate]


class RemovedReferences(BaseModel):
    object: Literal["reference.removed"] = "reference.removed"
    model: str
    index: str
    removed: list[str] = Field(description="the ids whose references were taken out (or that stopped waiting)")


def parse_references(body: bytes, max_items: int) -> ReferencesRequest:
    """A 400 naming the first bad field (and a request of more than `max_items` items)."""
    if not body:
        raise InvalidRequest("the request body is empty; send {\"model\", \"references\": [...]}")
    try:
        request = ReferencesRequest.model_validate_json(body)
    except ValidationError as err:
        first = min(err.errors(include_url=False), key=lambda e: -len(e["loc"]))
        param = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "json_invalid":
            raise InvalidRequest(f"the request body is not valid JSON: {message}") from None
        raise InvalidRequest(f"invalid request{f' at {param}' if param else ''}: {message}", param=param) from None
    if len(request.references) > max_items:
        raise InvalidRequest(f"{len(request.references)} items in one request; at most {max_items} "
                             f"(feedback.max_items)", param="references")
    return request
