"""What serving asks of a served model's request path, and what it gets back: the one contract between them.

`serving.pipeline.factory.load_pipeline` builds the shipped implementation (`ReroutePipeline`); a server config may
name another factory, whose pipeline must satisfy `Pipeline`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, NotRequired, TypedDict, runtime_checkable

from PIL import Image

from indexes.protocols import Embedder
from serving.pipeline.record import R2T2Record
from serving.pipeline.query import Pending
from r2t2.engine_prompt import EnginePrompt, LmRows

if TYPE_CHECKING:  # serving reads this contract without loading any model code (transformers)
    from r2t2.model import ServableModel


class ServeRequest(NamedTuple):
    """One request as the re-router receives it: the image, the question, its `r2t2` options (without the ones
    serving handles itself) and the reference index it names (None: the model's default). A request without an
    image (None: a text-only chat turn) is answered from the model's `question_prompt`, not re-routed."""

    image: Image.Image | None
    question: str
    options: dict[str, Any]
    index: str | None


@dataclass
class Prepared:
    """A request ready to generate: the engine's prompt, the record of what re-routing did, the LM rows the
    engine must apply, and the answer check's answer space."""

    prompt: EnginePrompt  # what the generation engine is fed (the model's `engine_prompts`)
    record: R2T2Record
    # The LM rows the engine applies beside the prompt, and where; None: every layer keeps its router
    lm_rows: LmRows | None = None
    # With the answer check on a request whose routing moved: the answers a changed answer must be among
    answer_space: frozenset[str] | None = None


BaseReady = Callable[[int, EnginePrompt], None]  # (request's position in the batch, its prompt under the base routing)


class ModelInfo(TypedDict):
    """What a client or the server needs to know about a served model (JSON-ready)."""

    model_name: str
    family: str
    fingerprint: str
    lm_path: str
    engine_input: str
    routing_shape: list[int]
    routing_rows: list[dict[str, Any]]
    default_index: str
    max_positions: int
    max_question_tokens: int | None  # None: the model reads questions of any length
    r2t2_defaults: dict[str, Any]
    embedder: str
    device: str
    # True: its queries' base routing is read from the generation engine (`use_engine_base`), the model holding
    # only what re-routing needs (e.g. the language model from its first routed layer on)
    base_from_engine: NotRequired[bool]


@runtime_checkable
class Pipeline(Protocol):
    """A served model's request path: everything the re-router, the index manager and the start-up checks call.

    Optional: `verified_rows(samples, settings) -> list[NewRow | Refused]` (serving/pipeline/verified.py), the
    reference row each verified answer adds, and `reference_index(name)`, the snapshot an index is served from; a
    pipeline without them takes no verified answers (each is refused, naming why).
    """

    model: ServableModel  # the model an index build encodes references with
    embedder: Embedder  # the embedder its indexes are searched (and built) with

    def info(self) -> ModelInfo:
        """The served model's card."""

    def begin_many(self, requests: Sequence[ServeRequest],
                   on_base: BaseReady | None = None) -> list[Prepared | Pending | Exception]:
        """Encode and search a batch; each slot holds that request's `Prepared` when it is decided without a model
        call, its `Pending` (for `finish_many`), or the error that refused it. `on_base(i, prompt)` gets request
        i's prompt under the router's own routing as soon as it is encoded."""

    def finish_many(self, pending: Sequence[Pending]) -> list[Prepared | Exception]:
        """Run the strategies of pending requests together; each slot holds that request's `Prepared` or error."""

    def follow_indexes(self, interval_s: float) -> None:
        """Serve each index's newest current version, checking every `interval_s` (hot swap)."""

    def close(self) -> None:
        """Stop following the indexes."""
