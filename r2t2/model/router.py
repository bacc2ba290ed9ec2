"""The router: from the question and the pooled image features to routing weights over experts."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Router(nn.Module):
    """Bag-of-words question encoder + pooled expert features -> softmax over experts ([B, 1, E])."""

    def __init__(self, vocab_size: int, num_experts: int, feature_dim: int, hidden: int, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.words = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.image = nn.Linear(num_experts * feature_dim, hidden)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(2 * hidden, hidden), nn.GELU(),
                                  nn.Linear(hidden, num_experts))

    def logits(self, question_ids: Tensor, features: Tensor) -> Tensor:
        mask = (question_ids != self.pad_id).unsqueeze(-1).float()
        words = (self.words(question_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        image = self.image(features.flatten(1))
        return self.head(torch.cat([words, image], dim=-1))

    def forward(self, question_ids: Tensor, features: Tensor) -> Tensor:
        return torch.softmax(self.logits(question_ids, features), dim=-1).unsqueeze(1)
