"""The adapter protocol: every method r2t2 calls on a model, declared in one place.

A model that implements `ServableModel` can be re-routed (the strategies need `RoutedModel`), indexed
(`encode_references`, `reference_batch`), served (`encode_query`, `engine_input`, `engine_prompts`,
`question_prompt`, `lm_path`) and evaluated (`answer`). Models built from a family config
(`r2t2.model.MultimodalMoE`) implement it; so can a user's own torch module, see docs/models.md. Nothing here
imports the index or serving layers: they import this.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image
from torch import Tensor

from r2t2.engine_prompt import EnginePrompt
from r2t2.routing.layout import RoutingLayout
from r2t2.routing.protocol import ReferenceBatch, RoutedModel


@dataclass(frozen=True)
class EncodedBatch:
    """What a model answered for a batch of reference samples: what an index stores per sample."""

    # Model-specific arrays, first dim = batch, handed back by reference_batch. A sample's row has the same shape in
    # every batch (pad to the model's maximum), so that rows of any batches join: an index build's, a verified answer's.
    payload: dict[str, np.ndarray]
    routings: np.ndarray  # [B, L, E] float32, the routing the model answered with (LM rows: its own, at the answer)
    correct: np.ndarray  # [B] bool, whether the model answered the sample correctly

    def validate(self, batch_size: int) -> None:
        """Refuse a malformed batch before it can reach disk, where it would be much harder to trace."""
        if self.routings.ndim != 3 or self.routings.shape[0] != batch_size:
            raise ValueError(f"routings must be [B={batch_size}, L, E], got {self.routings.shape}")
        if not np.isfinite(self.routings).all():
            raise ValueError("routings contain non-finite values")
        if self.correct.shape != (batch_size,) or self.correct.dtype != np.bool_:
            raise ValueError(f"correct must be bool [B={batch_size}], got {self.correct.dtype} {self.correct.shape}")
        for field, array in self.payload.items():
            if not field.isidentifier():
                raise ValueError(f"payload field name {field!r} must be a Python identifier")
            if not isinstance(array, np.ndarray) or array.ndim == 0 or array.shape[0] != batch_size:
                raise ValueError(f"payload[{field!r}] must be an array with first dim {batch_size}")
            if array.dtype == object:
                raise ValueError(f"payload[{field!r}] has dtype object; only plain numeric arrays can be stored")


@dataclass(frozen=True)
class EncodedQuery:
    """One incoming question, encoded once and used by every later step of its request.

    `question_embedding` is the model's own sentence embedding of the question when it has one, named
    by `question_embedder` (the embedder name an index records); the pipeline reuses it for neighbour
    search when the index was built with that embedder, instead of embedding the question twice.
    """

    batch: ReferenceBatch  # a batch of one; carries the label when one was given (a strategy that needs the label reads it)
    question_embedding: np.ndarray | None = None  # [D] float32, unit length
    question_embedder: str | None = None


@dataclass(frozen=True)
class RoutedQuery:
    """One request encoded together with the router's routing for it: a slot of `encode_queries`."""

    encoded: EncodedQuery
    base_routing: Tensor  # [L, E], what `base_routing(encoded.batch)` gives


@runtime_checkable
class ServableModel(RoutedModel, Protocol):
    """A frozen multimodal MoE that r2t2 can re-route, index, serve and evaluate.

    Inherited from `RoutedModel`: `routing_shape` (L, E), `base_routing(query.batch)` -> [L, E] and
    `routing_loss(batch, routing)` -> [B], differentiable in the routing only.

    LM rows (rows of kind "lm" in `routing_layout`): `base_routing` fills them with the LM router's own
    distribution at the answer position (the last prompt token) in each row's layer, and so do the
    routings of `encode_references`. `routing_loss` and `answer` then take `pinned` (one bool per row)
    and `lm_positions`: a pinned LM row replaces that layer's router distribution at the answer position
    (the last prompt token and every token after it, or with `lm_positions` "first" the last prompt token
    alone), the layer picking its top-k experts from it as its router would; an LM row that is not pinned
    leaves the layer to its router. A model without LM rows is never given either. The generation backend
    applies the same rows inside the engine (docs/models.md).

    Optional: `encode_queries(images, questions, answers) -> list[RoutedQuery | Exception]`, the requests of
    a batch encoded and routed in one pass, slot i holding what `encode_query` and `base_routing` give request
    i alone (the routing to 1e-6, the features to float rounding) or that request's own error. The pipeline
    calls it for every batch when a model has it; without it each request is encoded alone (same results,
    less throughput).
    """

    fingerprint: str  # hash of the weights: reference indexes are tied to it
    lm_path: Path  # Hugging Face directory the generation engine loads (the LM alone, or the whole image-text model)
    max_positions: int  # the language model's context length (prompt + generated tokens)
    routing_layout: RoutingLayout  # the routing's rows: name, kind (vision | lm), experts, LM layer
    engine_input: str  # r2t2.engine_prompt PROMPT_EMBEDS or TEXT_IMAGE: what `engine_prompts` gives

    def encode_query(self, image: Image.Image, question: str, answer: str | None = None) -> EncodedQuery:
        """Encode one request; `answer` (the label) only for evaluation."""
        ...

    def engine_prompts(self, query: ReferenceBatch, routing: Tensor) -> list[EnginePrompt]:
        """What the generation engine is fed per sample under `routing`: prompt embeddings [S, hidden]
        (engine_input PROMPT_EMBEDS) or a TextImagePrompt (TEXT_IMAGE). LM rows never change it: they travel
        beside the prompt to the engine."""
        ...

    def question_prompt(self, question: str) -> EnginePrompt:
        """What the engine is fed for a question asked without an image (a text-only chat turn): the prompt of
        `engine_prompts` without the visual tokens or the image placeholder. Nothing routes it: routing needs
        an image. A question longer than `max_question_tokens` raises QuestionTooLong, as in `encode_query`."""
        ...

    def answer(self, query: ReferenceBatch, routing: Tensor) -> list[str]:
        """Greedy answers under `routing` with the torch model (evaluation; the server uses vLLM); a model with
        LM rows also takes `pinned` and `lm_positions` (see above)."""
        ...

    def encode_references(self, samples: Sequence[Any]) -> EncodedBatch:
        """Answer reference samples with the base router: routings, correctness and what to cache."""
        ...

    def reference_batch(self, payload: dict[str, np.ndarray]) -> ReferenceBatch:
        """The inverse of `encode_references`' payload, for the rows an index search returned."""
        ...
