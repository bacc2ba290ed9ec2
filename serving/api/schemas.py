"""OpenAI-compatible request and response bodies, plus the `r2t2` extension.

Requests forbid unknown fields: a client asking for something we do not do (penalties, logprobs,
n > 1) gets a clear 400 instead of a silently different answer.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_serializer, field_validator, model_validator

from indexes.specs import DATASET_SCHEMA
from indexes.vectors import INDEX_TYPES


MAX_CHOICES = 8  # most choices (n) one request may ask for
# Path and query parameters the index API parses itself (serving/deployments/ingress.py); the OpenAPI document declares them.
VERSION_PATTERN = r"^v?[0-9]{1,9}$"  # 3, v3 and v0003 all name version 3
FORCE_PATTERN = r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"  # true or false, in any case, or 1 or 0


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Request):
    """Question text; several text parts are joined with spaces."""

    type: Literal["text"]
    text: str


class ImageUrl(_Request):
    url: str = Field(min_length=1, description="a data: URL (data:image/png;base64,...); http(s) URLs only when "
                                               "the server sets images.allow_remote_urls")
    detail: Literal["auto", "low", "high"] | None = Field(None, description="accepted for compatibility; ignored")


class ImagePart(_Request):
    """The one image the question is about (PNG, JPEG, GIF, BMP or WebP within the server's size limits)."""

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Request):
    """One turn. The last message is the user's question; the image is the latest one the conversation sent
    (one per user message at most); earlier turns are accepted, but the model answers the last question alone."""

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class R2T2Options(_Request):
    """Per-request re-routing options (docs/api.md). A field left out takes the served model's default
    (`r2t2_defaults` in /v1/models); ranges here are coarse, the pipeline checks the rest (400 naming it)."""

    strategy: Literal["none", "kernel", "meanshift", "ngd"] | None = Field(
        None, description="none: the router's own weights; kernel: the neighbours' kernel-weighted routing "
                          "with a line search toward the router's; meanshift: pull toward the densest reference "
                          "routings; ngd: gradient descent on the neighbours' answer loss. Default: ngd")
    target: Literal["vision", "lm", "both"] | None = Field(
        None, description="the routing rows to re-route: vision (the mixture of vision experts), lm (the language "
                          "model's experts at the answer position, in the model's LM routing layers, applied inside "
                          "the engine) or both. Default: the model's (/v1/models `r2t2_defaults`); lm needs a model "
                          "with LM rows (/v1/models `routing_rows`)")
    core_experts: int | None = Field(None, ge=1, le=4096, description="let only each re-routed row's this many "
                                     "experts with the largest base weight move (C3PO's core experts); "
                                     "default: all of them")
    k: int | None = Field(None, ge=1, le=256, description="neighbours used (kNN). With neighbourhood=epsilon, "
                                                          "the ball is taken from the max(k, 64) nearest references. "
                                                          "Default 5")
    kernel: Literal["gaussian", "matern", "polynomial", "linear"] | None = Field(
        None, description="how neighbours are weighted by distance. Default gaussian")
    steps: int | None = Field(None, ge=0, le=1000, description="NGD descent steps, or most mean-shift updates. "
                                                               "Default 10")
    lr: float | None = Field(None, gt=0, description="NGD learning rate (cosine-annealed to 1e-5). Default 0.2 "
                                                     "for the shipped models")
    neighbourhood: Literal["knn", "epsilon"] | None = Field(
        None, description="knn: the k nearest; epsilon: every reference within `epsilon`. Default knn")
    epsilon: float | None = Field(None, gt=0, description="radius of the epsilon-ball (question-embedding "
                                                          "distance); required with neighbourhood=epsilon")
    guard: bool | None = Field(None, description="ngd and kernel: keep the router's own routing unless the "
                                                 "neighbours agree and the move lowers their loss; the record's "
                                                 "`guard` says whether it fired and why. Default: the server's "
                                                 "(/v1/models `r2t2_defaults`)")
    index: str | None = Field(None, min_length=1, description="reference index to search; default: the model's "
                                                              "`default_index` (see /v1/models)")
    answer_check: bool | None = Field(None, description="when re-routing changes the answer, send it only if the "
                                      "reference index holds it as an answer to questions like the neighbours' "
                                      "(else the router's own answer is sent; the record's `guard.answer` says "
                                      "which and why). Default: the model's (on for the shipped models)")
    answer_space_k: int | None = Field(None, ge=1, le=256, description="the answer check's answer space: the "
                                       "answers of this many references nearest each neighbour. Default 16")
    compare_with_none: bool = Field(False, description="also answer with strategy none and report it in the "
                                                       "record (`answer_without_rerouting`, `changed_answer`); "
                                                       "costs a second generation")
    speculative: bool = Field(True, description="start the answer under the router's own routing while "
                                                "re-routing runs, and send it when the routing does not move "
                                                "(the record's `answer_source` says which answer was sent)")


