"""One engine step's LM routing: which tokens each layer overrides, and what the requests actually ran.

At the start of every forward the model calls `begin`: from the persistent batch's slots (slots.py) and the
step's attention metadata (each request's token range and sequence length) it finds, per layer, the tokens
at a request's answer position (sequence index >= prompt length - 1; only == for a request whose positions
are "first") and the row each must take. The layers' routing hook (`route`) then puts those rows in place
of the router's distribution for exactly those tokens, picks their top-k like the router, and notes the
experts chosen per request for the report.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from vllm.forward_context import get_forward_context, is_forward_context_available

from serving.vllm_plugin.slots import live_slots

REPORTS_KEPT = 4096  # reports of requests nobody asked about (aborted) are dropped beyond this many


@dataclass(frozen=True)
class _LayerStep:
    tokens: torch.Tensor  # [T] positions in the step's flattened tokens
    rows: torch.Tensor  # [T, E] the distribution each of those tokens takes
    keys: tuple[str, ...]  # the request of each token


class EngineRouting:
    """The per-process state of LM routing in one engine: this step's overrides and the reports."""

    def __init__(self) -> None:
        self._step: dict[int, _LayerStep] = {}
        self._reports: OrderedDict[str, dict[int, dict]] = OrderedDict()

    def begin(self) -> None:
        """Work out this step's overrides (none when no request in the batch carries LM rows)."""
        self._step = {}
        slots = live_slots()
        if not slots or not is_forward_context_available():
            return
        metadata = _attention_metadata(get_forward_context().attn_metadata)
        if metadata is None:  # a profiling or warm-up run
            return
        starts = metadata.query_start_loc.tolist()
        lengths = metadata.seq_lens.tolist()
        per_layer: dict[int, tuple[list[int], list[torch.Tensor], list[str]]] = {}
        for slot, routing in slots.items():
            if slot + 1 >= len(starts):
                continue
            start, end = starts[slot], starts[slot + 1]
            first = lengths[slot] - (end - start)  # sequence index of the slot's first token this step
            answer = start + routing.prompt_len - 1 - first  # where the last prompt token is (or would be) this step
            span = range(max(start, answer), end if routing.positions == "answer" else min(end, answer + 1))
            if not span:
                continue
            for layer, row in routing.layers.items():
                tokens, rows, keys = per_layer.setdefault(layer, ([], [], []))
                tokens.extend(span)
                rows.append(row.expand(len(span), -1))
                keys.extend([routing.key] * len(span))
        self._step = {layer: _LayerStep(torch.as_tensor(tokens), torch.cat(rows), tuple(keys))
                      for layer, (tokens, rows, keys) in per_layer.items()}

    def end(self) -> None:
        self._step = {}

    def route(self, layer: int, top_k: int, renormalize: bool, weights: torch.Tensor,
              experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's top-k (weights, experts) with this step's overrides in place; notes what they chose."""
        step = self._step.get(layer)
        if step is None:
            return weights, experts
        tokens = step.tokens.to(weights.device)
        top, chosen = step.rows.to(weights.device).topk(top_k, dim=-1)
        if renormalize:
            top = top / top.sum(-1, keepdim=True)
        weights, experts = weights.clone(), experts.clone()
        weights[tokens] = top.to(weights.dtype)
        experts[tokens] = chosen.to(experts.dtype)
        self._note(layer, step.keys, chosen)
        return weights, experts

    def _note(self, layer: int, keys: tuple[str, ...], chosen: torch.Tensor) -> None:
        for key, experts in zip(keys, chosen.tolist()):
            report = self._reports.setdefault(key, {}).setdefault(layer, {"experts": experts, "tokens": 0})
            report["tokens"] += 1
        while len(self._reports) > REPORTS_KEPT:
            self._reports.popitem(last=False)

    def take(self, keys: list[str]) -> dict[str, dict[int, dict]]:
        """The reports of these requests ({key: {layer: {"experts": [...], "tokens": n}}}), forgotten after."""
        return {key: self._reports.pop(key) for key in keys if key in self._reports}


def _attention_metadata(found: object) -> object | None:
    """One attention layer's metadata of this step (every layer shares the request layout)."""
    candidates = found.values() if isinstance(found, dict) else found if isinstance(found, list) else [found]
    for metadata in candidates:
        if isinstance(metadata, dict):
            metadata = next(iter(metadata.values()), None)
        if metadata is not None and hasattr(metadata, "query_start_loc") and hasattr(metadata, "seq_lens"):
            return metadata
    return None


ENGINE = EngineRouting()  # one per engine process: the model's hooks and the worker extension share it
