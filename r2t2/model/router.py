"""The router: from the question and the pooled image features to routing weights [L, E]."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from r2t2.model.config import RouterSpec


class Router(nn.Module):
    """Configured inputs (bag of question words, pooled expert features, sentence embedding) -> one
    softmax over the E experts per routing row: [B, L, E]."""

    def __init__(self, spec: RouterSpec, vocab_size: int, num_experts: int, feature_dim: int,
                 sentence_dim: int, pad_id: int) -> None:
        super().__init__()
        hidden, self.rows, self.num_experts = spec.hidden, len(spec.rows), num_experts
        self.inputs, self.pad_id = spec.inputs, pad_id
        if "words" in spec.inputs:
            self.words = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        if "image" in spec.inputs:
            self.image = nn.Linear(num_experts * feature_dim, hidden)
        if "sentence" in spec.inputs:
            self.sentence = nn.Linear(sentence_dim, hidden)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(len(spec.inputs) * hidden, hidden), nn.GELU(),
                                  nn.Linear(hidden, self.rows * num_experts))

    def logits(self, question_ids: Tensor, features: Tensor, sentences: Tensor) -> Tensor:
        """[B, L, E] routing logits."""
        parts = []
        for name in self.inputs:
            if name == "words":
                mask = (question_ids != self.pad_id).unsqueeze(-1).float()
                parts.append((self.words(question_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0))
            elif name == "image":
                parts.append(self.image(features.flatten(1)))
            else:
                parts.append(self.sentence(sentences))
        return self.head(torch.cat(parts, dim=-1)).view(-1, self.rows, self.num_experts)

    def forward(self, question_ids: Tensor, features: Tensor, sentences: Tensor) -> Tensor:
        return torch.softmax(self.logits(question_ids, features, sentences), dim=-1)
