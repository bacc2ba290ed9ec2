"""Throughput and latency of a running r2t2 server, per strategy and concurrency level.

    .venv/bin/python -m bench.serving_bench http://127.0.0.1:8000 --requests 32

Sends easy-VQA test questions (with their images) as OpenAI chat requests and reports requests/s,
p50 and p99 latency, errors and the mean re-routing batch size at concurrency 1, 4 and 16 for strategies
none, kernel and ngd, with each strategy's throughput and median latency as a ratio of none's at the same
level. Each level's CPU budget follows: the machine's busy share (200 % is two busy cores), CPU-ms per
request in each part of the server (bench/cpu_meter.py) and in each re-routing stage (the records' batch
timings over the batch size), the answers generated per request, and the compute bound (cores over CPU per
request) with the measured throughput as a share of it. Levels run level by level (all strategies at one concurrency, then the next), so the ratios compare
figures taken minutes apart at most. `--json FILE` writes every figure for scripts. Loopback servers only:
this is a load generator.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import httpx
import psutil

from bench import cpu_meter
from r2t2.compat import install_torchvision_fix

MAX_REQUESTS = 1000


@dataclass(frozen=True)
class LevelResult:
    strategy: str
    concurrency: int
    requests: int
    errors: int
    requests_per_s: float
    p50_s: float
    p99_s: float
    mean_batch_size: float  # requests re-routed together, as the r2t2 records report it
    busy_percent: float  # the machine's busy share over the level (100 per busy core)
    cpu_ms_per_request: float  # the machine's busy CPU over the level, per answered request
    cpu_ms_by_part: dict[str, float]  # ... per part of the server (processes grouped by what they host)
    stage_ms: dict[str, float]  # re-router stages per request: a batch's stage time over its size (one thread)
    answers_per_request: float  # generations per request: 2 where the answer check weighed both answers
    skipped_share: float  # requests whose re-routing was decided before the strategy's steps

    def bound_requests_per_s(self, cores: int) -> float:
        """The compute bound: every core busy at this level's CPU per request."""
        return 1000.0 * cores / self.cpu_ms_per_request


