"""What a served model's generation engine is fed: prompt embeddings, or the chat text and the image, and
beside them the LM rows it applies.

Kept apart from the model code so the server's ingress and generator can name prompts without importing
any model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from PIL import Image
from torch import Tensor

# What a model's generation engine is fed, fixed per model (`ServableModel.engine_input`):
PROMPT_EMBEDS = "prompt_embeds"  # the prompt as embeddings [S, hidden]: the LM never sees the image itself
TEXT_IMAGE = "text+image"  # chat-templated text and the image, through the engine's own multimodal processor
ENGINE_INPUTS = (PROMPT_EMBEDS, TEXT_IMAGE)


@dataclass(frozen=True)
class TextImagePrompt:
    """A prompt for an engine that runs the whole multimodal model: the chat-templated text, holding the
    architecture's one image placeholder, and the image that fills it; a question asked without an image has
    neither (`image` None). `tokens` is the prompt's length once the processor has expanded the placeholder
    into the image's tokens (what the context limit counts)."""

    text: str
    image: Image.Image | None
    tokens: int


EnginePrompt = Tensor | TextImagePrompt  # one sample's prompt, as `engine_prompts` gives it


def prompt_length(prompt: EnginePrompt) -> int:
    """The positions a prompt takes in the engine's context."""
    return prompt.tokens if isinstance(prompt, TextImagePrompt) else int(prompt.shape[0])


# Where a request's LM rows replace their layers' router distribution: `answer`, the last prompt token and every
# generated token; `first`, the last prompt token alone (the position that produces the first answer token).
LmPositions = Literal["answer", "first"]
LM_POSITIONS: tuple[str, ...] = get_args(LmPositions)


@dataclass(frozen=True)
class LmRows:
    """A request's LM routing as it travels beside its prompt to the engine: decoder layer -> the distribution
    over that layer's experts that replaces its router's, at the `positions` the request asked for."""

    layers: dict[int, list[float]]
    positions: LmPositions = "answer"
