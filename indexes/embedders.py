"""Embedders for neighbour search: the question text (default, MiniLM from the model layer), or image
and question together."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from indexes.protocols import Embedder
from r2t2.model.protocol import ServableModel
from r2t2.model.question_encoder import MINILM_DIM, MINILM_NAME, MiniLMEmbedder, unit_rows

__all__ = ["MINILM_DIM", "MINILM_NAME", "ImageQuestionEmbedder", "MiniLMEmbedder", "make_embedder",
           "neighbour_embedder"]
IMAGE_QUESTION_PREFIX = "image:"


class ImageQuestionEmbedder:
    """Image embedding and question embedding, each unit length, concatenated and renormalised.

    Both parts then weigh equally in the cosine: similarity = (image cosine + question cosine) / 2.
    """

    def __init__(
        self,
        image_embed: Callable[[list[Any]], np.ndarray],
        image_name: str,
        image_dim: int,
        text: MiniLMEmbedder | None = None,
    ) -> None:
        if image_dim < 1 or not image_name:
            raise ValueError("image_name must be non-empty and image_dim >= 1")
        self.image_embed = image_embed
        self.text = text or MiniLMEmbedder()
        self.image_dim = image_dim
        self.name = f"{IMAGE_QUESTION_PREFIX}{image_name}+{self.text.name}"
        self.dim = image_dim + self.text.dim

    def embed(self, samples: list[Any]) -> np.ndarray:
        if not samples:
            return np.zeros((0, self.dim), dtype=np.float32)
        images = np.asarray(self.image_embed([sample.image for sample in samples]), dtype=np.float32)
        if images.shape != (len(samples), self.image_dim):
            raise ValueError(f"image embedding must be [{len(samples)}, {self.image_dim}], got {images.shape}")
        both = np.concatenate([unit_rows(images), self.text.embed(samples)], axis=1)
        return unit_rows(both)


def make_embedder(
    name: str,
    image_embed: Callable[[list[Any]], np.ndarray] | None = None,
    image_name: str | None = None,
    image_dim: int | None = None,
) -> Embedder:
    """"minilm" (or its full name) -> question embedder; "image+question" -> needs the image callable."""
    if name in ("minilm", MINILM_NAME):
        return MiniLMEmbedder()
    if name == "image+question" or name.startswith(IMAGE_QUESTION_PREFIX):
        if image_embed is None or image_name is None or image_dim is None:
            raise ValueError(f"embedder {name!r} needs image_embed, image_name and image_dim from the model")
        embedder = ImageQuestionEmbedder(image_embed, image_name, image_dim)
        if name != "image+question" and name != embedder.name:
            raise ValueError(f"embedder {name!r} does not match the model's image embedding ({embedder.name!r})")
        return embedder
    raise ValueError(f"unknown embedder {name!r}; valid: minilm, {MINILM_NAME}, image+question")


def neighbour_embedder(name: str | None, model: ServableModel) -> Embedder:
    """The embedder neighbours are searched with: MiniLM by default, or `name` as `r2t2 index build --embedder`
    takes it (image+question uses the model's own image embedding)."""
    if name is None:
        return MiniLMEmbedder()
    if name == "image+question" or name.startswith(IMAGE_QUESTION_PREFIX):
        image_dim = model.image_embedding([Image.new("RGB", (64, 64))]).shape[1]
        return make_embedder(name, image_embed=model.image_embedding, image_name=f"model-{model.fingerprint[:12]}",
                             image_dim=image_dim)
    return make_embedder(name)
