"""The config's request sections: image limits, the vLLM engine's arguments and the generation defaults."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from serving.config.base import Strict


class ImageLimits(Strict):
    """Bounds on user images, checked before any pixel is decoded."""

    max_encoded_bytes: int = Field(4 * 1024 * 1024, ge=1)
    max_pixels: int = Field(16_000_000, ge=1)
    allow_remote_urls: bool = False
    remote_timeout_s: float = Field(5.0, gt=0)


class VllmOptions(Strict):
    """Engine arguments that matter for serving; the rest keep vLLM's defaults."""

    kv_cache_gib: int = Field(1, ge=1)  # CPU only: KV cache per engine; vLLM reads whole GiB
    # GPU only: the share of the card's memory this engine may take; lower it when engines share a GPU.
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "bfloat16"
    enforce_eager: bool = True


class GenerationDefaults(Strict):
    """Sampling used when a request leaves a field out; greedy keeps answers reproducible."""

    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
