"""Which request sits in which slot of vLLM's persistent batch, and the LM rows it carries.

vLLM tells logits processors about every change to its persistent batch (requests added, removed, moved)
before each forward; this one keeps the map from slot to a request's LM routing, writes it into the engine's
slot tensors (step.py), which the MoE layers read inside the forward, and changes no logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from serving.vllm_plugin import EXTRA_KEY, POSITIONS
from serving.vllm_plugin.step import ENGINE, SlotTensors

_LIVE: list["RoutingSlots"] = []  # the engine process's instance (vLLM builds one per model runner)


@dataclass(frozen=True)
class SlotRouting:
    """One request's LM routing: its key (for the report), prompt length, {layer: distribution}, and where the
    rows apply: from the last prompt token on (`answer`) or at it alone (`first`). `capture` names the layers
    whose router's own distribution at the last prompt token the report returns (the request's base routing,
    read from the engine's prefill)."""

    key: str
    prompt_len: int
    layers: dict[int, torch.Tensor]
    positions: str
    capture: tuple[int, ...] = ()


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
    capture = extra.get("capture", [])
    if not isinstance(capture, list) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in capture):
        raise ValueError(f"{EXTRA_KEY}: capture must be a list of decoder layer numbers")
    return SlotRouting(extra["key"], length, layers, positions, tuple(capture))


class RoutingSlots(LogitsProcessor):
    """Follows the persistent batch: `slots` maps a batch slot to the LM routing of the request in it, and the
    engine's slot tensors (step.py) are written to match before every step."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refused at the engine's front door (a 400 in vLLM's own server), never inside a step."""
        extra = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if extra is not None:
            parse(extra, extra.get("prompt_len") if isinstance(extra, dict) else None)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.slots: dict[int, SlotRouting] = {}
        text = vllm_config.model_config.hf_text_config
        experts = getattr(text, "num_experts", None) or getattr(text, "num_local_experts")
        self.layers, self.top_k = text.num_hidden_layers, text.num_experts_per_tok
        ENGINE.state = SlotTensors.empty(vllm_config.scheduler_config.max_num_seqs, self.layers, experts, device)
        _LIVE[:] = [self]

    def is_argmax_invariant(self) -> bool:
        return True  # it never changes logits

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Removals, then additions, then moves, as vLLM orders them; a one-way move onto a slot ends the request
        that was there (vLLM fills a finished request's slot by moving the last one into it)."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._free(index)
        for index, params, prompt_ids, _ in batch_update.added:
            self._free(index)
            extra = None if params is None else (params.extra_args or {}).get(EXTRA_KEY)
            if extra is not None:
                self.slots[index] = parse(extra, len(prompt_ids) if prompt_ids else None)
                self._write(index, self.slots[index])
        state = ENGINE.state
        for first, second, direction in batch_update.moved:
            swap = direction == MoveDirectionality.SWAP
            if not swap:
                self._free(second)
            moving, other = self.slots.pop(first, None), self.slots.pop(second, None)
            if moving is not None:
                self.slots[second] = moving
            if other is not None:
                self.slots[first] = other
            for tensor in vars(state).values():
                tensor[[first, second]] = tensor[[second, first]] if swap else tensor[[first, first]]
            if not swap:
                state.applies[first] = state.reads[first] = False
        ENGINE.active = bool(self.slots)

    def _write(self, index: int, routing: SlotRouting) -> None:
        """Put a request's routing in its slot's tensors (layers the model does not have are left out, and the
        report then lacks them)."""
        state = ENGINE.state
        for tensor in (state.rows, state.applies, state.reads, state.read, state.tokens):
            tensor[index] = 0
        for layer, row in routing.layers.items():
            if layer < self.layers and len(row) <= state.rows.shape[-1]:
                state.rows[index, layer, :len(row)] = row.to(state.rows.device)
                state.applies[index, layer] = True
        for layer in routing.capture:
            if layer < self.layers:
                state.reads[index, layer] = True
        state.prompt_len[index] = routing.prompt_len
        state.first_only[index] = routing.positions == "first"

    def _free(self, index: int) -> None:
        """A request leaves its slot: its report is kept for the backend, and the slot routes nothing."""
        routing = self.slots.pop(index, None)
        if routing is not None:
            ENGINE.keep(routing.key, self._report(index, routing))
            ENGINE.state.applies[index] = ENGINE.state.reads[index] = False

    def _report(self, index: int, routing: SlotRouting) -> dict[int, dict]:
        return ENGINE.report(index, tuple(l for l in routing.layers if l < self.layers),
                             tuple(l for l in routing.capture if l < self.layers), self.top_k)

    def reports(self, keys: list[str]) -> dict[str, dict[int, dict]]:
        """The reports of these requests, finished or still in a slot (whose last step has run)."""
        wanted = set(keys)
        live = {r.key: self._report(i, r) for i, r in self.slots.items() if r.key in wanted}
        return ENGINE.take(keys, live)


def reports_of(keys: list[str]) -> dict[str, dict[int, dict]]:
    """The reports of these requests in this engine process ({} before the engine built its logits processors)."""
    return _LIVE[0].reports(keys) if _LIVE else {}