class StreamOptions(_Request):
    include_usage: bool = Field(False, description="put `usage` on the final chunk")


class ResponseFormat(_Request):
    type: Literal["text"]


def _present(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {field: schema}, "required": [field]}


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions. Unknown fields are refused (400) rather than silently ignored."""

    # The rules between fields that `_one_token_limit` enforces, stated in the OpenAPI document too.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [
        {"not": {"allOf": [_present("max_tokens", {"type": "integer"}),
                           _present("max_completion_tokens", {"type": "integer"})]}},
        {"if": _present("stream_options", {"type": "object"}), "then": _present("stream", {"const": True})},
        {"if": _present("top_logprobs", {"type": "integer"}), "then": _present("logprobs", {"const": True})},
    ]})

    model: str = Field(min_length=1, description="a served model id (GET /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1, description="the conversation; the last message is the "
                                        "user's question, about the latest image sent (see ChatMessage)")
    max_tokens: int | None = Field(None, ge=1, description="most tokens to generate; default the server's "
                                   "generation.max_tokens (16; /v1/models `defaults`). Prompt plus max_tokens must "
                                   "fit the model's `max_model_len`, else 400 context_length_exceeded")
    max_completion_tokens: int | None = Field(None, ge=1, description="the same as max_tokens (give one of them)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default generation.temperature (0)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; default generation.top_p (1)")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description=f"choices to generate (1 to {MAX_CHOICES}); they share one "
                                                        "re-routing. With a seed, choice i samples with seed + i")
    # The list first: a refused list's message is then its own ("at most 4 items"), not the string branch's.
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | str | None = Field(
        None, description="a string or up to 4 strings; generation ends before the first one (not included)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="with temperature > 0, the same seed gives the "
                                                                   "same answer on the same server")
    logprobs: bool | None = Field(None, description="return each generated token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="with logprobs: also the most likely "
                                                                    "alternatives at each position")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="lowers the logits of tokens already "
                                                                          "generated (OpenAI's definition)")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="lowers a token's logit per earlier "
                                                                           "occurrence in the generated text")
    response_format: ResponseFormat | None = Field(None, description="only {\"type\": \"text\"}: answers are "
                                                                     "free text (no JSON mode)")
    tools: Annotated[list[Any], Field(max_length=0)] | None = Field(
        None, description="empty or left out: the model does not call tools")
    tool_choice: Literal["none"] | None = Field(None, description="\"none\" or left out: the model does not call "
                                                                  "tools")
    stream: bool = Field(False, description="answer as server-sent events (chat.completion.chunk), then [DONE]")
    stream_options: StreamOptions | None = Field(None, description="only with stream=true")
    user: str | None = Field(None, description="accepted for compatibility; not used")
    r2t2: R2T2Options = Field(R2T2Options(), description="re-routing options; with the openai client pass "
                                                         "them as extra_body={\"r2t2\": {...}}")

    # Before the type checks, so that what is refused is named in words rather than by a type mismatch.
    @field_validator("response_format", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, dict) and value.get("type") == "text"):
            raise ValueError("only {\"type\": \"text\"} is supported: the model answers in free text, there is no "
                             "JSON or schema mode")
        return value

    @field_validator("tools", "tool_choice", mode="before")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value is not None and not (value == [] and isinstance(value, list) or value == "none"):
            raise ValueError("tool calling is not supported: the model answers questions about an image in text")
        return value

    @model_validator(mode="after")
    def _one_token_limit(self) -> "ChatCompletionRequest":
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


Routing = Annotated[dict[str, float] | dict[str, dict[str, float]], Field(
    description="the vision rows: weight per expert ({expert: weight}, summing to 1); a model with several vision "
                "rows gives {row: {expert: weight}} (rows and experts in /v1/models `routing_rows`); LM rows are "
                "in `lm_routing`")]


class ExpertWeight(BaseModel):
    expert: str
    weight: float


class RecordLmLayer(BaseModel):
    """One LM routing row: a decoder layer's routing at the answer position, before and after re-routing."""

    row: str = Field(description="the routing row's name (/v1/models `routing_rows`)")
    layer: int = Field(description="the language model's decoder layer")
    base: list[ExpertWeight] = Field(description="the router's own distribution at the last prompt token, its "
                                                 "heaviest experts first (at most 8)")
    routing: list[ExpertWeight] = Field(description="the re-routed distribution, heaviest first (at most 8)")
    engine_experts: list[str] | None = Field(description="the experts the engine actually ran at the answer "
                                             "position under the re-routed row (its top-k); null when the row was "
                                             "not applied")
    engine_tokens: int | None = Field(None, description="how many tokens (the last prompt token and the "
                                      "generated ones) the engine routed with that row")


