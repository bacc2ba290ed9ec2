"""The language model from its first re-routed layer on, fed states cached at that layer's input.

Re-routing a model's LM rows changes nothing before the first re-routed layer: every token's hidden state at
that layer's input (and any deepstack visual features added after a later layer) is fixed by the image and
the text alone. So a reference's states there are computed once, when its index is built, and every
neighbour loss afterwards runs only the layers from there to the LM head: never the vision tower, the
embeddings or the earlier layers at request time. This module captures those states (`capture_states`) and
runs the tail over them (`LmTail`), with transformers' own decoder layers, norm, rotary embedding and head,
so a row applied through `lm_routing.routing_at` acts as in the whole forward.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn
from transformers import AutoConfig, DynamicCache, Qwen3VLMoeTextModel
from transformers.masking_utils import create_causal_mask

from r2t2.model.chat_batch import ChatBatch
from r2t2.model.hf_checkpoint import published_tensor, weight_files

_TEXT = "model.language_model."  # the language model's tensors in the published checkpoint
# Stored [experts, in, out] in the published layout, [experts, out, in] in transformers' modules.
_ARCHITECTURE = "Qwen3VLMoeForConditionalGeneration"  # whose published layout the weight files hold


@dataclass(frozen=True)
class TailStates:
    """A batch's states at the first re-routed layer's input, left-padded so every sequence ends together."""

    hidden: Tensor  # [B, S, hidden]
    positions: Tensor  # [3, B, S] multimodal rotary positions
    attention: Tensor  # [B, S] 1 on real tokens
    deepstack: tuple[Tensor, ...]  # per deepstack layer at or after the first re-routed one: [B, S, hidden], 0 off images

    def __getitem__(self, span: slice) -> "TailStates":
        """The positions `span` of every sequence; the attention mask runs from the start to the span's end (it
        covers the cache a later span continues)."""
        return TailStates(self.hidden[:, span], self.positions[:, :, span], self.attention[:, :span.stop],
                          tuple(d[:, span] for d in self.deepstack))


class LmTail:
    """Layers `first`.. of a Qwen3-VL-MoE language model, its final norm and head, as one forward."""

    def __init__(self, text: nn.Module, head: nn.Module, first: int, deepstack: int) -> None:
        """`text` is transformers' `Qwen3VLMoeTextModel` (only its layers from `first` on, norm and rotary embedding
        are run), `head` the LM head; the first `deepstack` layers are followed by the image's deepstack features."""
        self.first = first
        self.text = text
        self.layers = list(text.layers)[first:]
        self.norm, self.rotary, self.head, self.config = text.norm, text.rotary_emb, head, text.config
        self.deepstack_layers = tuple(range(first, deepstack))  # those of the tail: their features are cached

    def to(self, target: torch.device | str | torch.dtype) -> None:
        """Move what the tail runs (the layers before it may be unallocated)."""
        for module in (*self.layers, self.norm, self.rotary, self.head):
            module.to(target)

    @classmethod
    def of(cls, model: nn.Module, first: int) -> "LmTail":
        """The tail of a loaded `Qwen3VLMoeForConditionalGeneration`: its modules are shared, not copied."""
        return cls(model.model.language_model, model.lm_head, first,
                   len(model.config.vision_config.deepstack_visual_indexes))

    @classmethod
    def load(cls, directory: Path, first: int, dtype: torch.dtype) -> "LmTail":
        """The tail alone, read from a checkpoint directory: the layers before `first`, the embeddings and the
        vision tower stay unallocated (meta tensors), and only the tail's tensors are read from the weight files."""
        config = AutoConfig.from_pretrained(directory)
        text_config = config.text_config
        with torch.device("meta"):
            text = Qwen3VLMoeTextModel._from_config(text_config)
            head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=False)
        text.rotary_emb = type(text.rotary_emb)(config=text_config)  # computed from the config, not read
        kept = {"lm_head.": head, **{f"{_TEXT}norm.": text.norm},
                **{f"{_TEXT}layers.{i}.": text.layers[i] for i in range(first, text_config.num_hidden_layers)}}
        for module in kept.values():
            module.to(dtype).to_empty(device="cpu")
        loaded = _read_tensors(Path(directory), kept)
        missing = {f"{prefix}{name}" for prefix, module in kept.items() for name, _ in module.named_parameters()} - loaded
        if missing:
            raise ValueError(f"{directory}: the weight files lack {sorted(missing)[:3]}")
        head.requires_grad_(False)
        text.requires_grad_(False).eval()
        return cls(text, head, first, len(config.vision_config.deepstack_visual_indexes))

    def forward(self, states: TailStates, cache: DynamicCache | None = None,
                head: bool = True) -> tuple[Tensor | None, DynamicCache]:
        """Logits [B, T, V] at the positions of `states` (which continue `cache`'s, when given; None without
        `head`: a prefix run only for its keys and values) and the cache grown by them."""
        cache = cache if cache is not None else DynamicCache()
        hidden = states.hidden
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=states.attention,
                                  past_key_values=cache, position_ids=None, layer_idx=self.first)
        rotary = self.rotary(hidden, states.positions)
        for number, layer in enumerate(self.layers, start=self.first):
            hidden = layer(hidden, attention_mask=mask, past_key_values=cache, use_cache=True,
                           position_embeddings=rotary)
            if number in self.deepstack_layers:
                hidden = hidden + states.deepstack[self.deepstack_layers.index(number)].to(hidden.dtype)
        return (self.head(self.norm(hidden)) if head else None), cache


