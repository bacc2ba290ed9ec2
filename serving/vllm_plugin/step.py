"""One engine's LM routing, held in persistent per-slot tensors that a captured CUDA graph replays.

Per slot of vLLM's persistent batch the tensors hold the request's row in each MoE layer it overrides, where the
rows apply (from the last prompt token on, or at it alone), its prompt length, and the layers whose router it
asks to read (its base routing). `slots.RoutingSlots` writes them between steps, in plain Python outside any
graph. Inside the forward each MoE layer's routing hook (`route`) finds, from them and from the step's attention
metadata (each request's token range and sequence length: persistent buffers of vLLM's runner too), which of the
step's tokens sit at a request's answer position; it puts the top-k of the request's row in place of the
router's for exactly those tokens, counts them, and copies the router's own distribution at a reading request's
last prompt token. These are tensor operations of fixed shapes that read no Python state of the step, so an
eager, a compiled and a graph-captured forward route alike.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from vllm.forward_context import get_forward_context, is_forward_context_available

REPORTS_KEPT = 4096  # reports of requests nobody asked about (aborted) are dropped beyond this many


@dataclass
class SlotTensors:
    """The routing state of every slot; the last row is a sink for tokens of no slot (padding)."""

    rows: torch.Tensor  # [slots + 1, layers, experts] each slot's row per layer
    applies: torch.Tensor  # [slots + 1, layers] bool: the slot's row overrides this layer
    prompt_len: torch.Tensor  # [slots + 1]
    first_only: torch.Tensor  # [slots + 1] bool: rows apply at the last prompt token alone
    reads: torch.Tensor  # [slots + 1, layers] bool: copy this layer's router distribution at the last prompt token
    read: torch.Tensor  # [slots + 1, layers, experts] what was copied
    tokens: torch.Tensor  # [slots + 1, layers] tokens this slot's rows have routed so far

    @classmethod
    def empty(cls, slots: int, layers: int, experts: int, device: torch.device) -> "SlotTensors":
        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(slots + 1, *shape, dtype=dtype, device=device)

        return cls(zeros(layers, experts), zeros(layers, dtype=torch.bool), zeros(dtype=torch.long),
                   zeros(dtype=torch.bool), zeros(layers, dtype=torch.bool), zeros(layers, experts),
                   zeros(layers, dtype=torch.long))

    @property
    def sink(self) -> int:
        return self.rows.shape[0] - 1


class EngineRouting:
    """The per-process state of LM routing in one engine: the slots' tensors and the finished requests' reports."""

    def __init__(self) -> None:
        self.state: SlotTensors | None = None  # allocated by the engine's RoutingSlots
        self.active = False  # some slot has rows or reads: an eager step with none skips the work
        self._reports: OrderedDict[str, dict[int, dict]] = OrderedDict()

    def route(self, layer: int, top_k: int, renormalize: bool, weights: torch.Tensor, experts: torch.Tensor,
              logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's top-k (weights, experts) with the slots' rows in place at their answer tokens; counts those
        tokens and copies the router's distribution (from its `logits`) where a slot reads it."""
        state = self.state
        if state is None or not is_forward_context_available() or not (self.active or _capturing()):
            return weights, experts
        located = _token_slots(logits.shape[0], state.sink, logits.device)
        if located is None:  # a profiling or warm-up run
            return weights, experts
        slot, position = located
        last = position == state.prompt_len[slot] - 1
        answer = torch.where(state.first_only[slot], last, position >= state.prompt_len[slot] - 1)
        on = answer & state.applies[slot, layer]
        top, chosen = state.rows[slot, layer].topk(top_k, dim=-1)
        if renormalize:
            top = top / top.sum(-1, keepdim=True).clamp_min(1e-12)
        weights = torch.where(on[:, None], top.to(weights.dtype), weights)
        experts = torch.where(on[:, None], chosen.to(experts.dtype), experts)
        state.tokens[:, layer].index_add_(0, slot, on.long())
        reading = torch.where(last & state.reads[slot, layer], slot, state.sink)
        state.read[reading, layer] = torch.softmax(logits.float(), dim=-1)
        return weights, experts

    def report(self, slot: int, layers: tuple[int, ...], reads: tuple[int, ...], top_k: int) -> dict[int, dict]:
        """What a slot's request ran: per overridden layer the row's top-k experts and the tokens it routed, per
        read layer the router's distribution at its last prompt token."""
        state = self.state
        found: dict[int, dict] = {}
        for layer in layers:
            tokens = int(state.tokens[slot, layer])
            if tokens:
                found[layer] = {"experts": state.rows[slot, layer].topk(top_k).indices.tolist(), "tokens": tokens}
        for layer in reads:
            found.setdefault(layer, {})["router"] = state.read[slot, layer].tolist()
        return found

    def keep(self, key: str, report: dict[int, dict]) -> None:
        """Keep a finished request's report until the backend takes it."""
        self._reports[key] = report
        while len(self._reports) > REPORTS_KEPT:
            self._reports.popitem(last=False)

    def take(self, keys: list[str], live: dict[str, dict[int, dict]]) -> dict[str, dict[int, dict]]:
        """The reports of these requests ({key: {layer: {"experts": [...], "tokens": n}}}, or for a read layer
        {"router": distribution}), forgotten after; `live` holds those of requests still in a slot."""
        found = {key: self._reports.pop(key) for key in keys if key in self._reports}
        return {**{key: live[key] for key in keys if key in live}, **found}


def _capturing() -> bool:
    """Whether a CUDA graph is being captured: then the work is recorded whatever the slots hold now."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _token_slots(count: int, sink: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per token of the step: its request's slot (`sink` for padding) and its position in that sequence."""
    metadata = _attention_metadata(get_forward_context().attn_metadata)
    if metadata is None:
        return None
    starts = metadata.query_start_loc.to(device)  # [requests + 1]
    lengths = metadata.seq_lens.to(device)  # [requests]
    token = torch.arange(count, device=device)
    request = torch.searchsorted(starts[1:].contiguous(), token, right=True)
    inside = request < lengths.shape[0]
    request = request.clamp(max=lengths.shape[0] - 1)
    position = lengths[request] - (starts[request + 1] - token)
    return torch.where(inside, request, sink), position


def _attention_metadata(found: object) -> object | None:
    """One attention layer's metadata of this step (every layer shares the request layout)."""
    candidates = found.values() if isinstance(found, dict) else found if isinstance(found, list) else [found]
    for metadata in candidates:
        if isinstance(metadata, dict):
            metadata = next(iter(metadata.values()), None)
        if metadata is not None and hasattr(metadata, "query_start_loc") and hasattr(metadata, "seq_lens"):
            return metadata
    return None


ENGINE = EngineRouting()  # one per engine process: the model's hooks, the slots and the worker extension share it
