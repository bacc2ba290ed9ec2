"""The GPU check: graph and eager engines route alike, then the skeleton (or the real model) served on the GPU.

    .venv/bin/python -m bench.gpu_check                       # the 4-layer skeleton, written on first use
    .venv/bin/python -m bench.gpu_check --checkpoint /models/qwen3-vl-30b-a3b --layers 0

On a CUDA machine with the GPU profile installed (`make install PROFILE=gpu`), in about five minutes:
1. starts one vLLM engine eagerly and one with CUDA graphs (`enforce_eager` false) on the checkpoint, sends both
   the same 16 requests (8 with random LM rows, at every answer token or at the first alone, 8 without) and 8
   base-routing reads, and prints whether the tokens, the experts each engine reports and the base routings
   (to 1e-3) agree;
2. serves it with `bench.skeleton_bench --gpu` (re-router and generator on the GPU, bfloat16, CUDA graphs,
   the re-router holding only the layers it re-routes) and prints start-up time, each process's host and GPU
   memory, and none / kernel / NGD throughput and p50 at concurrency 1 and 16.
Without a GPU, `--cpu` runs step 1 on the CPU build with the compiled engine in place of CUDA graphs (slow:
the compile alone takes minutes on 2 cores) and skips step 2.
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import torch

from serving.lifecycle.child_env import prepare_server_process


def engine_answers(checkpoint: str, eager: bool, prompts: list, rows: list, layers: tuple[int, ...],
                   dtype: str) -> tuple[list, list, float]:
    """Texts and reports of every request, the base routings read, and the engine's start-up seconds."""
    from serving.backends.protocol import SamplingOptions
    from serving.backends.vllm_backend import VllmBackend
    from serving.config import VllmOptions

    started = time.monotonic()
    backend = VllmBackend(checkpoint, VllmOptions(dtype=dtype, enforce_eager=eager, kv_cache_gib=2,
                                                  gpu_memory_utilization=0.4), 2048, engine_input="text+image")
    up = time.monotonic() - started

    async def one(prompt, lm_rows):  # noqa: ANN001
        deltas = [d async for d in backend.generate(prompt, SamplingOptions(max_tokens=4), lm_rows)]
        return "".join(d.text for d in deltas), deltas[-1].lm_report

    async def run():
        answers = asyncio.gather(*(one(p, r) for p, r in zip(prompts, rows)))
        bases = asyncio.gather(*(backend.router_distributions(p, layers) for p in prompts[:8]))
        return await answers, await bases

    loop = asyncio.new_event_loop()
    try:
        answers, bases = loop.run_until_complete(run())
    finally:
        backend.shutdown()
        loop.close()
    return answers, bases, up


def graph_and_eager(checkpoint: str, dtype: str) -> bool:
    from r2t2.data import load_split
    from r2t2.engine_prompt import LmRows
    from r2t2.model.image_text_model import ImageTextModel

    model = ImageTextModel(checkpoint, weights="tail")  # the processor and the routed layers; no engine weights
    layers, experts = model.routed_layers, model.routing_shape[1]
    samples = load_split("test", limit=16, seed=3)
    prompts = [model.engine_prompts(model.encode_query(s.image, s.question).batch, None)[0] for s in samples]
    generator = torch.Generator().manual_seed(0)
    rows = [None if i % 2 else LmRows({layer: torch.softmax(3 * torch.randn(experts, generator=generator), 0).tolist()
                                       for layer in layers}, "answer" if i % 4 else "first") for i in range(16)]
    eager = engine_answers(checkpoint, True, prompts, rows, layers, dtype)
    graphs = engine_answers(checkpoint, False, prompts, rows, layers, dtype)
    same_answers = eager[0] == graphs[0]
    same_bases = all(max(abs(a - b) for layer in layers for a, b in zip(x[layer], y[layer])) < 1e-3
                     for x, y in zip(eager[1], graphs[1]))
    print(f"engine up: eager {eager[2]:.0f} s, {'compiled' if not torch.cuda.is_available() else 'CUDA graphs'} "
          f"{graphs[2]:.0f} s")
    print(f"16 requests (8 with LM rows): tokens and reported experts {'agree' if same_answers else 'DIFFER'}; "
          f"8 base routings {'agree' if same_bases else 'DIFFER'} to 1e-3")
    if not same_answers:
        for i, (a, b) in enumerate(zip(eager[0], graphs[0])):
            if a != b:
                print(f"  request {i}: eager {a} | graphs {b}")
    return same_answers and same_bases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint directory (default: the skeleton)")
    parser.add_argument("--layers", type=int, default=4, help="the skeleton's layers when no --checkpoint")
    parser.add_argument("--cpu", action="store_true", help="no GPU: step 1 with the compiled CPU engine only")
    args = parser.parse_args()
    prepare_server_process()
    from r2t2.model import resolve_checkpoint

    checkpoint = str(resolve_checkpoint(args.checkpoint or f"qwen3vl-a3b-skeleton-L{args.layers}"))
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --cpu")
    agree = graph_and_eager(checkpoint, "float32" if args.cpu else "bfloat16")
    if not args.cpu:
        served = ["--checkpoint", checkpoint] if args.checkpoint else ["--layers", str(args.layers)]
        subprocess.run([sys.executable, "-m", "bench.skeleton_bench", "--gpu", *served, "--requests", "32"], check=True)
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
