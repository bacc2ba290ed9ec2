"""What r2t2 costs at Qwen3-VL-30B-A3B's widths: serve a skeleton, load it, and measure each process.

    .venv/bin/python -m bench.skeleton_bench --layers 2 4 --requests 32

For each layer count (or `--checkpoint DIR`, the real model): writes the random-weights skeleton if missing
(`r2t2 skeleton`), starts `r2t2 serve` on `deploy/qwen3vl-a3b-skeleton.yaml` with that skeleton (its
re-router holding the layers it re-routes alone, `weights: tail`, or `--weights full|none`), and reports the seconds to serving, every process's resident and
proportional memory (the server process, the re-router, the generator, its vLLM engine core), then
`bench.serving_bench`'s requests/s, p50 and errors for none, kernel and ngd at each concurrency, and each
strategy's median re-routing time from the records. `--gpu` serves with the re-router and generator on a
GPU (bfloat16, CUDA graphs) and adds each process's GPU memory. `--json FILE` keeps every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from bench import cpu_meter
from bench.serving_bench import easy_vqa_requests, run_level
from r2t2.cache import cache_root
from r2t2.compat import install_torchvision_fix

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "qwen3vl-a3b-skeleton.yaml"
ROLES = ("re-router", "generator", "engine core", "server process", "index manager")  # bench/cpu_meter.py's parts
START_TIMEOUT_S = 1800  # a first start writes the skeleton and answers its reference set


def server_config(checkpoint: str, port: int, index_dir: Path, weights: str, gpu: bool,
                  dtype: str | None = None) -> dict[str, Any]:
    """The shipped skeleton config serving `checkpoint` (a skeleton's name or a checkpoint directory), with this
    run's port and index store, and the GPU placement."""
    config = yaml.safe_load(CONFIG.read_text())
    entry = config["models"][0]
    entry["pipeline"] = {**entry["pipeline"], "checkpoint": checkpoint, "weights": weights}
    config.update(host="127.0.0.1", port=port, index_dir=str(index_dir))
    if weights == "none":  # the guard judges by a neighbour loss, which a re-router without weights refuses
        entry["r2t2_defaults"] = {**entry.get("r2t2_defaults", {}), "guard": False}
    if dtype is not None:
        config["rerouter"] = {**config.get("rerouter", {}), "dtype": dtype}
    if gpu:
        config["rerouter"] = {**config.get("rerouter", {}), "device": "cuda", "num_gpus": 0.2}
        config["generator"] = {**config.get("generator", {}), "num_gpus": 0.7}
        config["vllm"] = {**config.get("vllm", {}), "enforce_eager": False, "gpu_memory_utilization": 0.6}
    return config


def process_memory() -> dict[str, dict[str, float]]:
    """GB resident (RSS) and proportional (PSS: shared pages split between their users) per r2t2 process role."""
    found: dict[str, dict[str, float]] = {}
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        role = cpu_meter.part_of(line)
        if role not in ROLES:
            continue
        try:
            memory = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        entry = found.setdefault(role, {"rss_gb": 0.0, "pss_gb": 0.0})
        entry["rss_gb"] += memory.rss / 1e9
        entry["pss_gb"] += getattr(memory, "pss", memory.rss) / 1e9
    return {role: {k: round(v, 2) for k, v in entry.items()} for role, entry in found.items()}


def gpu_memory() -> dict[str, float]:
    """GB of GPU memory per process id, from nvidia-smi (empty without a GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {pid.strip(): round(float(mib) / 1024, 2) for pid, mib in (line.split(",") for line in out.splitlines() if line)}


def reroute_ms(records: list[dict]) -> float | None:
    times = [r["timings"]["reroute"] * 1000 for r in records if r.get("timings", {}).get("reroute") is not None]
    return round(statistics.median(times), 1) if times else None


async def load(base: str, requests: int, levels: list[int], strategies: list[str]) -> list[dict]:
    """`bench.serving_bench`'s levels, each with the median re-routing time its records report."""
    pairs = easy_vqa_requests(requests)
    out = []
    async with httpx.AsyncClient(timeout=600) as client:
        model = (await client.get(f"{base}/v1/models")).json()["data"][0]["id"]
        await run_level(client, base, model, pairs[:1], "none", 1, 2)  # warm-up
        for strategy in strategies:  # a strategy the server refuses is named with its reason, before any level
            probe = await client.post(f"{base}/v1/chat/completions", json=_probe(model, strategy, pairs[0]))
            if probe.status_code != 200:
                raise SystemExit(f"{strategy}: {probe.status_code} {probe.text}")
        for level in levels:
            for strategy in strategies:
                result = await run_level(client, base, model, pairs, strategy, level, 2)
                probe = await client.post(f"{base}/v1/chat/completions", json=_probe(model, strategy, pairs[0]))
                record = probe.json().get("r2t2", {}) if probe.status_code == 200 else {}
                out.append({"strategy": strategy, "concurrency": level, "requests_per_s": round(result.requests_per_s, 2),
                            "p50_s": round(result.p50_s, 3), "errors": result.errors,
                            "reroute_ms": reroute_ms([record])})
    return out


def _probe(model: str, strategy: str, pair: tuple[str, str]) -> dict:
    from serving.pipeline.evaluate import parse_variant

    question, url = pair
    return {"model": model, "max_tokens": 2, "temperature": 0, "r2t2": parse_variant(strategy),
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}


def measure(checkpoint: str, args: argparse.Namespace, work: Path, port: int) -> dict[str, Any]:
    """Serve `checkpoint`, load it, and measure; the server is stopped afterwards."""
    config_path = work / f"server-{port}.yaml"
    config_path.write_text(yaml.safe_dump(server_config(checkpoint, port, Path(args.index_dir), args.weights, args.gpu,
                                                         args.dtype)))
    log = work / f"server-{port}.log"
    started = time.monotonic()
    with log.open("wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "serving.run", "--config", str(config_path)], cwd=ROOT,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while "r2t2 serving on" not in log.read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                raise SystemExit(f"{checkpoint}: the server did not start; its log ends:\n{tail}")
            time.sleep(2)
        up_s = time.monotonic() - started
        idle = process_memory()
        levels = asyncio.run(load(f"http://127.0.0.1:{port}", args.requests, args.concurrency, args.strategies))
        return {"checkpoint": checkpoint, "weights": args.weights, "start_s": round(up_s, 1), "memory_idle": idle,
                "memory_loaded": process_memory(), "gpu_memory": gpu_memory(), "levels": levels}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4], help="skeletons to serve, by layer count")
    parser.add_argument("--checkpoint", default=None, help="serve this checkpoint directory instead (the real model)")
    parser.add_argument("--weights", choices=("tail", "full", "none"), default="tail",
                        help="what the re-router loads; with none, send kernel with a fixed alpha (kernel:alpha=0.5)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="the re-router's weights (default: the config's); a CPU without bfloat16 arithmetic "
                             "runs bfloat16 about 10x slower than float32")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--strategies", nargs="+", default=["none", "kernel", "ngd"],
                        help="names or variants as `r2t2 eval` takes them (kernel:alpha=0.5)")
    parser.add_argument("--gpu", action="store_true", help="re-router and generator on the GPU, CUDA graphs on")
    parser.add_argument("--index-dir", default=str(cache_root() / "skeleton-indexes"),
                        help="kept between runs: a skeleton's first start builds its index there")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    install_torchvision_fix()  # the load generator reads strategies with r2t2's code, which imports torchvision
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the server it started is stopped too
    results = []
    with tempfile.TemporaryDirectory(prefix="r2t2-skeleton-") as work:
        checkpoints = [args.checkpoint] if args.checkpoint else [f"qwen3vl-a3b-skeleton-L{n}" for n in args.layers]
        for number, checkpoint in enumerate(checkpoints):
            result = measure(checkpoint, args, Path(work), 8400 + number)
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
