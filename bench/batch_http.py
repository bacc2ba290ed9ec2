"""Batch invariance over HTTP: the same mixed requests sent one at a time, then 16 at a time, to one server.

    .venv/bin/python -m bench.batch_http [--split rephrased] [--requests 200] [--concurrency 16]

Starts the embedded default server (`python -m serving.run`, its own port, the default index store), sends each
request alone, then all of them with `--concurrency` in flight (so the re-router batches them), and prints how many
answers differ and the largest difference between a request's two routings. The requests take turns among
strategies and targets (none, kernel, NGD, NGD on both vision and LM rows), so batches mix them.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import tempfile
from pathlib import Path

import httpx

from bench.cluster import start_server, stop_server
from deploy.local_cluster import free_port
from r2t2.compat import install_torchvision_fix

VARIANTS = ({"strategy": "none"}, {"strategy": "kernel"}, {"strategy": "ngd"}, {"strategy": "ngd", "target": "both"})
MODEL = "r2t2-embedded"


def bodies(split: str, count: int) -> list[dict]:
    """Chat bodies for `count` questions of `split`, strategies in turn."""
    from r2t2.data import load_split

    out = []
    for number, sample in enumerate(load_split(split, limit=count, seed=3)):
        buffer = io.BytesIO()
        sample.image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        out.append({"model": MODEL, "max_tokens": 4, "temperature": 0, "r2t2": VARIANTS[number % len(VARIANTS)],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": sample.question},
                                                              {"type": "image_url", "image_url": {"url": url}}]}]})
    return out


async def send_all(base: str, requests: list[dict], concurrency: int) -> list[tuple[str, dict]]:
    """(answer, r2t2 record) of every request, at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, body: dict) -> tuple[str, dict]:
        async with gate:
            reply = await client.post(f"{base}/v1/chat/completions", json=body)
            reply.raise_for_status()
            found = reply.json()
            return found["choices"][0]["message"]["content"], found["r2t2"]

    async with httpx.AsyncClient(timeout=300) as client:
        return await asyncio.gather(*(one(client, body) for body in requests))


def weights(record: dict) -> list[float]:
    """Every routing weight of a record, in its order (one row: {expert: weight}; several: {row: {expert: weight}})."""
    flat: list[float] = []
    for value in (record.get("routing") or {}).values():
        flat += list(value.values()) if isinstance(value, dict) else [value]
    return flat


def compare(alone: list[tuple[str, dict]], together: list[tuple[str, dict]]) -> dict:
    gaps = [max((abs(a - b) for a, b in zip(weights(x[1]), weights(y[1]))), default=0.0)
            for x, y in zip(alone, together)]
    sizes = [record.get("batch_size") or 1 for _, record in together]
    return {"requests": len(alone), "answers_differ": sum(x[0] != y[0] for x, y in zip(alone, together)),
            "max_routing_gap": max(gaps), "routings_over_1e-6": sum(gap > 1e-6 for gap in gaps),
            "mean_batch_size": round(sum(sizes) / len(sizes), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="rephrased")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    install_torchvision_fix()
    requests = bodies(args.split, args.requests)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="r2t2-batch-http-") as scratch:
        server = start_server(["--port", str(port)], Path(scratch) / "server.log")
        try:
            base = f"http://127.0.0.1:{port}"
            alone = asyncio.run(send_all(base, requests, 1))
            together = asyncio.run(send_all(base, requests, args.concurrency))
        finally:
            stop_server(server)
    print(json.dumps(compare(alone, together)))


if __name__ == "__main__":
    main()
