"""Both generation backends give the same greedy text for the same prompt embeddings; text+image prompts are
checked before an engine sees them, and only the vLLM backend takes them."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from PIL import Image

from r2t2.engine_prompt import TEXT_IMAGE, TextImagePrompt
from serving.backends import Delta, PromptTooLong, SamplingOptions, check_prompt_embeds, check_text_image
from serving.backends.torch_backend import TorchBackend
from serving.config import VllmOptions

HIDDEN = 128


def _prompts() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(length, HIDDEN, generator=gen) for length in (3, 7, 12, 20, 5, 9)]


async def _complete(backend, embeds: torch.Tensor, options: SamplingOptions, with_logprobs: bool = False) -> tuple:
    """(text, tokens, finish reason), and the token log-probabilities when asked."""
    deltas: list[Delta] = [d async for d in backend.generate(embeds, options)]
    assert all(d.finish_reason is None for d in deltas[:-1]) and deltas[-1].finish_reason in ("stop", "length")
    found = "".join(d.text for d in deltas), sum(d.num_tokens for d in deltas), deltas[-1].finish_reason
    return (*found, [t for d in deltas for t in d.logprobs]) if with_logprobs else found


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


def test_check_text_image_rejects_bad_input(tiny_mixtral_dir: Path) -> None:
    options = SamplingOptions(max_tokens=4)
    prompt = TextImagePrompt("<|vision_start|><|image_pad|><|vision_end|>what color?", Image.new("RGB", (64, 64)), 33)
    assert check_text_image(prompt, 64, options) is prompt
    with pytest.raises(TypeError, match="TextImagePrompt"):
        check_text_image(torch.zeros(3, HIDDEN), 64, options)
    with pytest.raises(ValueError, match="text"):
        check_text_image(TextImagePrompt("", prompt.image, 33), 64, options)
    with pytest.raises(PromptTooLong, match="exceeds"):
        check_text_image(prompt, 36, options)
    with pytest.raises(ValueError, match="backend: vllm"):  # refused at start-up, before loading anything
        TorchBackend(str(tiny_mixtral_dir), max_model_len=256, engine_input=TEXT_IMAGE)


def test_sampling_options_validate() -> None:
    with pytest.raises(ValueError):
        SamplingOptions(max_tokens=0)
    with pytest.raises(ValueError):
        SamplingOptions(max_tokens=1, temperature=-1)
    with pytest.raises(ValueError):
        SamplingOptions(max_tokens=1, top_p=0)
    with pytest.raises(ValueError, match="presence_penalty"):
        SamplingOptions(max_tokens=1, presence_penalty=2.5)
    with pytest.raises(ValueError, match="top_logprobs"):
        SamplingOptions(max_tokens=1, logprobs=21)
    with pytest.raises(ValueError, match="stop"):
        SamplingOptions(max_tokens=1, stop=("",))


@pytest.mark.slow
def test_vllm_and_torch_backends_agree(tiny_mixtral_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Greedy text, presence/frequency penalties (with prompts of mixed lengths in one batch), stop strings and
    log-probabilities agree between the engines; a seed makes a sample repeatable."""
    from serving.backends.vllm_backend import VllmBackend

    greedy = SamplingOptions(max_tokens=8)
    torch_backend = TorchBackend(str(tiny_mixtral_dir), max_model_len=256)
    expected = [asyncio.run(_complete(torch_backend, p, greedy)) for p in _prompts()]
    assert len({text for text, _, _ in expected}) > 1, "prompts should not all give the same text"
    stop_word = expected[0][0].split()[2]
    variants = {"penalties": SamplingOptions(max_tokens=8, presence_penalty=1.5, frequency_penalty=1.0),
                "stop": SamplingOptions(max_tokens=8, stop=(stop_word,)),
                "logprobs": SamplingOptions(max_tokens=3, logprobs=2)}
    torch_variants = {name: [asyncio.run(_complete(torch_backend, p, o, with_logprobs=True)) for p in _prompts()]
                      for name, o in variants.items()}
    assert [text for text, _, _, _ in torch_variants["penalties"]] != [text for text, _, _ in expected]
    assert torch_variants["stop"][0][0] == expected[0][0][:expected[0][0].index(stop_word)]
    assert torch_variants["stop"][0][2] == "stop"
    seeded = SamplingOptions(max_tokens=8, temperature=1.0, seed=7)

    async def run_vllm() -> tuple[list, list, dict[str, list], list[str]]:
        backend = VllmBackend(str(tiny_mixtral_dir), VllmOptions(dtype="float32", kv_cache_gib=1), max_model_len=256)
        try:
            await backend.check_health()
            concurrent = await asyncio.gather(*(_complete(backend, p, greedy) for p in _prompts()))
            sequential = [await _complete(backend, p, greedy) for p in _prompts()]
            # Penalised and plain requests of different prompt lengths share the engine's batches.
            mixed = await asyncio.gather(*(_complete(backend, p, o, with_logprobs=True)
                                           for o in variants.values() for p in _prompts()))
            samples = [(await _complete(backend, _prompts()[0], seeded))[0] for _ in range(2)]
        finally:
            backend.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            await backend.check_health()
        by_name = {name: mixed[i * len(_prompts()):(i + 1) * len(_prompts())] for i, name in enumerate(variants)}
        return list(concurrent), sequential, by_name, samples

    concurrent, sequential, vllm_variants, samples = asyncio.run(run_vllm())
    assert sequential == expected
    assert concurrent == expected
    for name, replies in vllm_variants.items():
        assert [r[:3] for r in replies] == [r[:3] for r in torch_variants[name]], name
    for vllm_reply, torch_reply in zip(vllm_variants["logprobs"], torch_variants["logprobs"]):
        for ours, theirs in zip(vllm_reply[3], torch_reply[3], strict=True):
            assert ours.token == theirs.token and len(ours.top) == len(theirs.top) == 2
            assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-3) and ours.logprob <= 0
    assert samples[0] == samples[1]
