"""A Qwen3-VL-30B-A3B skeleton: the published language model's widths with only a few decoder layers, random
weights, and a vision tower as small as the config allows.

It is for measuring what r2t2 costs at real widths (128 experts of 2048 x 768 per layer, a 151,936-row
vocabulary) on a machine that cannot hold the 30B model; its answers mean nothing. It is written as the
published checkpoint is (bfloat16, sharded, the published tensor names and layout, `hf_checkpoint`), so the
adapter and vLLM load it like any Qwen3-VL-MoE directory. Weights are drawn tensor by tensor from one seeded
generator and written one shard per decoder layer, so memory stays near one layer (1.25 GB) whatever the
depth. Its reference set is labelled with its own answers (`self_answered`), so its default index keeps the
references and measures cost, not accuracy.

`resolve_checkpoint("qwen3vl-a3b-skeleton-L4")` (optionally `-s<seed>`) generates one on first use into the
cache (`skeleton_dir`) and finds it there afterwards.
"""
from __future__ import annotations

import fcntl
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoProcessor, PreTrainedModel, Qwen3VLMoeForConditionalGeneration

from r2t2.cache import cache_root
from r2t2.data import load_split
from r2t2.model.config import IMAGE_TEXT_KEY, ImageTextConfig
from r2t2.model.hf_checkpoint import REFERENCES, SHARD_INDEX, published_tensor, save_description
from r2t2.model.image_text_model import ImageTextModel
from r2t2.model.qwen3vl import build_processor, hf_config
from r2t2.model.self_answered import self_answered, write_references

ARCHITECTURE = "Qwen3VLMoeForConditionalGeneration"
# Qwen/Qwen3-VL-30B-A3B-Instruct's text_config, less its 48 layers.
PUBLISHED_TEXT = {
    "hidden_size": 2048, "intermediate_size": 6144, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
    "norm_topk_prob": True, "rms_norm_eps": 1e-6, "max_position_embeddings": 262144, "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                        "mrope_interleaved": True},
    "decoder_sparse_step": 1, "mlp_only_layers": [],
}
PUBLISHED_VOCAB = 151936  # rows of the embeddings and the head; the word-level tokenizer uses the first few
# One block of width 128 (2 heads of 64: vLLM's CPU attention needs 64) feeding the 2048-wide merger.
SMALL_VISION = {"depth": 1, "hidden_size": 128, "num_heads": 2, "intermediate_size": 256, "patch_size": 16,
                "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 256,
                "deepstack_visual_indexes": [0]}
IMAGE_PIXELS = 256 * 256  # the published processor's smallest image: 64 image tokens
REFERENCE_COUNT = 256
NAME = re.compile(r"qwen3vl-a3b-skeleton-L([1-9]\d*)(?:-s(\d+))?")
RECORD = "skeleton.json"  # what a finished skeleton was made from; the cache compares it
GENERATOR = 1  # how weights are drawn; a change makes cached skeletons of an older one stale
_STD = 0.02  # transformers' initializer_range for this architecture
_TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "qwen3vl"  # the shipped word-level tokenizer
_ANSWER_DTYPE = torch.bfloat16  # its references are answered in the dtype its weights are stored in


def skeleton_name(layers: int, seed: int = 0) -> str:
    """The name `resolve_checkpoint` knows it by, also its family name (and so its default index's)."""
    return f"qwen3vl-a3b-skeleton-L{layers}" + (f"-s{seed}" if seed else "")


def skeleton_config(layers: int, **overrides: object) -> ImageTextConfig:
    """The family config: the published text widths with `layers` decoder layers, the small vision tower.
    `overrides` replace config fields: `name`, `image_pixels`, `max_question_tokens`, `max_answer_tokens`,
    `r2t2_defaults`, `vision_config` (a dict laid over the vision fields), or else a text_config field."""
    top = {"name": skeleton_name(layers), "image_pixels": IMAGE_PIXELS, "max_question_tokens": 24,
           "max_answer_tokens": 2, "r2t2_defaults": {"strategy": "ngd"}}
    text, vision = {**PUBLISHED_TEXT, "num_hidden_layers": layers}, dict(SMALL_VISION)
    for key, value in overrides.items():
        if key == "vision_config":
            vision.update(value)
        elif key in top:
            top[key] = value
        else:
            text[key] = value
    return ImageTextConfig.from_dict({**top, IMAGE_TEXT_KEY: {"architecture": ARCHITECTURE, "text_config": text,
                                                              "vision_config": vision}})


def skeleton_dir(layers: int, seed: int = 0) -> Path:
    """Where `resolve_checkpoint` keeps a skeleton: $R2T2_CACHE (default ~/.cache/r2t2)/skeletons/..."""
    return cache_root() / "skeletons" / f"qwen3vl-a3b-L{layers}-s{seed}"


def resolve_skeleton(name: str) -> Path | None:
    """The directory of a skeleton named like `qwen3vl-a3b-skeleton-L4[-s1]`, generated on first use; None for
    any other name."""
    match = NAME.fullmatch(name)
    if match is None:
        return None
    layers, seed = int(match[1]), int(match[2] or 0)
    return write_skeleton(skeleton_dir(layers, seed), layers, seed)


