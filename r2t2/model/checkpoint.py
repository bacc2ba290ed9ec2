"""Saving and loading the multimodal MoE.

Layout of a checkpoint directory:
  config.json          the ModelConfig
  vision.safetensors   experts, router, projectors
  lm/                  the sparse-MoE language model in Hugging Face format, with its tokenizer, so
                       transformers (losses) and vLLM (generation) load the very same files
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, MixtralForCausalLM

from r2t2.model.config import ModelConfig
from r2t2.model.mmoe import MultimodalMoE

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "embedded"
_VISION = "vision.safetensors"


def save_model(model: MultimodalMoE, directory: Path) -> None:
    directory = Path(directory)
    (directory / "lm").mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("lm.")}
    save_file(state, str(directory / _VISION))
    model.lm.save_pretrained(directory / "lm", safe_serialization=True)
    model.tokenizer.save_pretrained(directory / "lm")


def fingerprint(directory: Path) -> str:
    """Content hash of the weight files: what reference indexes are tied to."""
    digest = hashlib.sha256()
    for path in sorted([Path(directory) / _VISION, *(Path(directory) / "lm").glob("*.safetensors")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_model(directory: Path = DEFAULT_CHECKPOINT) -> MultimodalMoE:
    """A frozen model in eval mode (parameters never require grad: strategies only move routing)."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"no r2t2 checkpoint at {directory} (expected config.json); run `r2t2 train`")
    config = ModelConfig.from_dict(json.loads((directory / "config.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(directory / "lm")
    model = MultimodalMoE(config, tokenizer)
    missing, unexpected = model.load_state_dict(load_file(str(directory / _VISION)), strict=False)
    if unexpected or any(not k.startswith("lm.") for k in missing):
        raise ValueError(f"checkpoint {directory} does not match its config: missing={missing} "
                         f"unexpected={unexpected}")
    model.lm = MixtralForCausalLM.from_pretrained(directory / "lm", dtype=torch.float32)
    model.checkpoint_dir = directory
    model.fingerprint = fingerprint(directory)
    model.eval().requires_grad_(False)
    return model
