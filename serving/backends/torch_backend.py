"""Generation with plain transformers: the fallback where vLLM is unavailable.

It handles one request at a time (no continuous batching) and yields each completion as a single
delta, so it is slower under load but needs nothing beyond torch.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import torch

from serving.backends.protocol import Delta, FinishReason, SamplingOptions, check_prompt_embeds


class TorchBackend:
    """`AutoModelForCausalLM.generate(inputs_embeds=...)` in a worker thread."""

    def __init__(self, lm_path: str, max_model_len: int) -> None:
        import r2t2  # noqa: F401  (transformers imports torchvision, which needs the fix first)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._model = AutoModelForCausalLM.from_pretrained(lm_path, dtype=torch.float32).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(lm_path)
        self.hidden_size: int = self._model.config.hidden_size
        self.max_model_len: int = max_model_len
        eos = self._model.generation_config.eos_token_id
        self._eos_ids: set[int] = set() if eos is None else set(eos if isinstance(eos, list) else [eos])
        # One generation at a time: two would only split the same cores and both run slower.
        self._lock = threading.Lock()
        self._closed = False

    def _generate_blocking(self, embeds: torch.Tensor, options: SamplingOptions) -> Delta:
        sampling = {} if options.greedy else {"temperature": options.temperature, "top_p": options.top_p}
        with self._lock, torch.inference_mode():
            output = self._model.generate(
                inputs_embeds=embeds.unsqueeze(0),
                attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long),
                max_new_tokens=options.max_tokens,
                do_sample=not options.greedy,
                pad_token_id=next(iter(self._eos_ids), 0),
                **sampling,
            )
        # With only inputs_embeds given, generate returns the new tokens alone.
        token_ids = output[0].tolist()
        finish: FinishReason = "stop" if token_ids and token_ids[-1] in self._eos_ids else "length"
        text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
        return Delta(text, len(token_ids), finish)

    async def generate(self, prompt_embeds: torch.Tensor, options: SamplingOptions) -> AsyncIterator[Delta]:
        """Yield the whole completion as one delta, computed off the event loop."""
        if self._closed:
            raise RuntimeError("the torch backend was shut down")
        embeds = check_prompt_embeds(prompt_embeds, self.hidden_size, self.max_model_len, options)
        yield await asyncio.to_thread(self._generate_blocking, embeds, options)

    async def check_health(self) -> None:
        """Raise once shut down; the model lives in this process, so nothing else can die."""
        if self._closed:
            raise RuntimeError("the torch backend was shut down")

    def shutdown(self) -> None:
        """Refuse further requests; idempotent (the model is freed with the replica's process)."""
        self._closed = True
