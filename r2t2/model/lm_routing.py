"""Reading and replacing the language model's expert routing at the answer position, in torch.

C3PO's pathway, as r2t2 serves it: in chosen MoE layers, the router's distribution for the answer
position (the last prompt token, and every token after it; with `positions` "first" the last prompt token
alone) is either read (a request's base LM routing, a reference's stored routing) or replaced by a given
distribution, from which the layer then picks its top-k experts and normalises them as its own router would.
Every other token keeps its router.

A forward call opts in with `with routing_at(LmRouting(...)):`; the setting lives in a context variable,
so concurrent calls on one shared model never see each other's. Hugging Face MoE routers (Mixtral, OLMoE,
Qwen3-MoE and Qwen3-VL-MoE, whose router modules return (logits, top-k weights, top-k experts)) are
reached through forward hooks installed once (`install_router_hooks`); the lean Mixtral forward
(cached_lm.py) calls `route_tokens` itself. vLLM applies the same rule inside its engine
(serving/backends/vllm_routing).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from r2t2.engine_prompt import LmPositions
from r2t2.routing.layout import RoutingLayout
from r2t2.routing.ties import largest


@dataclass
class LmRouting:
    """What forward calls do to the LM's routers of `layers` at the answer tokens.

    `answer` [B, S] bool marks the tokens (in the call's own [batch, sequence] layout) at the answer
    position. For a generation loop with a key/value cache give `answer_from` instead (the sequence index
    of the last prompt token): each call then marks its tokens at that index or later. `positions` "first"
    keeps only each sample's first marked token (the last prompt token; `answer_from` then marks that index
    alone). `rows` [B, len(layers), E] replaces their routing (None: keep the routers'); `captured` collects,
    per layer, the routers' own distribution at those tokens when `capture` is set; `ran` notes, per layer,
    the experts the replaced rows made the layer run and at how many tokens.
    """

    layers: tuple[int, ...]
    answer: Tensor | None = None
    rows: Tensor | None = None
    capture: bool = False
    answer_from: int | None = None
    positions: LmPositions = "answer"
    captured: dict[int, Tensor] = field(default_factory=dict)  # layer -> [number of answer tokens, E]
    ran: dict[int, dict] = field(default_factory=dict)  # layer -> {"experts": [...], "tokens": n}

    def __post_init__(self) -> None:
        # Reduced on the whole [B, S] marks: the copies `narrowed_to` makes only cut them (one mark a sample is
        # its own reduction).
        if self.positions == "first" and self.answer is not None:
            self.answer = self.answer & (self.answer.long().cumsum(dim=1) == 1)


def pinned_rows(layout: RoutingLayout, routing: Tensor, pinned: Sequence[bool] | None, answer: Tensor,
                positions: LmPositions) -> LmRouting | None:
    """The LM rows of `routing` ([L, E] or [B, L, E]) that `pinned` applies, placed at the `answer` tokens
    [B, S] (all of them, or with `positions` "first" each sample's first); None when it applies none (every
    layer keeps its router)."""
    if pinned is None:
        return None
    if len(pinned) != layout.shape[0]:
        raise ValueError(f"pinned names {len(pinned)} rows; the routing has {layout.shape[0]}")
    rows = [i for i, row in enumerate(layout.rows) if row.kind == "lm" and pinned[i]]
    if not rows:
        return None
    width = max(len(layout.rows[i].experts) for i in rows)
    values = routing[..., rows, :width]
    values = values.expand(answer.shape[0], *values.shape[-2:]) if values.ndim == 2 else values
    return LmRouting(tuple(layout.rows[i].layer for i in rows), answer, rows=values, positions=positions)


_ACTIVE: ContextVar[LmRouting | None] = ContextVar("r2t2_lm_routing", default=None)


@contextmanager
def routing_at(routing: LmRouting | None) -> Iterator[LmRouting | None]:
    """Apply `routing` to the forward calls made inside the block (None: leave the routers alone)."""
    token = _ACTIVE.set(routing)
    try:
        yield routing
    finally:
        _ACTIVE.reset(token)


@contextmanager
def narrowed_to(start: int) -> Iterator[None]:
    """Inside the block, the active routing marks only the tokens from sequence index `start` on: for a
    forward whose later layers run on the tail of the sequence (the marks stay in the [B, S] layout)."""
    active = _ACTIVE.get()
    if start == 0 or active is None or active.answer is None:
        yield
        return
    with routing_at(replace(active, answer=active.answer[:, start:])):
        yield


def route_tokens(layer: int, logits: Tensor, top_k: int, normalise: bool,
                 weights: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:
    """The top-k weights and experts [T, k] of one layer's tokens under the active routing.

    `logits` [T, E] are the router's, `weights`/`experts` its own top-k; T is the call's tokens
    flattened in [batch, sequence] order. Returns them unchanged when nothing is active for this layer.
    """
    active = _ACTIVE.get()
    if active is None or layer not in active.layers or active.answer is None:
        return weights, experts
    answer = active.answer.reshape(-1).to(logits.device)
    if answer.shape[0] != logits.shape[0]:
        raise ValueError(f"LM routing marks {answer.shape[0]} tokens but layer {layer} routes {logits.shape[0]}")
    if active.capture:
        active.captured[layer] = torch.softmax(logits.float(), dim=-1)[answer].detach()
    if active.rows is None:
        return weights, experts
    per_sample = active.rows[:, active.layers.index(layer), :logits.shape[-1]]  # [B, E]
    tokens_per_sample = active.answer.shape[1]
    wanted = per_sample.to(torch.float32).repeat_interleave(tokens_per_sample, dim=0)[answer]  # [A, E]
    top, chosen = largest(wanted, top_k)
    if normalise:
        top = top / top.sum(-1, keepdim=True)
    weights = weights.clone()
    experts = experts.clone()
    weights[answer] = top.to(weights.dtype)
    experts[answer] = chosen.to(experts.dtype)
    if len(chosen):
        ran = active.ran.setdefault(layer, {"experts": chosen[0].tolist(), "tokens": 0})
        ran["tokens"] += len(chosen)
    return weights, experts


def moe_layers(lm: nn.Module) -> list[nn.Module]:
    """The decoder layers of a Hugging Face causal LM (or the text model of a vision-language one)."""
    for path in ("model.layers", "model.language_model.layers", "language_model.model.layers", "layers"):
        found: nn.Module | None = lm
        for part in path.split("."):
            found = getattr(found, part, None)
            if found is None:
                break
        if isinstance(found, nn.ModuleList):
            return list(found)
    raise ValueError(f"cannot find the decoder layers of {type(lm).__name__}")


def _router(layer: nn.Module) -> nn.Module:
    """A decoder layer's top-k router module (returns logits, top-k weights, top-k experts)."""
    for name in ("mlp", "block_sparse_moe"):
        gate = getattr(getattr(layer, name, None), "gate", None)
        if gate is not None and hasattr(gate, "top_k"):
            return gate
    raise ValueError(f"{type(layer).__name__} has no top-k MoE router (a dense layer?)")


def _mark_answer_tokens(_: nn.Module, args: tuple, kwargs: dict) -> None:
    """Before each forward call of the LM: with `answer_from` active, mark the call's tokens at or after it (at
    it alone for `positions` "first")."""
    active = _ACTIVE.get()
    if active is None or active.answer_from is None:
        return
    inputs = kwargs.get("inputs_embeds")
    if inputs is None:
        inputs = kwargs.get("input_ids", args[0] if args else None)
    batch, length = inputs.shape[:2]
    cache = kwargs.get("past_key_values")
    past = 0 if cache is None else int(cache.get_seq_length())
    indices = torch.arange(past, past + length, device=inputs.device)
    marked = indices == active.answer_from if active.positions == "first" else indices >= active.answer_from
    active.answer = marked.expand(batch, length)


def install_router_hooks(lm: nn.Module, layers: Sequence[int]) -> None:
    """Hook the routers of `layers` so that forward calls inside `routing_at` read or replace their routing.

    Idempotent. A router normalises its top-k weights when it has no `norm_topk_prob` or it is true
    (Mixtral and Qwen3-VL-MoE always do, OLMoE as configured).
    """
    if not getattr(lm, "_r2t2_hooked", False):
        lm.register_forward_pre_hook(_mark_answer_tokens, with_kwargs=True)
        lm._r2t2_hooked = True
    decoder = moe_layers(lm)
    for index in layers:
        router = _router(decoder[index])
        if getattr(router, "_r2t2_hooked", False):
            continue
        normalise = bool(getattr(router, "norm_topk_prob", True))

        def hook(module: nn.Module, _: tuple, output: tuple, layer: int = index, normalise: bool = normalise):
            logits, weights, experts = output
            routed = route_tokens(layer, logits, module.top_k, normalise, weights, experts)
            return None if routed[0] is weights else (logits, *routed)

        router.register_forward_hook(hook)
        router._r2t2_hooked = True