@contextmanager
def capture_states(model: nn.Module, first: int) -> Iterator[dict[str, object]]:
    """Inside the block, a forward of `model` (transformers' Qwen3-VL-MoE) records in the yielded dict the
    hidden states entering layer `first` ("hidden" [B, S, hidden]) and the deepstack inputs its language model
    received ("visual_pos_masks", "deepstack_visual_embeds")."""
    seen: dict[str, object] = {}
    text = model.model.language_model

    def language_model_inputs(_: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["visual_pos_masks"] = kwargs.get("visual_pos_masks")
        seen["deepstack_visual_embeds"] = kwargs.get("deepstack_visual_embeds")

    def layer_input(_: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()

    hooks = [text.register_forward_pre_hook(language_model_inputs, with_kwargs=True),
             text.layers[first].register_forward_pre_hook(layer_input, with_kwargs=True)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def deepstack_in_tail(seen: dict[str, object], tail: LmTail, shape: tuple[int, int, int]) -> tuple[Tensor, ...]:
    """The deepstack features of the captured forward that the tail adds, scattered to [B, S, hidden] (zero off
    the image's positions)."""
    masks, embeds = seen.get("visual_pos_masks"), seen.get("deepstack_visual_embeds")
    out = []
    for number in tail.deepstack_layers:
        full = torch.zeros(shape, dtype=embeds[number].dtype, device=embeds[number].device)
        full[masks] = embeds[number]
        out.append(full)
    return tuple(out)


def _read_tensors(directory: Path, kept: dict[str, nn.Module]) -> set[str]:
    """Copy every tensor of the weight files under one of `kept`'s name prefixes into that module; the names
    copied. The published layout swaps the experts' last two dimensions against transformers'; swapping them
    again (`published_tensor`) undoes it."""
    loaded = set()
    for file in weight_files(directory):
        with safe_open(str(file), "pt") as weights:
            for name in weights.keys():
                prefix = next((p for p in kept if name.startswith(p)), None)
                if prefix is None:
                    continue
                tensor = weights.get_tensor(name)
                target = kept[prefix].get_parameter(name[len(prefix):])
                with torch.no_grad():
                    target.copy_(published_tensor(_ARCHITECTURE, name, tensor))
                loaded.add(name)
    return loaded


def right_padded(batch: ChatBatch, hidden: Tensor, positions: Tensor, deepstack: list[Tensor], lengths: list[int],
                 images: Tensor, width: int) -> ChatBatch:
    """`batch` holding the states a left-padded forward captured (`hidden` [B, S, h], `positions` [3, B, S],
    `deepstack` per tail layer [B, S, h], each sequence's real `lengths`, the `images` token marks [B, S]) as an
    index stores them: right-padded to `width`, deepstack features at the image's tokens only."""
    size, length, hidden_size = hidden.shape
    states = torch.zeros(size, width, hidden_size, dtype=hidden.dtype)
    kept_positions = torch.zeros(size, 3, width, dtype=torch.long)
    tokens = int(images[0].sum())
    stacked = torch.zeros(size, len(deepstack), tokens, hidden_size, dtype=hidden.dtype)
    for b, count in enumerate(lengths):
        states[b, :count] = hidden[b, length - count:]
        kept_positions[b, :, :count] = positions[:, b, length - count:]
        for d, features in enumerate(deepstack):
            stacked[b, d] = features[b][images[b]]
    return replace(batch, states=states, positions=kept_positions, deepstack=stacked if deepstack else None)


def left_padded(batch: ChatBatch, image_token: int, hidden_size: int, dtype: torch.dtype,
                deepstack: int) -> tuple[TailStates, Tensor, Tensor]:
    """A batch's cached states with every sequence left-padded to end together, its answer marks [B, S] (the last
    prompt token and the answer's tokens) and its targets [B, S] (-100 where no answer token is predicted)."""
    counts = (batch.prompt_lengths + batch.answer_lengths - 1).tolist()
    size, length = len(batch), max(counts)
    hidden = torch.zeros(size, length, hidden_size, dtype=dtype)
    positions = torch.ones(3, size, length, dtype=torch.long)
    attention = torch.zeros(size, length, dtype=torch.long)
    features = [torch.zeros(size, length, hidden_size, dtype=dtype) for _ in range(deepstack)]
    answer = torch.zeros(size, length, dtype=torch.bool)
    targets = torch.full((size, length), -100, dtype=torch.long)
    for b, count in enumerate(counts):
        start, answered = length - count, int(batch.answer_lengths[b])
        hidden[b, start:] = batch.states[b, :count].to(dtype)
        positions[:, b, start:] = batch.positions[b, :, :count]
        attention[b, start:] = 1
        answer[b, length - answered:] = True
        targets[b, length - answered:] = batch.answer_ids[b, :answered]
        image = start + (batch.prompt_ids[b, :int(batch.prompt_lengths[b])] == image_token).nonzero()[:, 0]
        for d, added in enumerate(features):
            added[b, image] = batch.deepstack[b, d].to(dtype)
    return TailStates(hidden, positions, attention, tuple(features)), answer, targets
