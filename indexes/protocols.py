"""What the index layer needs from a model and from an embedder.

The index code never imports the model: it only needs the routing each reference sample was answered
with, whether the answer was right, and opaque per-sample arrays the model wants back at serving time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EncodedBatch:
    """What a model answered for a batch of reference samples."""

    payload: dict[str, np.ndarray]  # model-specific arrays, first dim = batch
    routings: np.ndarray  # [B, L, E] float32, the routing the model answered with
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


@runtime_checkable
class ReferenceEncoder(Protocol):
    """Implemented by the model: runs reference samples and reports routing and correctness."""

    fingerprint: str  # hash of the model weights; recorded in the manifest

    def encode_references(self, samples: list[Any]) -> EncodedBatch: ...


@runtime_checkable
class Embedder(Protocol):
    """Maps samples to unit vectors whose inner product is the neighbour-search similarity."""

    name: str
    dim: int

    def embed(self, samples: list[Any]) -> np.ndarray: ...  # [B, dim] float32, L2-normalised
