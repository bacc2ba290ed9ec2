"""Qwen3-VL-MoE as an r2t2 family: transformers' `Qwen3VLMoeForConditionalGeneration` (its own vision
tower, merger and sparse-MoE language model) built from an `ImageTextConfig`, with its processor.

Everything runs through the architecture's own processor, as a user of the published model runs it: a
question becomes a chat turn holding one image, the processor expands the image placeholder into the
image's tokens and computes its pixels. What an adapter needs is here: chat inputs for (image, question)
pairs (with the answer as labels for training and losses), greedy answers, and the routing of the
language model's MoE layers at the answer position.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from transformers import (AutoModelForImageTextToText, AutoProcessor, BatchFeature, PreTrainedModel,
                          PreTrainedTokenizerFast, ProcessorMixin, Qwen2VLImageProcessor, Qwen3VLMoeConfig,
                          Qwen3VLMoeForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor)
from transformers.models.qwen3_vl_moe.configuration_qwen3_vl_moe import Qwen3VLMoeTextConfig, Qwen3VLMoeVisionConfig

from r2t2.model.config import IMAGE_TEXT_KEY, ImageTextConfig, ModelConfigError
from r2t2.model.tokenizer import CHAT_TEMPLATE, IM_END, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START

_IMAGE_MEAN = _IMAGE_STD = [0.5, 0.5, 0.5]  # the published processor's normalisation
IGNORE = -100  # label of every token the loss skips


def _check_fields(fields: dict, config_class: type, where: str) -> None:
    known = set(config_class().to_dict()) | set(getattr(config_class, "attribute_map", {})) | {"norm_topk_prob"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ModelConfigError(f"{where}.{unknown[0]}", f"is not a field of {config_class.__name__}")


def hf_config(config: ImageTextConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen3VLMoeConfig:
    """The transformers config: the family's fields, the tokenizer's vocabulary and special token ids."""
    _check_fields(config.text_config, Qwen3VLMoeTextConfig, f"{IMAGE_TEXT_KEY}.text_config")
    _check_fields(config.vision_config, Qwen3VLMoeVisionConfig, f"{IMAGE_TEXT_KEY}.vision_config")
    ids = tokenizer.convert_tokens_to_ids
    text = {**config.text_config, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None}
    return Qwen3VLMoeConfig(text_config=text, vision_config=dict(config.vision_config),
                            image_token_id=ids(IMAGE_PAD), video_token_id=ids(VIDEO_PAD),
                            vision_start_token_id=ids(VISION_START), vision_end_token_id=ids(VISION_END),
                            tie_word_embeddings=text.get("tie_word_embeddings", False))


def build_model(config: ImageTextConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen3VLMoeForConditionalGeneration:
    """A freshly initialised model of the family's shape."""
    return Qwen3VLMoeForConditionalGeneration(hf_config(config, tokenizer))


def build_processor(config: ImageTextConfig, tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """The architecture's processor, resizing every image to about `config.image_pixels` pixels."""
    vision = config.vision_config
    patches = {"patch_size": vision["patch_size"], "merge_size": vision["spatial_merge_size"],
               "temporal_patch_size": vision.get("temporal_patch_size", 2)}
    size = {"shortest_edge": config.image_pixels, "longest_edge": config.image_pixels}
    images = Qwen2VLImageProcessor(size=size, image_mean=_IMAGE_MEAN, image_std=_IMAGE_STD, **patches)
    videos = Qwen3VLVideoProcessor(size=size, image_mean=_IMAGE_MEAN, image_std=_IMAGE_STD, **patches)
    return Qwen3VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                            chat_template=CHAT_TEMPLATE)


def load_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Model (in `dtype`, eval mode, frozen) and processor of a saved checkpoint, read by transformers alone."""
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=dtype)
    return model.eval().requires_grad_(False), AutoProcessor.from_pretrained(directory)


def prompt(processor: ProcessorMixin, question: str, with_image: bool = True) -> str:
    """The chat-templated text of one question about one image (or, without `with_image`, the question alone,
    a text-only turn), ending where the answer begins."""
    image = [{"type": "image"}] if with_image else []
    messages = [{"role": "user", "content": [*image, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def chat_inputs(processor: ProcessorMixin, images: Sequence[Image.Image], questions: Sequence[str],
                answers: Sequence[str] | None = None) -> BatchFeature:
    """Model inputs for a batch of (image, question) pairs, left-padded so every prompt ends at the last
    position. With `answers`, each answer and <|im_end|> follow its prompt and `labels` mark them alone."""
    texts = [prompt(processor, q) for q in questions]
    if answers is not None:
        texts = [f"{t}{a}{IM_END}" for t, a in zip(texts, answers, strict=True)]
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = processor(images=list(images), text=texts, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    if answers is not None:
        labels = torch.full_like(inputs["input_ids"], IGNORE)
        for b, answer in enumerate(answers):
            n = len(tokenizer(answer, add_special_tokens=False).input_ids) + 1  # the answer's words, then <|im_end|>
            labels[b, -n:] = inputs["input_ids"][b, -n:]
        inputs["labels"] = labels
    return inputs


@torch.no_grad()
def generate_answers(model: PreTrainedModel, processor: ProcessorMixin, images: Sequence[Image.Image],
                     questions: Sequence[str], max_new_tokens: int = 2) -> list[str]:
    """Greedy answers with transformers' own `generate`, one batch."""
    inputs = chat_inputs(processor, images, questions)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]


def answer_routing(model: PreTrainedModel, inputs: BatchFeature) -> Tensor:
    """[B, MoE layers, experts]: each MoE router's softmax at the last prompt position (where the answer's
    first token is chosen), read from transformers' own router outputs."""
    prompt_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**prompt_inputs, output_router_logits=True, logits_to_keep=1).router_logits
    batch, length = inputs["input_ids"].shape
    last = torch.stack([layer.view(batch, length, -1)[:, -1] for layer in logits], dim=1)
    return torch.softmax(last.float(), dim=-1)


def sparse_layers(text: object) -> list[int]:
    """The decoder layers with a sparse MoE block, by the architecture's rule (transformers' decoder layer)."""
    return [i for i in range(text.num_hidden_layers) if i not in text.mlp_only_layers
            and text.num_experts > 0 and (i + 1) % text.decoder_sparse_step == 0]


def square_side(pixels: int, vision_config: object) -> int:
    """The side of the square the processor resizes an image of about `pixels` pixels to (a multiple of
    patch x merge)."""
    factor = vision_config.patch_size * vision_config.spatial_merge_size
    return max(factor, round(math.sqrt(pixels) / factor) * factor)