class RecordLmRouting(BaseModel):
    """The language model's routing rows (models with LM routing layers only)."""

    applied: bool = Field(description="true: the answer was generated with the re-routed LM rows applied inside "
                                      "the engine; false: every layer kept its own router (target vision, or the "
                                      "LM rows did not move)")
    layers: list[RecordLmLayer]


class RecordNeighbour(BaseModel):
    """A reference sample that steered the routing."""

    id: str = Field(description="the reference sample's id in the index")
    question: str | None = Field(None, description="its question")
    answer: str | None = Field(None, description="its answer, which the model got right with its own routing")
    task: str | None = Field(None, description="its task (e.g. shape, color, count)")
    similarity: float | None = Field(None, description="cosine similarity of its question to the request's; null "
                                     "for neighbours found in routing space (meanshift), not by question")
    weight: float = Field(description="its share of the pull, 0 to 1 (kernel weight; the weights sum to 1)")
    distance: float = Field(description="Euclidean distance to the request in `neighbour_space`")


class NeighbourQuestion(BaseModel):
    """The neighbours that share one question (and task), once: copies of a question asked of several images."""

    question: str | None = Field(description="the question they share")
    task: str | None = Field(description="its task")
    count: int = Field(description="how many of the neighbours ask it")
    weight: float = Field(description="their summed share of the pull, 0 to 1")
    similarity: float | None = Field(description="its question's cosine similarity to the request's (the same for "
                                                 "every copy); null in routing space (meanshift)")
    distance: float = Field(description="the first copy's distance in `neighbour_space`")
    answers: dict[str, int] = Field(description="each answer of these neighbours with how many give it")


class LineSearchPoint(BaseModel):
    """One evaluation of the kernel strategy's line search."""

    toward_neighbours: float = Field(description="0: the router's own routing, 1: the neighbours'")
    neighbour_loss: float = Field(description="the neighbours' weighted answer loss at that mix")


class RecordIndex(BaseModel):
    name: str = Field(description="the reference index searched")
    version: int = Field(description="its version that answered (a rebuild swaps versions between requests)")


class RecordAnswerVerdict(BaseModel):
    """The answer check's verdict (request option r2t2.answer_check), on the first choice."""

    sent: Literal["rerouted", "base"] = Field(description="the answer sent: the re-routed one, or the router's own")
    reason: Literal["unchanged", "in_answer_space", "outside_answer_space", "neither_in_answer_space"] = Field(
        description="unchanged: re-routing did not change the answer; in_answer_space: the new answer is one the "
                    "reference index gives questions like the neighbours'; outside_answer_space: it is not but the "
                    "router's is, so the router's answer was sent; neither_in_answer_space: neither is (the "
                    "neighbours are of another kind), so the re-routed answer was kept")
    rerouted_answer: str = Field(description="the answer under the re-routed routing")
    base_answer: str = Field(description="the answer under the router's own routing")
    answer_space_size: int = Field(description="how many distinct answers the answer space held")


