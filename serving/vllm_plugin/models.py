"""vLLM's own model classes, with every fused-MoE layer's routing open to per-request LM rows.

`routable(cls)` subclasses a vLLM model: after vLLM builds it, each MoE layer's router is rebuilt by vLLM's
router factory around a `custom_routing_function` that first runs the layer's stock router (so tokens
without LM rows are routed bit for bit as before) and then lets `step.ENGINE` put the slots' rows in place.
Weights, loading, multimodal processing, the forward and every other behaviour are the base class's.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from vllm.model_executor.layers.fused_moe.router.router_factory import create_fused_moe_router
from vllm.model_executor.layers.fused_moe.runner.moe_runner_interface import MoERunnerInterface

from serving.vllm_plugin.step import ENGINE


def _hooked(stock: Any, layer: int, hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int,
            renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    weights, experts = stock.select_experts(hidden_states, gating_output)
    return ENGINE.route(layer, topk, renormalize, weights, experts, gating_output)


def open_routers(model: nn.Module) -> int:
    """Rebuild every fused-MoE layer's router of `model` around the hook; returns how many were opened.

    Only plain softmax top-k routers are supported (Mixtral, OLMoE, Qwen3-MoE and Qwen3-VL-MoE): a layer
    with grouped, biased or sigmoid routing is refused, since its top-k is not taken from one distribution.
    """
    opened = 0
    for name, module in model.named_modules():
        if not isinstance(module, MoERunnerInterface):
            continue
        stock = module.router
        if (getattr(stock, "scoring_func", "softmax") != "softmax" or getattr(stock, "use_grouped_topk", False)
                or getattr(stock, "e_score_correction_bias", None) is not None
                or getattr(stock, "custom_routing_function", None) is not None):
            raise ValueError(f"{name}: LM routing needs a plain softmax top-k router, this layer routes otherwise")
        module.router = create_fused_moe_router(
            top_k=stock.top_k, global_num_experts=stock.global_num_experts, renormalize=stock.renormalize,
            custom_routing_function=partial(_hooked, stock, module.layer_id), eplb_state=stock.eplb_state)
        opened += 1
    if not opened:
        raise ValueError(f"{type(model).__name__} has no fused-MoE layer to route")
    return opened


def routable(base: type[nn.Module]) -> type[nn.Module]:
    """`base` with its MoE routers opened to per-request LM rows (same constructor, weights and interfaces)."""

    class Routable(base):  # type: ignore[misc, valid-type]
        def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:  # vLLM reads this signature
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            open_routers(self)

    Routable.__name__ = Routable.__qualname__ = f"R2T2{base.__name__}"
    return Routable


def _load(module: str, name: str) -> type[nn.Module]:
    import importlib

    return getattr(importlib.import_module(f"vllm.model_executor.models.{module}"), name)


R2T2MixtralForCausalLM = routable(_load("mixtral", "MixtralForCausalLM"))
R2T2OlmoeForCausalLM = routable(_load("olmoe", "OlmoeForCausalLM"))
R2T2Qwen3MoeForCausalLM = routable(_load("qwen3_moe", "Qwen3MoeForCausalLM"))
R2T2Qwen3VLMoeForConditionalGeneration = routable(_load("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration"))
