"""What the index layer needs from a model and from an embedder.

The index code never imports the model: it only needs the routing each reference sample was answered
with, whether the answer was right, and opaque per-sample arrays the model wants back at serving time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # the index layer never loads a model to run: the model package stays unimported here
    from r2t2.model.protocol import EncodedBatch


@runtime_checkable
class ReferenceEncoder(Protocol):
    """Implemented by the model: runs reference samples and reports routing and correctness."""

    fingerprint: str  # hash of the model weights; recorded in the manifest
    # Optional: `routing_layout` (r2t2.routing.layout), whose row names the manifest records so that an index
    # is never served to a model that routes other rows. `weight_bytes` (int), the bytes of weights it holds: a
    # large model is never copied into Ray tasks to build (indexes/build.py).

    def encode_references(self, samples: list[Any]) -> EncodedBatch: ...


@runtime_checkable
class Embedder(Protocol):
    """Maps samples to unit vectors whose inner product is the neighbour-search similarity."""

    name: str
    dim: int

    def embed(self, samples: list[Any]) -> np.ndarray: ...  # [B, dim] float32, L2-normalised
