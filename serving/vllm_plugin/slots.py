"""Which request sits in which slot of vLLM's persistent batch, and the LM rows it carries.

vLLM tells logits processors about every change to its persistent batch (requests added, removed, moved)
before each forward; this one keeps the map from slot to a request's LM routing and changes no logits.
The live instance of an engine process is what `step.EngineRouting` reads at the start of each forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from serving.vllm_plugin import EXTRA_KEY, POSITIONS

_LIVE: list["RoutingSlots"] = []  # the engine process's instance (vLLM builds one per model runner)


@dataclass(frozen=True)
class SlotRouting:
    """One request's LM routing: its key (for the report), prompt length, {layer: distribution}, and where the
    rows apply: from the last prompt token on (`answer`) or at it alone (`first`)."""

    key: str
    prompt_len: int
    layers: dict[int, torch.Tensor]
    positions: str


def parse(extra: Any, prompt_len: int | None) -> SlotRouting:
    """A request's `extra_args[EXTRA_KEY]` as a SlotRouting; ValueError describes what is wrong with it."""
    if not isinstance(extra, dict) or not isinstance(extra.get("key"), str) or not isinstance(extra.get("layers"), dict):
        raise ValueError(f"{EXTRA_KEY} must be {{'key': str, 'layers': {{layer: [weights]}}, 'prompt_len': int, "
                         "'positions': str}")
    length = prompt_len if prompt_len is not None else extra.get("prompt_len")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{EXTRA_KEY}: prompt_len must be a positive integer for a prompt given as embeddings")
    layers = {}
    for layer, weights in extra["layers"].items():
        row = torch.as_tensor(weights, dtype=torch.float32)
        if row.ndim != 1 or not torch.isfinite(row).all() or (row < 0).any() or abs(float(row.sum()) - 1) > 1e-3:
            raise ValueError(f"{EXTRA_KEY}: layer {layer} must be a distribution over the layer's experts")
        layers[int(layer)] = row
    positions = extra.get("positions")
    if positions not in POSITIONS:
        raise ValueError(f"{EXTRA_KEY}: positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    return SlotRouting(extra["key"], length, layers, positions)


class RoutingSlots(LogitsProcessor):
    """Follows the persistent batch; `slots` maps a batch slot to the LM routing of the request in it."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refused at the engine's front door (a 400 in vLLM's own server), never inside a step."""
        extra = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if extra is not None:
            parse(extra, extra.get("prompt_len") if isinstance(extra, dict) else None)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.slots: dict[int, SlotRouting] = {}
        _LIVE[:] = [self]

    def is_argmax_invariant(self) -> bool:
        return True  # it never changes logits

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.slots.pop(index, None)
        for index, params, prompt_ids, _ in batch_update.added:
            extra = None if params is None else (params.extra_args or {}).get(EXTRA_KEY)
            self.slots.pop(index, None)
            if extra is not None:
                self.slots[index] = parse(extra, len(prompt_ids) if prompt_ids else None)
        for first, second, direction in batch_update.moved:
            moving, other = self.slots.pop(first, None), self.slots.pop(second, None)
            if moving is not None:
                self.slots[second] = moving
            if direction == MoveDirectionality.SWAP and other is not None:
                self.slots[first] = other


def live_slots() -> dict[int, SlotRouting]:
    """The slots of this engine process (empty before the engine built its logits processors)."""
    return _LIVE[0].slots if _LIVE else {}