def require_loopback(url: str) -> str:
    """The base URL without a trailing slash; refuses anything but a loopback host."""
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to load-test {host!r}: only loopback servers (127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def easy_vqa_requests(count: int) -> list[tuple[str, str]]:
    """(question, PNG data URL) pairs from the easy-VQA test split, deterministic order."""
    import easy_vqa

    questions, _, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    pairs = []
    for question, image_id in list(zip(questions, image_ids))[:count]:
        with open(paths[image_id], "rb") as handle:
            pairs.append((question, "data:image/png;base64," + base64.b64encode(handle.read()).decode()))
    return pairs


def shifted_requests(count: int) -> list[tuple[str, str]]:
    """(question, PNG data URL) pairs of the rephrased split: the test images asked in a held-out wording, the load
    re-routing exists for (the evidence guard decides few of them before the steps). Seeded, balanced over tasks."""
    import io

    from r2t2.data import load_split

    pairs = []
    for sample in load_split("rephrased", limit=count, seed=0):
        buffer = io.BytesIO()
        sample.image.save(buffer, format="PNG")
        pairs.append((sample.question, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()))
    return pairs


LOADS = {"test": easy_vqa_requests, "shifted": shifted_requests}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def run_level(client: httpx.AsyncClient, base: str, model: str, pairs: list[tuple[str, str]],
                    strategy: str, concurrency: int, max_tokens: int) -> LevelResult:
    """Send every pair once with at most `concurrency` in flight."""
    from serving.pipeline.evaluate import parse_variant  # loads r2t2's model code (torchvision): only where requests are built

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    records: list[dict] = []
    errors = 0

    async def one(question: str, url: str) -> None:
        nonlocal errors
        body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "r2t2": parse_variant(strategy),
                "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                          {"type": "image_url", "image_url": {"url": url}}]}]}
        async with gate:
            started = time.perf_counter()
            reply = await client.post(f"{base}/v1/chat/completions", json=body)
            if reply.status_code == 200:
                latencies.append(time.perf_counter() - started)
                records.append(reply.json()["r2t2"])
            else:
                errors += 1

    before = cpu_meter.snapshot()
    started = time.perf_counter()
    await asyncio.gather(*(one(q, u) for q, u in pairs))
    elapsed = time.perf_counter() - started
    cpu = cpu_meter.used(before, cpu_meter.snapshot(), elapsed)
    if not latencies:
        raise SystemExit(f"every {strategy} request failed at concurrency {concurrency}")
    answered = len(latencies)
    return LevelResult(strategy, concurrency, len(pairs), errors, answered / elapsed,
                       statistics.median(latencies), percentile(latencies, 99),
                       statistics.mean(r.get("batch_size") or 1 for r in records), cpu.busy_percent,
                       1000.0 * cpu.machine_s / answered,
                       {part: 1000.0 * s / answered for part, s in cpu.by_part.items()}, stage_ms(records),
                       statistics.mean(answers_generated(r) for r in records),
                       sum(skipped_before_steps(r) for r in records) / answered)


STAGES = ("encode", "embed", "search", "reroute")


def stage_ms(records: list[dict]) -> dict[str, float]:
    """Mean re-router milliseconds per request in each stage: a stage's time is its batch's (one worker thread),
    shared by the batch's requests."""
    return {stage: 1000.0 * statistics.mean(((r.get("timings") or {}).get(stage) or 0.0) / (r.get("batch_size") or 1)
                                            for r in records)
            for stage in STAGES}


def answers_generated(record: dict) -> int:
    """How many answers the request's reply cost: two where the answer check (or compare_with_none) weighed the
    router's answer against the re-routed one, else one."""
    guard = record.get("guard") or {}
    return 2 if guard.get("answer") is not None or "answer_without_rerouting" in record else 1


def skipped_before_steps(record: dict) -> bool:
    """The guard decided before the strategy's steps, so they were not run."""
    return bool((record.get("guard") or {}).get("decided_before_steps"))


async def run(base: str, requests: int, concurrency: list[int], strategies: list[str], max_tokens: int,
              timeout_s: float, model: str | None = None, load: str = "test") -> list[LevelResult]:
    pairs = LOADS[load](requests)
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        models = (await client.get(f"{base}/v1/models")).json()["data"]
        model = model or models[0]["id"]
        await run_level(client, base, model, pairs[:1], strategies[0], 1, max_tokens)  # warm-up
        return [await run_level(client, base, model, pairs, strategy, level, max_tokens)
                for level in concurrency for strategy in strategies]


def ratios_to_none(results: list[LevelResult]) -> list[dict[str, float | str | int]]:
    """Throughput and median latency of every strategy over none's at the same concurrency."""
    none = {r.concurrency: r for r in results if r.strategy == "none"}
    return [{"strategy": r.strategy, "concurrency": r.concurrency,
             "throughput_vs_none": r.requests_per_s / none[r.concurrency].requests_per_s,
             "p50_vs_none": r.p50_s / none[r.concurrency].p50_s}
            for r in results if r.concurrency in none]


def print_cpu_budget(results: list[LevelResult]) -> None:
    """Per level: the machine's busy share, CPU-ms per request (whole machine, per part, per re-router stage),
    answers generated per request, and the throughput as a share of the compute bound."""
    cores = psutil.cpu_count() or 1
    parts = sorted({part for r in results for part in r.cpu_ms_by_part}, key=lambda p: -max(
        r.cpu_ms_by_part.get(p, 0.0) for r in results))
    print(f"\nCPU budget ({cores} cores; CPU-ms per answered request; stages: re-router batch time / batch size)")
    header = (f"{'strategy':<12}{'conc':>5}{'busy %':>8}{'CPU-ms':>8}{'bound':>7}{'share':>7}{'answers':>8}"
              f"{'skipped':>8}" + "".join(f"{p[:11]:>12}" for p in parts) + "".join(f"{s:>9}" for s in STAGES))
    print(header)
    for r in results:
        bound = r.bound_requests_per_s(cores)
        print(f"{r.strategy[:12]:<12}{r.concurrency:>5}{r.busy_percent:>8.0f}{r.cpu_ms_per_request:>8.1f}"
              f"{bound:>7.1f}{r.requests_per_s / bound:>7.2f}{r.answers_per_request:>8.2f}{r.skipped_share:>8.2f}"
              + "".join(f"{r.cpu_ms_by_part.get(p, 0.0):>12.1f}" for p in parts)
              + "".join(f"{r.stage_ms[s]:>9.1f}" for s in STAGES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=32, help=f"requests per level (1..{MAX_REQUESTS})")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--strategies", nargs="+", default=["none", "kernel", "ngd"],
                        help="strategies, or variants with request options: kernel:target=lm:guard=false")
    parser.add_argument("--model", default=None, help="the served model to load (default: the first listed)")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    parser.add_argument("--load", choices=tuple(LOADS), default="test",
                        help="test: easy-VQA test questions (in distribution); shifted: the rephrased split's held-out "
                             "wording of the test images")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    install_torchvision_fix()  # the strategies are read by r2t2's evaluation code, which imports torchvision
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be in 1..{MAX_REQUESTS}")
    if any(c < 1 or c > 64 for c in args.concurrency):
        parser.error("--concurrency levels must be in 1..64")
    base = require_loopback(args.url)
    results = asyncio.run(run(base, args.requests, args.concurrency, args.strategies, args.max_tokens,
                              args.timeout, args.model, args.load))
    print(f"load: {args.load}")
    ratios = {(x["strategy"], x["concurrency"]): x for x in ratios_to_none(results)}
    width = max(10, *(len(s) + 2 for s in args.strategies))
    print(f"{'strategy':<{width}}{'conc':>6}{'reqs':>6}{'errors':>8}{'req/s':>9}{'p50 s':>9}{'p99 s':>9}{'batch':>7}"
          f"{'req/s vs none':>15}{'p50 vs none':>13}{'decided early':>15}")
    for r in results:
        ratio = ratios.get((r.strategy, r.concurrency))
        versus = f"{ratio['throughput_vs_none']:>15.2f}{ratio['p50_vs_none']:>13.2f}" if ratio else " " * 28
        print(f"{r.strategy:<{width}}{r.concurrency:>6}{r.requests:>6}{r.errors:>8}{r.requests_per_s:>9.2f}"
              f"{r.p50_s:>9.3f}{r.p99_s:>9.3f}{r.mean_batch_size:>7.1f}{versus}{r.skipped_share:>15.2f}")
    print_cpu_budget(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"levels": [asdict(r) for r in results], "ratios_to_none": list(ratios.values())}, handle,
                      indent=2)


if __name__ == "__main__":
    main()
