"""Tensor batches the model consumes: queries (no label) and labelled reference samples."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _index(index: Sequence[int] | Tensor) -> Tensor:
    return index if isinstance(index, Tensor) else torch.as_tensor(list(index), dtype=torch.long)


@dataclass(frozen=True)
class LabelledBatch:
    """Reference samples as the index caches them: expert features, question and answer tokens.

    Holding expert *features* (not images) is what lets neighbour losses skip the vision experts.
    """

    features: Tensor  # [B, E, d] pooled expert features
    question_ids: Tensor  # [B, Q] right-padded with the pad id
    question_lengths: Tensor  # [B]
    answer_ids: Tensor  # [B, A] answer word(s) followed by end-of-sequence, right-padded
    question_embeddings: Tensor  # [B, D] frozen sentence embedding of the question
    # Routing-independent work (projected expert tokens, the question prefix's keys/values) computed
    # once per batch. A batch belongs to one request, so this never crosses requests.
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: Sequence[int] | Tensor) -> "LabelledBatch":
        i = _index(index)
        return LabelledBatch(self.features[i], self.question_ids[i], self.question_lengths[i],
                             self.answer_ids[i], self.question_embeddings[i])

    def with_answers_of(self, other: "LabelledBatch") -> "LabelledBatch":
        """This batch's first sample once per sample of `other`, each labelled with that sample's answer (what
        answer-space descent scores the request against). `other`'s answers were tokenised, and cut to the model's
        answer length, when its samples were encoded, so an answer of several words relabels like one of one word."""
        first = self[[0] * len(other)]
        return LabelledBatch(first.features, first.question_ids, first.question_lengths,
                             other.answer_ids.to(first.answer_ids.device), first.question_embeddings)

    def to(self, device: torch.device | str) -> "LabelledBatch":
        """This batch on `device` (itself when already there)."""
        if self.features.device == torch.device(device):
            return self
        return LabelledBatch(*(t.to(device) for t in (self.features, self.question_ids, self.question_lengths,
                                                      self.answer_ids, self.question_embeddings)))

    @classmethod
    def join(cls, batches: Sequence["LabelledBatch"], pad_id: int) -> "LabelledBatch":
        """Every sample of `batches` in order, token ids right-padded with `pad_id` to the widest batch."""
        def padded(tensors: list[Tensor]) -> Tensor:
            width = max(t.shape[1] for t in tensors)
            return torch.cat([F.pad(t, (0, width - t.shape[1]), value=pad_id) for t in tensors])

        return cls(torch.cat([b.features for b in batches]), padded([b.question_ids for b in batches]),
                   torch.cat([b.question_lengths for b in batches]), padded([b.answer_ids for b in batches]),
                   torch.cat([b.question_embeddings for b in batches]))

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def payload(self) -> dict:
        """Plain arrays for an index to store."""
        return {
            "features": self.features.float().cpu().numpy(),
            "question_ids": self.question_ids.cpu().numpy().astype("int32"),
            "question_lengths": self.question_lengths.cpu().numpy().astype("int32"),
            "answer_ids": self.answer_ids.cpu().numpy().astype("int32"),
            "question_embeddings": self.question_embeddings.float().cpu().numpy(),
        }

    @classmethod
    def from_payload(cls, payload: dict) -> "LabelledBatch":
        return cls(
            torch.as_tensor(payload["features"], dtype=torch.float32),
            torch.as_tensor(payload["question_ids"], dtype=torch.long),
            torch.as_tensor(payload["question_lengths"], dtype=torch.long),
            torch.as_tensor(payload["answer_ids"], dtype=torch.long),
            torch.as_tensor(payload["question_embeddings"], dtype=torch.float32),
        )
