"""The sparse-MoE language model: built from a family config, loaded from its Hugging Face directory, and
run with the question prefix cached for re-routing losses.

Any transformers `*ForCausalLM` that vLLM also serves can be a family's LM (Mixtral and OLMoE are
shipped and tested). Mixtral has a lean hand-written forward (`cached_lm.py`, held to the transformers
forward by a test); every other architecture runs transformers' own forward on a copy of the prefix's
key/value cache, which is correct for any model at some cost in speed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import transformers
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from r2t2.model.cached_lm import CachedLM
from r2t2.model.config import ModelConfig, ModelConfigError

_LEGACY_FIELDS = {"rope_theta", "rope_scaling"}  # accepted by transformers' configs, stored under rope_parameters


def _lm_class(architecture: str) -> type[PreTrainedModel]:
    cls = getattr(transformers, architecture, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, PreTrainedModel):
        raise ModelConfigError("lm.architecture", f"{architecture!r} is not a transformers causal LM class")
    return cls


def build_lm(config: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A freshly initialised LM of the config's architecture, with the tokenizer's vocabulary and specials."""
    cls = _lm_class(config.lm_architecture)
    known = set(cls.config_class().to_dict()) | _LEGACY_FIELDS
    unknown = sorted(set(config.lm_fields) - known)
    if unknown:
        raise ModelConfigError(f"lm.{unknown[0]}", f"is not a field of {cls.config_class.__name__}")
    lm_config = cls.config_class(**config.lm_fields, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return cls(lm_config)


def load_lm(directory: Path, architecture: str) -> PreTrainedModel:
    """The LM saved at `directory` in float32; refuses one whose class differs from the family config's."""
    lm = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    if type(lm).__name__ != architecture:
        raise ModelConfigError("lm.architecture", f"the config says {architecture} but {directory} holds a "
                                                  f"{type(lm).__name__}")
    return lm


class PrefixLM(Protocol):
    """Run the routing-independent prefix once, then many suffixes after it (what NGD steps need)."""

    def prefix(self, embeds: Tensor, lengths: Tensor) -> Any: ...

    def logits(self, cache: Any, suffix: Tensor, keep_from: int = 0) -> Tensor:
        """Logits [B, S - keep_from, V] of the suffix [B, S, h] after each cached prefix, from `keep_from` on."""
        ...


@dataclass(frozen=True)
class _HFPrefix:
    past: Any  # transformers cache object after the prefix
    mask: Tensor  # [B, P] 1 on real prefix tokens, 0 on right padding
    lengths: Tensor  # [B]


class HFPrefixLM:
    """transformers' own forward with the prefix's key/value cache, copied for every suffix."""

    def __init__(self, lm: PreTrainedModel) -> None:
        self.lm = lm

    @torch.no_grad()
    def prefix(self, embeds: Tensor, lengths: Tensor) -> _HFPrefix:
        mask = (torch.arange(embeds.shape[1], device=embeds.device)[None, :] < lengths[:, None]).long()
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
        return _HFPrefix(out.past_key_values, mask, lengths)

    def logits(self, cache: _HFPrefix, suffix: Tensor, keep_from: int = 0) -> Tensor:
        """Logits [B, S - keep_from, V] of the suffix [B, S, h] following each (right-padded) prefix."""
        b, s, _ = suffix.shape
        mask = torch.cat([cache.mask, torch.ones(b, s, dtype=torch.long, device=suffix.device)], dim=1)
        positions = cache.lengths[:, None] + torch.arange(s, device=suffix.device)[None, :]
        return self.lm(inputs_embeds=suffix, attention_mask=mask, position_ids=positions,
                       past_key_values=copy.deepcopy(cache.past), use_cache=True, logits_to_keep=s - keep_from).logits


def prefix_lm(lm: PreTrainedModel) -> PrefixLM:
    """The fastest exact prefix-cached forward for this LM."""
    return CachedLM(lm) if type(lm).__name__ == "MixtralForCausalLM" else HFPrefixLM(lm)
