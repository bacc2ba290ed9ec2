"""A model served through the adapter protocol alone: the worked example of docs/models.md.

`PerTokenRouting` is a user's own class, not a `MultimodalMoE` and not described by a family config: it
takes the embedded model's parts and routes each of its 4 soft visual tokens with its own mixture over
the 3 experts, a routing of shape [4, 3] instead of [1, 3]. Its base routing repeats the router's one
row, so it answers like the embedded model until R2-T2 moves the rows apart. Everything r2t2 calls on
it is a method of `r2t2.model.protocol.ServableModel`; nothing reaches into the wrapped model, so
serving it proves the pipeline, the index builder and the server need nothing more.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from r2t2.data.answers import same_answer
from r2t2.engine_prompt import PROMPT_EMBEDS
from r2t2.model import EncodedBatch, EncodedQuery, MultimodalMoE, load_model
from r2t2.model.batches import LabelledBatch
from serving.pipeline.factory import serve_model
from serving.pipeline.request_path import ReroutePipeline
from r2t2.routing.layout import vision_layout


class PerTokenRouting:
    """One routing row per soft token of a wrapped config-built model (its weights stay frozen)."""

    def __init__(self, inner: MultimodalMoE) -> None:
        tokens = inner.projectors.tokens
        inner.projectors.row_of_token = torch.arange(tokens)  # token t is mixed by routing row t
        self._inner = inner
        self._rows = tokens
        self.fingerprint: str = f"{inner.fingerprint}-per-token"  # its own indexes, never the inner model's
        self.lm_path: Path = inner.lm_path
        self.max_positions: int = inner.max_positions
        self.engine_input: str = PROMPT_EMBEDS  # its LM reads soft tokens: the engine is fed prompt embeddings
        self.routing_layout = vision_layout([f"token-{t + 1}" for t in range(tokens)], inner.config.expert_names)

    # RoutedModel: what the strategies need
    @property
    def routing_shape(self) -> tuple[int, int]:
        return self.routing_layout.shape

    def base_routing(self, query: LabelledBatch) -> Tensor:
        with torch.no_grad():
            return self._inner.route(query[[0]])[0].expand(self._rows, -1).clone()

    def routing_loss(self, batch: LabelledBatch, routing: Tensor) -> Tensor:
        return self._inner.routing_loss(batch, routing)

    # ServableModel: what the pipeline, the index builder and the server need

    def encode_query(self, image: Image.Image, question: str, answer: str | None = None) -> EncodedQuery:
        return self._inner.encode_query(image, question, answer)

    def engine_prompts(self, query: LabelledBatch, routing: Tensor) -> list[Tensor]:
        return self._inner.prompt_embeds(query, routing)

    def question_prompt(self, question: str) -> Tensor:
        return self._inner.question_prompt(question)

    def answer(self, query: LabelledBatch, routing: Tensor) -> list[str]:
        return self._inner.answer(query, routing)

    def encode_references(self, samples: Sequence[Any]) -> EncodedBatch:
        batch = self._inner.labelled_batch([s.image for s in samples], [s.question for s in samples],
                                           [s.answer for s in samples])
        with torch.no_grad():
            routing = self._inner.route(batch).expand(-1, self._rows, -1)  # [B, 1, E] -> [B, T, E]
        answers = self.answer(batch, routing)
        correct = np.asarray([same_answer(a, s.answer) for a, s in zip(answers, samples)], dtype=bool)
        return EncodedBatch(batch.payload(), routing.float().numpy(), correct)

    def reference_batch(self, payload: dict[str, np.ndarray]) -> LabelledBatch:
        return self._inner.reference_batch(payload)


def load_pipeline(config: dict[str, Any] | None = None) -> ReroutePipeline:
    """The pipeline factory a server config names as "adapter_model:load_pipeline"."""
    return serve_model(PerTokenRouting(load_model("embedded")), "per-token", config)