class RecordGuard(BaseModel):
    """The evidence guard's verdict (request option r2t2.guard; ngd and kernel) and the answer check's."""

    fired: bool = Field(description="true: the guard kept the router's routing instead of the strategy's")
    reason: Literal["neighbours_disagree", "base_fits_neighbours", "no_loss_gain"] | None = Field(
        description="the first check that failed: the neighbours' routings are spread out; the neighbours are "
                    "already answered well under the router's routing; the move does not lower their loss")
    neighbour_spread: float | None = Field(description="how much the neighbours' own routings disagree, 0 to 1 "
                                                       "(null: the routing guard did not run)")
    neighbour_loss_base: float | None = Field(description="the neighbours' weighted loss under the router's routing")
    neighbour_loss_moved: float | None = Field(description="the same under the strategy's routing")
    answer: RecordAnswerVerdict | None = Field(None, description="the answer check's verdict, when the routing "
                                               "moved and the check is on")


class RecordReplica(BaseModel):
    """The re-router replica that re-routed the request."""

    replica: str = Field(description="its Serve replica id (GET /placement lists every replica and its node)")
    node: str = Field(description="the name of the Ray node it runs on (its IP address when the node has no name)")


class RecordTimings(BaseModel):
    """Seconds spent in each stage of this request."""

    model_config = ConfigDict(extra="allow")
    encode: float | None = Field(None, description="image experts, router and question embedding")
    embed: float | None = Field(None, description="a separate neighbour-search embedding (0 when the model's own "
                                                  "is reused)")
    search: float | None = Field(None, description="the reference-index search (ngd and kernel only)")
    reroute: float | None = Field(None, description="the strategy itself")
    generate: float | None = Field(None, description="the language model's answer (absent on an error)")
    total: float | None = Field(None, description="the whole request as the server saw it")


class R2T2Record(BaseModel):
    """What re-routing did for this request (the `r2t2` object of a reply; docs/record.md explains each field).

    Fields of one strategy's own work (`steps_taken`, `neighbour_loss`, `distance_moved`, `toward_neighbours`,
    `line_search`, `kernel_bandwidth`) appear only in that strategy's records.
    """

    model_config = ConfigDict(extra="allow")
    strategy: str = Field(description="the strategy that ran (the request's or the model's default)")
    base_routing: Routing = Field(description="the router's own routing for this request")
    routing: Routing = Field(description="the routing the answer was generated with")
    moved: float = Field(description="share of routing weight that moved to other experts, 0 to 1 (half the L1 "
                                     "distance, largest routing row): 0 = stayed, 1 = all moved")
    fallback: str | None = Field(description="why re-routing kept the router's routing or stopped early (e.g. "
                                             "'empty neighbourhood'); null when it ran to completion")
    neighbour_space: Literal["question", "routing"] | None = Field(
        description="question: neighbours are reference questions near the request's (ngd, kernel); routing: "
                    "reference routings near the current routing (meanshift); null: none used")
    neighbours: list[RecordNeighbour] = Field(description="nearest first; empty when the strategy uses none")
    neighbour_questions: list[NeighbourQuestion] = Field(description="the neighbours grouped by question, in the "
                                                         "order of `neighbours`: copies of one question appear once "
                                                         "with their count and answers")
    explanation: str = Field(description="one sentence: why the routing moved as it did, or did not (the "
                                         "strategy, a fallback, the guard's reason, the loss or line search, the "
                                         "experts that gained and lost weight)")
    guard: RecordGuard | None = Field(None, description="the evidence guard's verdict and the answer check's; null "
                                                        "when neither ran")
    answer_source: Literal["speculative", "rerouted", "base"] | None = Field(
        None, description="which answer was sent: speculative (started under the router's routing while "
                          "re-routing ran, and sent because the routing did not move), rerouted (generated under the "
                          "re-routed routing), base (the answer check sent the router's answer instead)")
    kernel_bandwidth: float | None = Field(None, description="the kernel bandwidth used (median of the "
                                           "neighbour distances unless configured); ngd, kernel, meanshift")
    steps_taken: int | None = Field(None, description="descent steps (ngd) or updates (meanshift) actually taken")
    neighbour_loss: list[float] | None = Field(None, description="ngd: the neighbours' weighted answer loss "
                                               "before each step and after the last (steps_taken + 1 values)")
    distance_moved: list[float] | None = Field(None, description="meanshift: how far each update moved the "
                                               "routing (it stops once an update moves less than 1e-4)")
    toward_neighbours: float | None = Field(None, description="kernel: where the routing the answer used lies between "
                                            "the router's (0) and the neighbours' weighted routing (1); 0 when the "
                                            "guard kept the router's routing, so `moved` is 0 exactly when this is 0 "
                                            "or the two routings are equal")
    line_search: list[LineSearchPoint] | None = Field(None, description="kernel: every mix the line search tried")
    lm_routing: RecordLmRouting | None = Field(None, description="the LM rows before and after and what the engine "
                                               "ran; null for a model without LM routing rows")
    index: RecordIndex | None = Field(description="the reference index used; null for strategies that use none")
    changed_answer: bool | None = Field(description="whether re-routing changed the answer: false when the routing "
                                        "did not move; true/false with r2t2.compare_with_none; else null (unknown)")
    answer_without_rerouting: str | None = Field(None, description="with r2t2.compare_with_none: the answer "
                                                 "under the router's own routing, with the same sampling")
    batch_size: int | None = Field(None, description="how many requests the re-router re-routed together with "
                                                     "this one, itself included (1: alone)")
    rerouted_by: RecordReplica | None = Field(None, description="the re-router replica that re-routed this request "
                                                                "and its node")
    timings: RecordTimings = Field(description="seconds per stage")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = Field(description="the token's UTF-8 bytes")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="the most likely tokens at this position (top_logprobs)")


