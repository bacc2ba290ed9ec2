"""A request's base LM routing read from the vLLM engine's prefill equals what the transformers model computes."""
import asyncio

import pytest
import torch

from r2t2.data import load_split
from r2t2.engine_prompt import LmRows
from r2t2.model import load_model

pytestmark = pytest.mark.slow
SAMPLES = 6


@pytest.fixture(scope="module")
def engine():
    from serving.backends.vllm_backend import VllmBackend
    from serving.config import VllmOptions

    torch.set_num_threads(1)
    model = load_model("qwen3vl")
    samples = load_split("test", limit=SAMPLES, seed=11)
    queries = [model.encode_query(s.image, s.question).batch for s in samples]
    backend = VllmBackend(str(model.lm_path), VllmOptions(dtype="float32"), model.max_positions,
                          engine_input=model.engine_input)
    loop = asyncio.new_event_loop()  # the engine's output loop lives on the loop of its first request
    yield model, queries, backend, loop

    async def shutdown() -> None:
        backend.shutdown()
        await asyncio.sleep(0.1)

    loop.run_until_complete(shutdown())
    loop.close()


def test_the_engines_base_routing_is_the_models(engine) -> None:
    """Six concurrent probes, and beside them a request re-routed in the same steps: each probe gets its own
    prompt's routers, unaffected by the other's rows."""
    from serving.backends.protocol import SamplingOptions

    model, queries, backend, loop = engine
    layers = tuple(row.layer for row in model.routing_layout.rows)
    expected = [model.base_routing(query) for query in queries]
    prompts = [model.engine_prompts(query, expected[i])[0] for i, query in enumerate(queries)]
    moved = LmRows({layer: [1.0] + [0.0] * (model.routing_shape[1] - 1) for layer in layers}, "answer")

    async def run():
        rerouted = [d async for d in backend.generate(prompts[0], SamplingOptions(max_tokens=2), moved)]
        return rerouted, await asyncio.gather(*(backend.router_distributions(p, layers) for p in prompts))

    async def together():
        probes = asyncio.gather(*(backend.router_distributions(p, layers) for p in prompts))
        rows = [d async for d in backend.generate(prompts[0], SamplingOptions(max_tokens=2), moved)]
        return rows, await probes

    for call in (run, together):
        _, found = loop.run_until_complete(call())
        for i, rows in enumerate(found):
            got = torch.tensor([rows[layer] for layer in layers])
            assert got.shape == expected[i].shape
            assert torch.allclose(got, expected[i], atol=2e-3), (i, (got - expected[i]).abs().max())


def test_a_probe_of_a_layer_the_model_does_not_have_is_an_error(engine) -> None:
    model, queries, backend, loop = engine
    prompt = model.engine_prompts(queries[0], model.base_routing(queries[0]))[0]
    with pytest.raises(RuntimeError, match="read the routers of layers"):
        loop.run_until_complete(backend.router_distributions(prompt, (0, 99)))


def test_a_re_router_holding_only_the_tail_re_routes_from_the_engines_base_routing(engine, tmp_path) -> None:
    """A pipeline of the model loaded as its tail (`weights: tail`) reads its queries' base routing from the
    engine and re-routes with NGD as the whole model does, from references whose states the index kept."""
    from indexes.embedders import neighbour_embedder
    from indexes.specs import build_from_spec
    from indexes.store import IndexStore
    from serving.pipeline.factory import load_pipeline
    from serving.pipeline.query import Query

    model, _, backend, loop = engine
    store = IndexStore(tmp_path)
    build_from_spec("refs", {"source": "builtin", "split": "reference", "limit": 96, "seed": 0}, model,
                    neighbour_embedder(None, model), store)
    options = {"checkpoint": "qwen3vl", "index_dir": str(tmp_path), "default_index": "refs",
               "build_default_index": False}
    whole, tail = load_pipeline(options), load_pipeline({**options, "weights": "tail"})
    assert tail.info()["base_from_engine"] and not whole.info()["base_from_engine"]
    samples = load_split("paraphrase-val", limit=4, seed=2)
    config = tail.config_for({"strategy": "ngd", "steps": 3})
    queries = [Query(s.image, s.question, config, None) for s in samples]
    refused = tail.rerouted_many(queries[:1])[0]
    assert isinstance(refused, RuntimeError) and "read from the generation engine" in str(refused)

    def engine_base(prompts, layers):
        async def read():
            return await asyncio.gather(*(backend.router_distributions(p, layers) for p in prompts))
        return loop.run_until_complete(read())

    tail.use_engine_base(engine_base)
    for expected, got in zip(whole.rerouted_many(queries), tail.rerouted_many(queries)):
        assert torch.allclose(got.result.base_routing, expected.result.base_routing, atol=2e-3)
        assert got.result.neighbours and [n.id for n in got.result.neighbours] == [n.id for n in expected.result.neighbours]
        assert torch.allclose(got.result.routing, expected.result.routing, atol=2e-2)
    answer_space = tail.rerouted_many([Query(samples[0].image, samples[0].question,
                                             tail.config_for({"strategy": "answer_space"}), None)])[0]
    assert isinstance(answer_space, ValueError) and "needs the whole model" in str(answer_space)

    bare = load_pipeline({**options, "weights": "none"})  # no weights: kernel with a fixed alpha, never a loss
    bare.use_engine_base(engine_base)
    kernel = bare.config_for({"strategy": "kernel", "alpha": 0.25, "guard": False})
    for expected, got in zip(whole.rerouted_many([Query(s.image, s.question, kernel, None) for s in samples]),
                             bare.rerouted_many([Query(s.image, s.question, kernel, None) for s in samples])):
        assert [n.id for n in got.result.neighbours] == [n.id for n in expected.result.neighbours]
        assert torch.allclose(got.result.routing, expected.result.routing, atol=2e-3)
    # NGD, the guard: refused once a loss is needed (guard_min_shift 0: no request settled before any loss).
    for refused in (bare.config_for({"strategy": "ngd", "steps": 3, "guard_min_shift": 0.0}),
                    bare.config_for({"strategy": "kernel", "alpha": 0.25, "guard": True, "guard_min_shift": 0.0})):
        (outcome,) = bare.rerouted_many([Query(samples[0].image, samples[0].question, refused, None)])
        assert isinstance(outcome, ValueError) and "weights: none" in str(outcome)
