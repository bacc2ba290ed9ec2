"""Each shipped family answers the same in transformers (torch path) and in vLLM (prompt embeddings)."""
import os

import pytest

from r2t2.data import load_split
from r2t2.model import load_model


@pytest.mark.slow
@pytest.mark.parametrize("family", ["embedded", "quartet"])
def test_vllm_and_torch_greedy_answers_agree(family: str) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    model = load_model(family)
    samples = load_split("test", limit=12, seed=5)
    batch = model.labelled_batch([s.image for s in samples], [s.question for s in samples],
                                 [s.answer for s in samples])
    routing = model.route(batch)
    expected = model.generate(batch, routing, max_new_tokens=4)
    prompts = [{"prompt_embeds": p} for p in model.prompt_embeds(batch, routing)]
    llm = LLM(model=str(model.lm_path), enable_prompt_embeds=True, dtype="float32",
              max_model_len=model.max_positions, enforce_eager=True, seed=0)
    try:
        outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
    finally:
        del llm
    got = [o.outputs[0].text.strip() for o in outputs]
    assert got == expected
    assert sum(a == s.answer for a, s in zip(got, samples)) >= 6  # and they are mostly right