class ChoiceLogprobs(BaseModel):
    """OpenAI's `logprobs` of a choice (or of a chunk's tokens)."""

    content: list[TokenLogprob]


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = Field(None, description="with logprobs=true")
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _record_as_given(record: R2T2Record | None) -> dict[str, Any] | None:
    # Fields a strategy does not fill stay absent rather than null (docs/record.md).
    return None if record is None else record.model_dump(mode="json", exclude_unset=True)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    r2t2: R2T2Record

    @field_serializer("r2t2")
    def _record(self, record: R2T2Record | None) -> dict[str, Any] | None:
        return _record_as_given(record)


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event; the last content chunk carries finish_reason and the r2t2 record."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    r2t2: R2T2Record | None = None

    @field_serializer("r2t2")
    def _record(self, record: R2T2Record | None) -> dict[str, Any] | None:
        return _record_as_given(record)


class GenerationSettings(BaseModel):
    """What a chat request gets for a sampling field it leaves out (the server config's `generation`)."""

    max_tokens: int = Field(description="tokens generated at most")
    temperature: float = Field(description="0: greedy, reproducible answers")
    top_p: float


class RoutingRow(BaseModel):
    """One row of a model's routing."""

    name: str
    kind: Literal["vision", "lm"] = Field(description="vision: a mixture of vision experts for a group of soft "
                                                      "tokens; lm: an LM decoder layer's experts at the answer position")
    experts: list[str] = Field(description="the row's experts, the keys of its weights in the record")
    layer: int | None = Field(description="lm rows: the decoder layer")


class ModelCard(BaseModel):
    """OpenAI's model object plus what a client needs to read the r2t2 record of this model, and its limits."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "r2t2"
    routing_shape: list[int] = Field(description="[L, E]: L routing rows, the widest over E experts")
    routing_rows: list[RoutingRow] = Field(description="the L routing rows in order (one vision row: the record's "
                                                       "routings are flat)")
    default_index: str = Field(description="the reference index used when a request names none")
    lm_routing: bool = Field(description="whether this model's engine applies re-routed LM rows (target lm or "
                                         "both); false: such a request is refused (400)")
    max_model_len: int = Field(description="the served context length: prompt positions plus generated tokens "
                                           "(the language model's positions, or the server's smaller max_model_len)")
    max_question_tokens: int | None = Field(description="the longest question the model reads, in its tokens; a "
                                                        "longer one is refused (400). null: no limit of its own")
    defaults: GenerationSettings = Field(description="sampling used when a request leaves a field out")
    r2t2_defaults: dict[str, Any] = Field(description="the re-routing options a request starts from (strategy, k, "
                                                      "kernel, steps, lr, neighbourhood, ...)")
    fingerprint: str = Field(description="the weights' hash; indexes built for this model record it")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error body: clients read `error.message` and `error.type`."""

    error: ErrorDetail