def write_skeleton(directory: str | Path, layers: int, seed: int = 0, references: int = REFERENCE_COUNT,
                   **overrides: object) -> Path:
    """Write a skeleton checkpoint (see the module) with `references` self-answered references, or find it:
    a directory that already holds one of the same config and seed is returned as it is. Written into a
    temporary directory renamed at the end, so an interrupted run leaves no partial checkpoint behind;
    FileExistsError when `directory` holds anything else."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    directory = Path(directory)
    config = skeleton_config(layers, **{"name": skeleton_name(layers, seed), **overrides})
    record = {"family": config.to_dict(), "seed": seed, "vocab_size": PUBLISHED_VOCAB, "references": references,
              "generator": GENERATOR}
    if _record(directory) == record:
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _locked(directory.parent / f".{directory.name}.lock"):  # another process may be writing it right now
        if _record(directory) == record:
            return directory
        if directory.exists():
            raise FileExistsError(f"{directory} holds something other than skeleton {config.name} (seed {seed}); "
                                  "remove it or choose another directory")
        partial = directory.parent / f".{directory.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # an interrupted run's
        partial.mkdir()
        _write(partial, config, seed, references)
        (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        partial.rename(directory)
    return directory


def checkpoint_bytes(directory: Path) -> int:
    """Bytes of every file in a checkpoint directory."""
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


def _record(directory: Path) -> dict | None:
    path = directory / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(directory: Path, config: ImageTextConfig, seed: int, references: int) -> None:
    tokenizer = AutoProcessor.from_pretrained(_TOKENIZER).tokenizer
    hf = hf_config(config, tokenizer)
    hf.text_config.vocab_size = PUBLISHED_VOCAB
    with torch.device("meta"):  # names, shapes and config only: no memory
        model = Qwen3VLMoeForConditionalGeneration._from_config(hf, dtype=torch.bfloat16)
    _write_weights(directory, model, seed, len(tokenizer))
    save_description(model, build_processor(config, tokenizer), directory, config, _card(config, seed, references))
    if references:
        samples = load_split("reference", limit=references, seed=0)
        answering = ImageTextModel(directory, dtype=_ANSWER_DTYPE)
        write_references(self_answered(answering, samples), directory / REFERENCES)


def _write_weights(directory: Path, model: PreTrainedModel, seed: int, words: int) -> None:
    """One shard for the embeddings, head, final norm and vision tower, then one per decoder layer, and the
    index naming each tensor's shard."""
    architecture = type(model).__name__
    shapes = {name: published_tensor(architecture, name, tensor).shape for name, tensor in model.state_dict().items()}
    groups: dict[int, list[str]] = {}
    for name in shapes:
        layer = re.search(r"\.layers\.(\d+)\.", name)
        groups.setdefault(int(layer[1]) + 1 if layer else 0, []).append(name)
    generator = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for number, key in enumerate(sorted(groups), start=1):
        shard = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: _draw(name, shapes[name], generator, words) for name in groups[key]}
        save_file(tensors, str(directory / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / SHARD_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _draw(name: str, shape: torch.Size, generator: torch.Generator, words: int) -> torch.Tensor:
    """transformers' initialisation: biases 0, norm scales 1, the rest normal with std 0.02. The head's rows
    past the tokenizer's `words` are 0, so a greedy answer is always one of its words (a random row would win
    most of the time, and the word-level tokenizer decodes no such id)."""
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if "norm" in name.split(".")[-2]:
        return torch.ones(shape, dtype=torch.bfloat16)
    tensor = torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, _STD, generator=generator)
    if name == "lm_head.weight":
        tensor[words:] = 0
    return tensor


def _card(config: ImageTextConfig, seed: int, references: int) -> str:
    text, vision = config.text_config, config.vision_config
    return f"""# {config.name}: a Qwen3-VL-30B-A3B skeleton with random weights

**Its weights are random (seed {seed}): its answers mean nothing.** It is for measuring what r2t2 costs in
time and memory at the published model's widths without its 60 GB of weights: re-routing, the reference
index and the vLLM engine run the real matrix sizes, on {text['num_hidden_layers']} decoder layers instead of 48.

- Architecture: transformers' and vLLM's `{ARCHITECTURE}`, written in the published checkpoint's layout
  (bfloat16, one shard per decoder layer plus one for the embeddings, head and vision tower).
- Language model: the widths of Qwen/Qwen3-VL-30B-A3B-Instruct: hidden {text['hidden_size']}, {text['num_attention_heads']}
  query and {text['num_key_value_heads']} key/value heads of {text['head_dim']}, {text['num_experts']} experts of
  width {text['moe_intermediate_size']} per layer, top-{text['num_experts_per_tok']}, vocabulary {PUBLISHED_VOCAB} rows,
  multimodal rotary sections {text['rope_parameters']['mrope_section']} (interleaved).
- Vision tower: as small as the config allows ({vision['depth']} block of width {vision['hidden_size']},
  {vision['patch_size']} px patches) with the published {text['hidden_size']}-wide merger; an image is
  {config.image_pixels // (vision['patch_size'] * vision['spatial_merge_size']) ** 2} image tokens.
- Tokenizer and chat template: the shipped `qwen3vl` family's word-level tokenizer. Embedding rows past its
  ids are never read; head rows past them are 0, so greedy answers are always its words.
- Weights: normal with std {_STD} (biases 0, norm scales 1), drawn tensor by tensor from `torch.Generator`
  seeded {seed}: the same seed writes the same bytes (`FINGERPRINT`).
- References (`{REFERENCES}`, images in `references/`): {references} samples of the built-in reference split,
  labelled with this model's own greedy answers ({str(_ANSWER_DTYPE).removeprefix('torch.')}), less those it
  answers with no word. The default index is built from them, since a random model answers the real labels
  correctly by chance alone: the index measures cost, not accuracy.

Made by `r2t2 skeleton --layers {text['num_hidden_layers']}{f' --seed {seed}' if seed else ''}`
(`r2t2/model/skeleton.py`).
"""
