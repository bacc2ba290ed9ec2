"""Batches of an image-text model: each sample's image, its chat prompt's token ids and its answer's.

What an index stores for such a model (plain arrays, one row per sample) and what its losses and answers
are computed from. The image is kept at the size the model reads it (`ImageTextModel` brings every image
to one square size), so a stored reference is the very input it was answered with.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def _index(index: Sequence[int] | Tensor) -> Tensor:
    return index if isinstance(index, Tensor) else torch.as_tensor(list(index), dtype=torch.long)


def _padded(rows: Sequence[Tensor], pad: int) -> Tensor:
    """[B, longest] from 2-D tensors of different widths, right-padded with `pad`."""
    width = max(row.shape[1] for row in rows)
    return torch.cat([F.pad(row, (0, width - row.shape[1]), value=pad) for row in rows])


@dataclass(frozen=True)
class ChatBatch:
    """Samples of one image-text model; `questions` only for queries (the engine's text prompt is built
    from them), never stored."""

    images: Tensor  # [B, H, W, 3] uint8, at the model's input size
    prompt_ids: Tensor  # [B, P] the chat prompt with the image's tokens expanded, right-padded
    prompt_lengths: Tensor  # [B]
    answer_ids: Tensor  # [B, A] the answer's tokens then the end of turn, right-padded
    answer_lengths: Tensor  # [B]
    questions: tuple[str, ...] | None = None
    # A reference's states at the first re-routed LM layer's input (lm_tail.py), kept by its index so that its
    # losses run only the layers from there on: [B, S, hidden] over the prompt and the answer but its last token,
    # right-padded; their rotary positions [B, 3, S]; the deepstack features the tail adds [B, D, image tokens,
    # hidden] (None when it adds none). None for queries and for references indexed before states were kept.
    states: Tensor | None = None
    positions: Tensor | None = None
    deepstack: Tensor | None = None
    # Routing-independent work (the image processor's pixels) computed once per batch; a batch belongs to one
    # request or one index build, so this never crosses requests.
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: Sequence[int] | Tensor) -> "ChatBatch":
        i = _index(index)
        questions = None if self.questions is None else tuple(self.questions[j] for j in i.tolist())
        return ChatBatch(self.images[i], self.prompt_ids[i], self.prompt_lengths[i], self.answer_ids[i],
                         self.answer_lengths[i], questions, *(None if t is None else t[i] for t in self._cached()))

    def _cached(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        return self.states, self.positions, self.deepstack

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def with_answers_of(self, other: "ChatBatch") -> "ChatBatch":
        """This batch's first sample once per sample of `other`, each labelled with that sample's answer (what
        answer-space descent scores the request against). `other`'s answers were tokenised, and cut to the model's
        answer length, when its samples were encoded, so an answer of several words relabels like one of one word."""
        first = self[[0] * len(other)]
        return ChatBatch(first.images, first.prompt_ids, first.prompt_lengths, other.answer_ids, other.answer_lengths,
                         first.questions)

    def pil_images(self) -> list[Image.Image]:
        return [Image.fromarray(image.numpy()) for image in self.images]

    @classmethod
    def join(cls, batches: Sequence["ChatBatch"], pad_id: int) -> "ChatBatch":
        """Every sample of `batches` in order (token ids re-padded to the widest)."""
        questions = [b.questions for b in batches]
        cached = [None if any(b._cached()[k] is None for b in batches) else torch.cat([b._cached()[k] for b in batches])
                  for k in range(3)]
        return cls(torch.cat([b.images for b in batches]), _padded([b.prompt_ids for b in batches], pad_id),
                   torch.cat([b.prompt_lengths for b in batches]), _padded([b.answer_ids for b in batches], pad_id),
                   torch.cat([b.answer_lengths for b in batches]),
                   None if any(q is None for q in questions) else tuple(q for qs in questions for q in qs), *cached)

    def payload(self) -> dict[str, np.ndarray]:
        """Plain arrays for an index to store (bfloat16 states as their 16-bit patterns: numpy has no bfloat16)."""
        arrays = {"images": self.images.numpy(), "prompt_ids": self.prompt_ids.numpy().astype("int32"),
                  "prompt_lengths": self.prompt_lengths.numpy().astype("int32"),
                  "answer_ids": self.answer_ids.numpy().astype("int32"),
                  "answer_lengths": self.answer_lengths.numpy().astype("int32")}
        if self.states is not None:
            arrays.update(states=_to_numpy(self.states), positions=self.positions.numpy().astype("int32"))
        if self.deepstack is not None:
            arrays["deepstack"] = _to_numpy(self.deepstack)
        return arrays

    @classmethod
    def from_payload(cls, payload: dict[str, np.ndarray]) -> "ChatBatch":
        states, deepstack = payload.get("states"), payload.get("deepstack")
        return cls(torch.as_tensor(np.asarray(payload["images"], dtype=np.uint8)),
                   *(torch.as_tensor(payload[key], dtype=torch.long)
                     for key in ("prompt_ids", "prompt_lengths", "answer_ids", "answer_lengths")), None,
                   None if states is None else _from_numpy(states),
                   None if states is None else torch.as_tensor(payload["positions"], dtype=torch.long),
                   None if deepstack is None else _from_numpy(deepstack))


def _to_numpy(tensor: Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    return tensor.view(torch.int16).numpy().view(np.uint16) if tensor.dtype == torch.bfloat16 else tensor.float().numpy()


def _from_numpy(array: np.ndarray) -> Tensor:
    """A tensor of what `_to_numpy` stored: uint16 arrays are bfloat16 patterns."""
    array = np.asarray(array)
    if array.dtype == np.uint16:
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.as_tensor(array, dtype=torch.float32)