class RebuildRequest(_Request):
    """Body of POST /v1/indexes/{name}/rebuild; `dataset` is checked by indexes.specs, whose schema it declares."""

    dataset: Annotated[dict[str, Any], WithJsonSchema(DATASET_SCHEMA)] = Field(
        description="the samples to index, one of two forms. Built-in: {\"source\": \"builtin\", \"split\": "
                    "\"reference\" (or train, test, paraphrase), \"tasks\": a list of color, shape, presence, count, "
                    "spatial, digit or null for all, \"limit\": int or null, \"seed\": 0}. JSONL: {\"source\": "
                    "\"jsonl\", \"path\": \"refs.jsonl\"}, a file under the server's indexes.data_dir (refused when that is unset); each line {\"image\", "
                    "\"question\", \"answer\"} with optional \"task\" and \"id\"",
        examples=[{"source": "builtin", "split": "reference", "limit": 2000},
                  {"source": "jsonl", "path": "refs.jsonl"}])
    model: str | None = Field(None, min_length=1, description="the served model to build for; default the "
                              "index's owner, or the only served model (with several, a new index needs it)")
    cap: int = Field(5000, ge=1, le=1_000_000, description="most correctly answered samples kept")
    index_type: str = Field("auto", description=f"FAISS index: auto (by size) or one of {list(INDEX_TYPES)}",
                            json_schema_extra={"enum": ["auto", *INDEX_TYPES]})

    @field_validator("index_type")
    @classmethod
    def _known_index_type(cls, value: str) -> str:
        if value != "auto" and value not in INDEX_TYPES:
            raise ValueError(f"must be 'auto' or one of {list(INDEX_TYPES)}")
        return value


class IndexVersion(BaseModel):
    version: int
    size: int = Field(description="references kept (correctly answered samples)")
    created_at: str = Field(description="ISO 8601, UTC")
    dataset: dict[str, Any] = Field(description="the dataset spec it was built from")


class IndexSummary(BaseModel):
    object: Literal["index"] = "index"
    name: str
    current_version: int | None = Field(description="the version requests search (CURRENT); null: nothing is "
                                                    "served (never built, or the current version was deleted)")
    versions: list[int] = Field(description="every finished version, oldest first")
    size: int | None = Field(description="references in the current version")
    model: str | None = Field(description="the served model the current version was built for; null: none of "
                                          "the served models")


class IndexList(BaseModel):
    object: Literal["list"] = "list"
    data: list[IndexSummary]
    admin_enabled: bool = Field(description="whether this server accepts the admin calls (rebuild, activate, "
                                            "delete): it was started with an admin token (R2T2_ADMIN_TOKEN); "
                                            "without one they answer 403")


class IndexDetail(IndexSummary):
    manifest: dict[str, Any] | None = Field(description="the current version's manifest (model fingerprint, "
                                                        "embedder, counts, file checksums)")
    version_details: list[IndexVersion]


class IndexJob(BaseModel):
    """A rebuild job; poll GET /v1/jobs/{id} until `state` is succeeded or failed."""

    object: Literal["index.job"] = "index.job"
    id: str
    index: str
    state: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="queued: accepted, waiting for the one build slot (a new job's reply always says queued); "
                    "running: building; succeeded: `version` is built and now current; failed: `error` says why "
                    "(`interrupted` when the server stopped while the job was queued or running)")
    progress: float = Field(ge=0, le=1, description="share of the samples encoded so far")
    created_at: float = Field(description="Unix time (seconds)")
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = Field(None, description="why a failed job failed")
    version: int | None = Field(None, description="the version the job produced (now CURRENT, served within "
                                                  "indexes.refresh_interval_s)")
    interrupted: bool = Field(False, description="the index manager stopped (restart, crash) while the job was "
                                                 "queued or running: it failed and published no version")


class DeletedVersion(BaseModel):
    object: Literal["index.version.deleted"] = "index.version.deleted"
    name: str
    version: int
    deleted: bool = True
    current_version: int | None = Field(description="the index's current version after the deletion")


class HealthStatus(BaseModel):
    """GET /healthz when every model's re-router and generator answer; otherwise a 503 error body."""

    status: Literal["ok"] = "ok"
    models: list[str] = Field(description="the served model ids")


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


class Placement(BaseModel):
    """GET /placement: which node every replica of this server runs on."""

    nodes: list[PlacementNode] = Field(description="every node the cluster has had, the live ones first")
    deployments: dict[str, list[PlacementReplica]] = Field(description="deployment name -> its replicas")
