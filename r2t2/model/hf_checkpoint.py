"""Hugging Face checkpoints in the tensor layout of the architecture's published weights.

transformers 5 keeps Qwen3-VL-MoE's fused expert tensors transposed relative to the published checkpoint
(Qwen/Qwen3-VL-30B-A3B-Instruct ships `mlp.experts.gate_up_proj` as [experts, hidden, 2 x intermediate]
and `mlp.experts.down_proj` as [experts, intermediate, hidden]). Its loader converts the published layout
when it reads one, while vLLM's loader reads only the published layout: written that way, one directory
loads in both with their own code. The directory holds nothing else they need from r2t2:

  config.json, generation_config.json     the architecture's config (published field names)
  model.safetensors                       the weights, published names and layout (or, sharded as the
                                          large published checkpoints ship: model-0000N-of-0000M.safetensors
                                          and model.safetensors.index.json naming each tensor's shard)
  preprocessor_config.json, tokenizer*, chat_template.jinja, ...   the processor, saved by transformers
  family.json                             the r2t2 family config it was trained from
  MODEL_CARD.md, FINGERPRINT              how it was made and what it scores; the weights' hash
  references.jsonl, references/           optional: the checkpoint's own reference set, the default index's
                                          samples (a random-weights skeleton's, labelled with its own answers)
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel, ProcessorMixin

from r2t2.model.config import ImageTextConfig
from r2t2.model.fingerprint import FINGERPRINT, files_fingerprint

WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map from tensor name to shard file
REFERENCES = "references.jsonl"
FAMILY = "family.json"
CARD = "MODEL_CARD.md"
# Per architecture: the tensors whose last two dimensions the published checkpoint swaps against transformers.
_PUBLISHED_TRANSPOSED = {"Qwen3VLMoeForConditionalGeneration": (".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")}


def published_tensor(architecture: str, name: str, tensor: Tensor) -> Tensor:
    """One of the architecture's tensors (transformers' layout) in the published layout: a view."""
    return tensor.transpose(1, 2) if name.endswith(_PUBLISHED_TRANSPOSED[architecture]) else tensor


def published_state_dict(model: PreTrainedModel) -> dict[str, Tensor]:
    """The model's tensors under their published names and in the published layout."""
    architecture = type(model).__name__
    return {name: published_tensor(architecture, name, tensor).detach().contiguous()
            for name, tensor in model.state_dict().items()}


def published_config(model: PreTrainedModel) -> dict:
    """config.json as the published checkpoint words it: the fields that differ from the defaults, the class
    in `architectures` (what vLLM picks its model code by), the weights' `dtype`, `num_experts` (transformers'
    alias of its own `num_local_experts`) and an explicit `norm_topk_prob`, which vLLM reads to renormalise
    the top-k."""
    data = {**model.config.to_diff_dict(), "architectures": [type(model).__name__],
            "dtype": str(model.dtype).removeprefix("torch.")}
    text = data["text_config"]
    text["num_experts"] = text.pop("num_local_experts")
    text["norm_topk_prob"] = True
    return data


def save_checkpoint(model: PreTrainedModel, processor: ProcessorMixin, directory: Path, family: ImageTextConfig,
                    card: str) -> str:
    """Write the whole directory; returns its fingerprint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(published_state_dict(model), str(directory / WEIGHTS), metadata={"format": "pt"})
    return save_description(model, processor, directory, family, card)


def save_description(model: PreTrainedModel, processor: ProcessorMixin, directory: Path, family: ImageTextConfig,
                     card: str) -> str:
    """Everything but the weights, which are in `directory` already (the fingerprint is theirs); returns the
    fingerprint. Only the model's config, class and dtype are read: it may live on the meta device."""
    directory = Path(directory)
    (directory / "config.json").write_text(json.dumps(published_config(model), indent=2) + "\n")
    tokenizer = processor.tokenizer
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     do_sample=False).save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / FAMILY).write_text(json.dumps(family.to_dict(), indent=2) + "\n")
    (directory / CARD).write_text(card)
    digest = fingerprint(directory)
    (directory / FINGERPRINT).write_text(digest + "\n")
    return digest


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: model.safetensors, or else the shards its index names."""
    directory = Path(directory)
    if (directory / WEIGHTS).is_file() or not (directory / SHARD_INDEX).is_file():
        return [directory / WEIGHTS]
    shards = json.loads((directory / SHARD_INDEX).read_text())["weight_map"].values()
    return [directory / name for name in sorted(set(shards))]


def fingerprint(directory: Path) -> str:
    """Content hash of the weight files."""
    return files_fingerprint(weight_files(directory))
