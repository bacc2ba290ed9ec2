"""LM rows applied inside the real vLLM engine (r2t2's extension) give what the transformers path gives."""
import asyncio

import pytest
import torch

from r2t2.data import load_split
from r2t2.engine_prompt import LmRows
from r2t2.model import load_model

pytestmark = pytest.mark.slow
SAMPLES = 8


@pytest.fixture(scope="module", params=["embedded", "quartet"])
def engine(request):
    """A family's model, its vLLM backend with LM routing, and per-sample moved LM rows."""
    from serving.backends.vllm_backend import VllmBackend
    from serving.config import VllmOptions

    model = load_model(request.param)
    samples = load_split("test", limit=SAMPLES, seed=5)
    batch = model.labelled_batch([s.image for s in samples], [s.question for s in samples], [s.answer for s in samples])
    full = model.full_routing(batch, model.route(batch))
    lm_rows = [i for i, row in enumerate(model.routing_layout.rows) if row.kind == "lm"]
    moved = full.clone()
    generator = torch.Generator().manual_seed(0)
    moved[:, lm_rows, :model.config.lm_experts] = torch.softmax(
        2 * torch.randn(SAMPLES, len(lm_rows), model.config.lm_experts, generator=generator), -1)
    backend = VllmBackend(str(model.lm_path), VllmOptions(dtype="float32"), model.max_positions)
    loop = asyncio.new_event_loop()  # the engine's output loop lives on the loop of its first request
    backend.run = loop.run_until_complete
    yield model, batch, full, moved, lm_rows, backend

    async def shutdown() -> None:  # on the engine's loop, so that its output task ends and closes its sockets
        backend.shutdown()
        await asyncio.sleep(0.1)

    loop.run_until_complete(shutdown())
    loop.close()


def _rows(model, moved, lm_rows, i, positions="answer"):
    return LmRows({model.routing_layout.rows[r].layer: moved[i, r, :model.config.lm_experts].tolist()
                   for r in lm_rows}, positions)


async def _answer(backend, prompt, rows):
    from serving.backends.protocol import SamplingOptions

    deltas = [d async for d in backend.generate(prompt, SamplingOptions(max_tokens=4), rows)]
    return "".join(d.text for d in deltas).strip(), deltas[-1].lm_report


@pytest.mark.parametrize("positions", ["answer", "first"])
def test_greedy_answers_with_lm_rows_equal_the_transformers_path(engine, positions) -> None:
    model, batch, full, moved, lm_rows, backend = engine
    assert backend.applies_lm_rows
    pinned = tuple(True for _ in model.routing_layout.rows)
    expected = model.generate(batch, moved, pinned=pinned, lm_positions=positions)
    plain = model.generate(batch, full)
    assert expected != plain  # the rows change answers, so agreeing below means something
    prompts = model.prompt_embeds(batch, full)

    async def run():
        return await asyncio.gather(*(_answer(backend, prompts[i], _rows(model, moved, lm_rows, i, positions))
                                      for i in range(SAMPLES)))

    got = backend.run(run())
    assert [text for text, _ in got] == expected
    # The engine ran each row's top-k from the last prompt token on; with first at that token alone.
    for i, (_, report) in enumerate(got):
        for r in lm_rows:
            layer = model.routing_layout.rows[r].layer
            top = moved[i, r, :model.config.lm_experts].topk(model.lm.config.num_experts_per_tok).indices.tolist()
            tokens = report[layer]["tokens"]
            assert report[layer]["experts"] == top and (tokens == 1 if positions == "first" else tokens >= 1)


def test_a_mixed_batch_of_16_gives_each_request_what_it_gets_alone(engine) -> None:
    """Requests with different LM rows, applied at every answer token or at the first alone, and requests with
    none share engine steps, each routed as its own."""
    model, batch, full, moved, lm_rows, backend = engine
    prompts = model.prompt_embeds(batch, full)
    kinds = [None, (moved, "answer"), (moved, "first"), (full, "first"), (full, "answer")]

    def rows(i):
        kind = kinds[i % len(kinds)]
        return None if kind is None else _rows(model, kind[0], lm_rows, i % SAMPLES, kind[1])

    requests = [(i % SAMPLES, rows(i)) for i in range(16)]

    async def together():
        return await asyncio.gather(*(_answer(backend, prompts[i], rows) for i, rows in requests))

    async def alone():
        return [await _answer(backend, prompts[i], rows) for i, rows in requests]

    assert backend.run(together()) == backend.run(alone())
    plain = model.generate(batch, full)
    assert [backend.run(_answer(backend, prompts[i], None))[0] for i in range(SAMPLES)] == plain


def test_rows_that_do_not_fit_the_model_are_refused_before_the_engine(engine) -> None:
    from serving.backends.protocol import LmRoutingRefused

    model, batch, full, moved, lm_rows, backend = engine
    prompt = model.prompt_embeds(batch, full)[0]
    experts = model.config.lm_experts
    for rows in ({99: [1 / experts] * experts}, {0: [1.0] + [0.0] * experts}, {0: [0.5] * experts}):
        with pytest.raises(LmRoutingRefused):
            backend.run(_answer(backend, prompt, LmRows(rows)))


def test_the_engine_takes_exactly_r2t2s_lm_positions() -> None:
    """The extension (which imports nothing of r2t2) knows the same positions, and refuses any other at the
    engine's front door."""
    from r2t2.engine_prompt import LM_POSITIONS
    from serving.vllm_plugin import EXTRA_KEY, POSITIONS
    from serving.vllm_plugin.slots import parse

    assert POSITIONS == LM_POSITIONS
    extra = {"key": "r", "layers": {"0": [0.5, 0.5]}, "prompt_len": 3}
    assert parse({**extra, "positions": "first"}, None).positions == "first"
    for positions in (None, "last"):
        with pytest.raises(ValueError, match=f"{EXTRA_KEY}: positions"):
            parse({**extra, "positions": positions}, None)
