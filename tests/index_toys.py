"""Small deterministic stand-ins for the model and embedder, used by the index tests.

They implement the same protocols as the real model and MiniLM, computed from hashes of the sample
id and question so every run produces identical arrays.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from r2t2.model.protocol import EncodedBatch

ROUTING_SHAPE = (2, 4)
TOY_DIM = 8


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class ToySample:
    id: str
    question: str
    answer: str
    task: str = "color"
    split: str = "reference"
    source: str = "easy-vqa"
    image: Image.Image = field(default_factory=lambda: Image.new("RGB", (4, 4)), compare=False)


def toy_samples(n: int, prefix: str = "s") -> list[ToySample]:
    return [ToySample(f"{prefix}{i}", f"question number {i}?", f"a{i % 5}") for i in range(n)]


def is_toy_correct(sample_id: str) -> bool:
    """About two thirds of samples count as answered correctly."""
    return _seed(sample_id) % 3 != 0


class ToyEncoder:
    """Routing = softmax of hashed logits; payload = hashed features and token ids."""

    def __init__(self, fingerprint: str = "toy-model-1", fail_after_batches: int | None = None) -> None:
        self.fingerprint = fingerprint
        self.fail_after_batches = fail_after_batches
        self.batches_seen = 0

    def encode_references(self, samples: list) -> EncodedBatch:
        if self.fail_after_batches is not None and self.batches_seen >= self.fail_after_batches:
            raise RuntimeError("toy encoder crashed mid-build")
        self.batches_seen += 1
        logits = np.stack([np.random.default_rng(_seed(s.id)).standard_normal(ROUTING_SHAPE) for s in samples])
        routings = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        features = np.stack([np.full(3, _seed(s.id) % 1000, dtype=np.float32) for s in samples])
        token_ids = np.stack([np.arange(5, dtype=np.int64) + i for i, _ in enumerate(samples)])
        correct = np.array([is_toy_correct(s.id) for s in samples], dtype=bool)
        return EncodedBatch({"features": features, "token_ids": token_ids}, routings.astype(np.float32), correct)


class ToyEmbedder:
    """Unit vector seeded by the question text: equal questions give equal vectors."""

    name = "toy-hash/question"
    dim = TOY_DIM

    def embed(self, samples: list) -> np.ndarray:
        vectors = np.stack([np.random.default_rng(_seed(s.question)).standard_normal(TOY_DIM) for s in samples])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
