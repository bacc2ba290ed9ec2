"""Saving and loading config-described multimodal MoE checkpoints; one `load_model` for every family.

A checkpoint directory describes itself:
  config.json          the family config (r2t2.model.config), what the model is
  vision.safetensors   experts, router, projectors
  lm/                  the sparse-MoE language model in Hugging Face format with its tokenizer, so
                       transformers (losses) and vLLM (generation) load the very same files
  MODEL_CARD.md        how it was trained and what it scores
  FINGERPRINT          hash of the weight files: what reference indexes are tied to
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from r2t2.model.config import ModelConfig, ModelConfigError, load_config
from r2t2.model.fingerprint import FINGERPRINT, files_fingerprint
from r2t2.model.image_text_model import ImageTextModel, is_image_text_checkpoint
from r2t2.model.language_model import load_lm
from r2t2.model.mmoe import MultimodalMoE
from r2t2.model.protocol import ServableModel
from r2t2.model.skeleton import resolve_skeleton

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "embedded"
_VISION = "vision.safetensors"
CARD = "MODEL_CARD.md"


def shipped_families() -> list[str]:
    """Checkpoints that ship inside the package, by name."""
    return sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").exists())


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A checkpoint directory, a shipped family's by name ("embedded", "quartet"), or a random-weights skeleton
    of Qwen3-VL-30B-A3B by name ("qwen3vl-a3b-skeleton-L4"), generated on first use (`r2t2.model.skeleton`)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.name == str(name_or_path) and (ASSETS / path.name).is_dir():
        return ASSETS / path.name
    skeleton = resolve_skeleton(str(name_or_path))
    if skeleton is not None:
        return skeleton
    raise ModelConfigError("checkpoint", f"{str(name_or_path)!r} is neither a checkpoint directory nor a "
                                         f"shipped family ({', '.join(shipped_families())}) nor a skeleton "
                                         f"(qwen3vl-a3b-skeleton-L<layers>[-s<seed>])")


def save_model(model: MultimodalMoE, directory: Path, card: str | None = None) -> str:
    """Write a self-describing checkpoint; returns its fingerprint."""
    directory = Path(directory)
    (directory / "lm").mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("lm.")}
    save_file(state, str(directory / _VISION))
    model.lm.save_pretrained(directory / "lm", safe_serialization=True)
    model.tokenizer.save_pretrained(directory / "lm")
    if card is not None:
        (directory / CARD).write_text(card)
    digest = fingerprint(directory)
    (directory / FINGERPRINT).write_text(digest + "\n")
    return digest


def fingerprint(directory: Path) -> str:
    """Content hash of the weight files."""
    return files_fingerprint([Path(directory) / _VISION, *(Path(directory) / "lm").glob("*.safetensors")])


def _hugging_face_config(path: Path) -> bool:
    """Whether a config.json is a transformers model config (it names its `architectures`)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False  # load_config reports it, naming the file
    return isinstance(data, dict) and "architectures" in data


def read_config(directory: Path) -> ModelConfig:
    """The family config of a checkpoint; ModelConfigError naming the file and field when it is wrong."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ModelConfigError("checkpoint", f"no r2t2 checkpoint at {directory} (expected config.json); "
                                             f"train one with `r2t2 train --config FILE --out DIR`")
    config = None if _hugging_face_config(path) else load_config(path)
    if not isinstance(config, ModelConfig):
        raise ModelConfigError("checkpoint", f"{directory} is a Hugging Face image-text checkpoint, not a composed "
                                             "family's: transformers' AutoModelForImageTextToText reads it", path)
    return config


def load_model(directory: str | Path = DEFAULT_CHECKPOINT, dtype: torch.dtype = torch.float32,
               weights: str = "full") -> ServableModel:
    """A frozen model in eval mode (parameters never require grad: strategies only move routing): a composed
    family's `MultimodalMoE`, or for a Hugging Face image-text checkpoint (the `qwen3vl` family, a published
    Qwen3-VL-MoE) its adapter, `ImageTextModel`. `dtype` is its weights' (float32 or bfloat16); routings and
    losses stay float32. `weights` "tail" loads an image-text checkpoint's language model from its first routed
    layer on (see `ImageTextModel`)."""
    directory = resolve_checkpoint(directory)
    if is_image_text_checkpoint(directory):
        return ImageTextModel(directory, dtype=dtype, weights=weights)
    if weights != "full":
        raise ModelConfigError("weights", f"{directory.name} is a composed family, loaded whole (weights: full) only")
    if dtype != torch.float32:  # a composed family is a few MB: its float32 weights cost nothing worth halving
        raise ModelConfigError("dtype", f"{directory.name} is a composed family, served in float32 only; "
                                        f"bfloat16 is for Hugging Face image-text checkpoints")
    config = read_config(directory)
    # Expert weight files only seed training; the trained weights are in vision.safetensors.
    config = dataclasses.replace(config, experts=tuple(dataclasses.replace(e, weights=None) for e in config.experts))
    tokenizer = AutoTokenizer.from_pretrained(directory / "lm")
    try:
        model = MultimodalMoE(config, tokenizer)
    except ModelConfigError as err:
        raise ModelConfigError(err.field, str(err), directory / "config.json") from None
    try:
        missing, unexpected = model.load_state_dict(load_file(str(directory / _VISION)), strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape: the config's dimensions do not match
        raise ModelConfigError("config", f"{directory / _VISION} does not match the config's dimensions: "
                                         f"{str(err).splitlines()[-1].strip()}", directory / "config.json") from None
    if unexpected or any(not k.startswith("lm.") for k in missing):
        raise ModelConfigError("config", f"{directory / _VISION} does not match the config: missing="
                                         f"{[k for k in missing if not k.startswith('lm.')][:5]} "
                                         f"unexpected={unexpected[:5]}", directory / "config.json")
    model.use_lm(load_lm(directory / "lm", config.lm_architecture))
    if model.lm.config.hidden_size != config.lm["hidden_size"]:
        raise ModelConfigError("lm.hidden_size", f"{config.lm['hidden_size']} but {directory / 'lm'} has "
                                                 f"{model.lm.config.hidden_size}", directory / "config.json")
    model.checkpoint_dir = directory
    model.lm_path = directory / "lm"
    model.fingerprint = fingerprint(directory)
    recorded = directory / FINGERPRINT
    if recorded.exists() and recorded.read_text().strip() != model.fingerprint:
        raise ModelConfigError("fingerprint", f"the weights in {directory} hash to {model.fingerprint}, not the "
                                              f"recorded {recorded.read_text().strip()}: files changed or corrupt")
    model.eval().requires_grad_(False)
    return model
