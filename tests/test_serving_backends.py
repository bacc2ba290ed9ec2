"""Both generation backends give the same greedy text for the same prompt embeddings."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from serving.backends import Delta, PromptTooLong, SamplingOptions, check_prompt_embeds
from serving.backends.torch_backend import TorchBackend
from serving.config import VllmOptions

HIDDEN = 128


def _prompts() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(length, HIDDEN, generator=gen) for length in (3, 7, 12, 20, 5, 9)]


async def _complete(backend, embeds: torch.Tensor, options: SamplingOptions) -> tuple[str, int, str]:
    deltas: list[Delta] = [d async for d in backend.generate(embeds, options)]
    assert all(d.finish_reason is None for d in deltas[:-1]) and deltas[-1].finish_reason in ("stop", "length")
    return "".join(d.text for d in deltas), sum(d.num_tokens for d in deltas), deltas[-1].finish_reason


def test_check_prompt_embeds_rejects_bad_input() -> None:
    options = SamplingOptions(max_tokens=4)
    ok = check_prompt_embeds(torch.zeros(3, HIDDEN, dtype=torch.bfloat16), HIDDEN, 64, options)
    assert ok.dtype == torch.float32 and ok.is_contiguous()
    with pytest.raises(ValueError, match="must be"):
        check_prompt_embeds(torch.zeros(3, HIDDEN + 1), HIDDEN, 64, options)
    with pytest.raises(ValueError, match="must be"):
        check_prompt_embeds(torch.zeros(1, 3, HIDDEN), HIDDEN, 64, options)
    with pytest.raises(ValueError, match="must be"):
        check_prompt_embeds(torch.zeros(0, HIDDEN), HIDDEN, 64, options)
    with pytest.raises(TypeError, match="floating"):
        check_prompt_embeds(torch.zeros(3, HIDDEN, dtype=torch.long), HIDDEN, 64, options)
    with pytest.raises(ValueError, match="NaN"):
        check_prompt_embeds(torch.full((3, HIDDEN), float("nan")), HIDDEN, 64, options)
    with pytest.raises(PromptTooLong, match="exceeds"):
        check_prompt_embeds(torch.zeros(62, HIDDEN), HIDDEN, 64, options)


def test_sampling_options_validate() -> None:
    with pytest.raises(ValueError):
        SamplingOptions(max_tokens=0)
    with pytest.raises(ValueError):
        SamplingOptions(max_tokens=1, temperature=-1)
    with pytest.raises(ValueError):
        SamplingOptions(max_tokens=1, top_p=0)


@pytest.mark.slow
def test_vllm_and_torch_backends_agree_greedy(tiny_mixtral_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.backends.vllm_backend import VllmBackend

    options = SamplingOptions(max_tokens=8)
    torch_backend = TorchBackend(str(tiny_mixtral_dir), max_model_len=256)
    expected = [asyncio.run(_complete(torch_backend, p, options)) for p in _prompts()]
    assert len({text for text, _, _ in expected}) > 1, "prompts should not all give the same text"

    async def run_vllm() -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
        backend = VllmBackend(str(tiny_mixtral_dir), VllmOptions(dtype="float32", kv_cache_gib=1), max_model_len=256)
        try:
            await backend.check_health()
            concurrent = await asyncio.gather(*(_complete(backend, p, options) for p in _prompts()))
            sequential = [await _complete(backend, p, options) for p in _prompts()]
        finally:
            backend.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            await backend.check_health()
        return list(concurrent), sequential

    concurrent, sequential = asyncio.run(run_vllm())
    assert sequential == expected
    assert concurrent == expected
