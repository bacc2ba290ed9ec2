"""A lean forward of the frozen Mixtral LM for re-routing losses, with the question prefix cached.

Routing only changes the soft visual tokens, which come *after* the question in the prompt. So the
question prefix ([BOS] question [SEP]) is run once per request (no grad) and its keys/values are
reused at every optimisation step; each step runs only the soft tokens and the answer. The math is
Mixtral's (RMSNorm, rotary attention, top-2 sparse MoE) on the same weights; each expert runs only on
the tokens routed to it, which on a batch of many requests' neighbours costs half the dense evaluation
and on a single request the same (a test holds this path to the transformers forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import MixtralForCausalLM

from r2t2.model.lm_routing import narrowed_to, route_tokens


@dataclass(frozen=True)
class PrefixCache:
    keys: tuple[Tensor, ...]  # per layer [B, kv_heads, P, head_dim], rotary applied
    values: tuple[Tensor, ...]
    lengths: Tensor  # [B] real prefix length per sample (the rest is right padding)


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class CachedLM:
    """Functional view of a frozen MixtralForCausalLM's weights."""

    def __init__(self, lm: MixtralForCausalLM) -> None:
        cfg = lm.config
        self.lm = lm
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.top_k, self.eps = cfg.num_experts_per_tok, cfg.rms_norm_eps
        self.inv_freq = lm.model.rotary_emb.inv_freq.float()
        self.scaling = lm.model.rotary_emb.attention_scaling

    def _rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.scaling).unsqueeze(1), (emb.sin() * self.scaling).unsqueeze(1)

    def _moe(self, number: int, layer, x: Tensor) -> Tensor:
        """Layer `number`'s sparse MoE; its routing at the answer position follows `lm_routing.routing_at`."""
        moe = layer.mlp
        logits = F.linear(x, moe.gate.weight).reshape(-1, moe.gate.weight.shape[0])
        top, index = torch.softmax(logits.float(), dim=-1).topk(self.top_k, dim=-1)
        weights, chosen = route_tokens(number, logits, self.top_k, True, top / top.sum(-1, keepdim=True), index)
        weights = weights.to(x.dtype)
        flat = x.reshape(-1, x.shape[-1])
        mixed = torch.zeros_like(flat)
        for expert in range(moe.gate.weight.shape[0]):
            rows, slot = (chosen == expert).nonzero(as_tuple=True)  # tokens routed to this expert
            if rows.numel() == 0:
                continue
            gate, up = F.linear(flat[rows], moe.experts.gate_up_proj[expert]).chunk(2, dim=-1)
            out = F.linear(F.silu(gate) * up, moe.experts.down_proj[expert])
            mixed = mixed.index_add(0, rows, weights[rows, slot, None] * out)
        return mixed.view_as(x)

    def _layers(self, x: Tensor, positions: Tensor, mask: Tensor | None, cache: PrefixCache | None,
                keep_from: int = 0) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Every layer over `x` [B, S, h]; the last one only at the positions from `keep_from` on (the others'
        outputs are never read: they reach those positions through its keys and values alone)."""
        cos, sin = self._rope(positions)
        keys, values = [], []
        b, s, _ = x.shape
        last = len(self.lm.model.layers) - 1
        for i, layer in enumerate(self.lm.model.layers):
            attn = layer.self_attn
            start = keep_from if i == last else 0
            h = _rms(x, layer.input_layernorm.weight, self.eps)
            q = F.linear(h[:, start:], attn.q_proj.weight).view(b, s - start, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, attn.k_proj.weight).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
            v = F.linear(h, attn.v_proj.weight).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos[:, :, start:], sin[:, :, start:]), _rotate(k, cos, sin)
            keys.append(k)
            values.append(v)
            if cache is not None:
                k = torch.cat([cache.keys[i], k], dim=2)
                v = torch.cat([cache.values[i], v], dim=2)
            if self.kv_heads != self.heads:
                k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
                v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, :, start:],
                                                 is_causal=mask is None)
            x = x[:, start:] + F.linear(out.transpose(1, 2).reshape(b, s - start, -1), attn.o_proj.weight)
            with narrowed_to(start):
                x = x + self._moe(i, layer, _rms(x, layer.post_attention_layernorm.weight, self.eps))
        return x, keys, values

    @torch.no_grad()
    def prefix(self, embeds: Tensor, lengths: Tensor) -> PrefixCache:
        """Run right-padded prefixes [B, P, h]; causal attention keeps real tokens off the padding."""
        positions = torch.arange(embeds.shape[1], device=embeds.device).expand(embeds.shape[0], -1)
        _, keys, values = self._layers(embeds, positions, None, None)
        return PrefixCache(tuple(keys), tuple(values), lengths)

    def logits(self, cache: PrefixCache, suffix: Tensor, keep_from: int = 0) -> Tensor:
        """Logits [B, S - keep_from, V] of the suffix tokens [B, S, h] that follow each cached prefix, at the
        suffix positions from `keep_from` on."""
        b, s, _ = suffix.shape
        width = cache.keys[0].shape[2]
        device = suffix.device
        positions = cache.lengths[:, None] + torch.arange(s, device=device)[None, :]
        prefix_ok = torch.arange(width, device=device)[None, :] < cache.lengths[:, None]  # [B, P]
        causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        mask = torch.cat([prefix_ok[:, None, :].expand(b, s, width), causal.expand(b, s, s)], dim=-1)
        x, _, _ = self._layers(suffix, positions, mask.unsqueeze(1), cache, keep_from)
        x = _rms(x, self.lm.model.norm.weight, self.eps)
        return F.linear(x, self.lm.lm_head.weight)
