"""Where a query's base LM routing comes from: the re-router's own forward, or the engine's prefill.

    .venv/bin/python -m bench.base_routing_bench --checkpoint qwen3vl-a3b-skeleton-L2 --queries 16

For `--queries` reference questions of a Qwen3-VL-MoE checkpoint (a skeleton by name, or a directory), side by
side: (a) the re-router's forward (`weights: full`: the whole model in float32, up to the routed layers'
routers at the last prompt token) and (b) the engine's (a one-token request that reads the routers in vLLM,
`VllmBackend.router_distributions`), each followed by the answer the engine generates (`--max-tokens`), and
the answer alone for reference, each with the engine's prefix cache emptied first (a question never asked).
Prints the median seconds of each, the extra seconds per request each way of getting the base routing
costs, the largest difference between the two routings, and the weights each way holds in the re-router. One query at a time; the engine runs eagerly in bfloat16 with a 2 GiB KV cache.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from r2t2.compat import install_torchvision_fix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="qwen3vl-a3b-skeleton-L2")
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=2)
    args = parser.parse_args()
    install_torchvision_fix()
    import torch

    from r2t2.data import load_split
    from r2t2.model import load_model
    from serving.backends.protocol import SamplingOptions
    from serving.backends.vllm_backend import VllmBackend
    from serving.config import VllmOptions

    model = load_model(args.checkpoint)
    weights_gb = sum(p.numel() * p.element_size() for p in model.model.parameters()) / 1e9
    samples = load_split("reference", limit=args.queries, seed=5)
    batches = [model.encode_query(s.image, s.question).batch for s in samples]
    prompts = [model.engine_prompts(b, None)[0] for b in batches]
    backend = VllmBackend(str(model.lm_path), VllmOptions(dtype="bfloat16", kv_cache_gib=2), 2048,
                          engine_input=model.engine_input)
    options = SamplingOptions(max_tokens=args.max_tokens)
    loop = asyncio.new_event_loop()

    def answer(prompt) -> None:  # noqa: ANN001 (an engine prompt)
        async def run() -> None:
            async for _ in backend.generate(prompt, options, None):
                pass
        loop.run_until_complete(run())

    def cold(step) -> float:  # noqa: ANN001 (a callable)
        """Seconds of `step` with the engine's prefix cache emptied first, as for a question never asked."""
        loop.run_until_complete(backend._running_engine().reset_prefix_cache())
        started = time.perf_counter()
        step()
        return time.perf_counter() - started

    def from_re_router(batch, prompt):  # noqa: ANN001, ANN202
        with torch.no_grad():
            own = model.base_routing(batch)
        answer(prompt)
        return own

    def from_engine(prompt):  # noqa: ANN001, ANN202
        rows = loop.run_until_complete(backend.router_distributions(prompt, model.routed_layers))
        answer(prompt)  # its prompt's keys and values are in the prefix cache now
        return torch.tensor([rows[layer] for layer in model.routed_layers])

    times: dict[str, list[float]] = {"answer alone": [], "(a) re-router forward, answer": [],
                                     "(b) engine read, answer": []}
    largest = 0.0
    try:
        answer(prompts[0])  # warm-up
        for batch, prompt in zip(batches, prompts):
            routings = {}
            times["answer alone"].append(cold(lambda: answer(prompt)))
            times["(a) re-router forward, answer"].append(cold(lambda: routings.update(a=from_re_router(batch, prompt))))
            times["(b) engine read, answer"].append(cold(lambda: routings.update(b=from_engine(prompt))))
            largest = max(largest, (routings["a"] - routings["b"]).abs().max().item())
    finally:
        async def shutdown() -> None:  # on the engine's loop, so its output task ends before the loop closes
            backend.shutdown()
            await asyncio.sleep(0.1)

        loop.run_until_complete(shutdown())
        loop.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    alone = medians["answer alone"]
    for name, value in medians.items():
        extra = "" if name == "answer alone" else f"  (+{(value - alone) * 1000:.1f} ms for the base routing)"
        print(f"{name:32s} {value * 1000:8.1f} ms{extra}")
    print(f"largest |engine - re-router| routing entry: {largest:.2e} (the engine in bfloat16, the re-router in float32)")
    print(f"re-router weights for (a): {weights_gb:.2f} GB; for (b): none beyond what re-routing needs")


if __name__ == "__main__":
    main()
