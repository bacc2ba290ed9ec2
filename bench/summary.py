"""The summary at the top of BENCHMARKS.md, measured from the shipped defaults by one command.

    make bench        # = .venv/bin/python -m bench.summary  (about 30 minutes on 2 cores)

Runs, one after the other on a quiet machine: `r2t2 eval` of every shipped family's strategies on the test,
paraphrase and held-out rephrased splits (the family's shipped defaults, 95 % intervals); the start-up bench (a
first start that builds the default index, then restarts); the embedded default server under the serving bench
on an in-distribution and a shifted load at concurrency 1, 4 and 16, with each server part's memory after it.
Every figure goes to bench/results/summary.json; the page's summary and its plots are rendered from that file
(`--render-only` renders again without measuring). The learning curves of verified answers take an hour and come
from `make bench-feedback`; the summary shows the last ones recorded, with their date.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import psutil

from bench.cluster import start_server, stop_server
from bench.memory_meter import memory_by_part
from deploy.local_cluster import free_port
from r2t2.compat import install_torchvision_fix

RESULTS = Path("bench/results/summary.json")
SPLITS = ("test", "paraphrase", "rephrased")
# Per family: the strategies compared and the questions per split (balanced over tasks). Sized so the whole run
# stays near 30 minutes on 2 cores; qwen3vl's questions cost about three times the others'.
FAMILIES: dict[str, tuple[tuple[str, ...], int]] = {
    "embedded": (("none", "kernel", "ngd", "oracle"), 150),
    "quartet": (("none", "kernel", "ngd", "oracle"), 150),
    "qwen3vl": (("none", "answer_space", "kernel", "ngd", "oracle"), 60),
}
STRATEGY_FIGURES = ("accuracy", "interval", "vs_none", "fixed", "broken", "gap_closed", "median_ms", "fallbacks")
SERVED_STRATEGIES = ("none", "kernel", "ngd")
CONCURRENCY = (1, 4, 16)


def served_default(family: str) -> str:
    """The strategy a family serves when a request names none: its own `r2t2_defaults`, else RerouteConfig's."""
    from r2t2.model.config import load_config
    from r2t2.routing.config import RerouteConfig

    return load_config(family).r2t2_defaults.get("strategy", RerouteConfig().strategy)


def measure_accuracy(family: str, strategies: tuple[str, ...], limit: int, scratch: Path) -> dict:
    """`r2t2 eval` of one family on every split, as a user runs it; the figures the summary shows."""
    out = scratch / f"eval-{family}.json"
    subprocess.run([sys.executable, "-m", "serving.cli.main", "eval", "--model", family, "--strategies",
                    ",".join(strategies), "--split", ",".join(SPLITS), "--limit", str(limit), "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    return {"default": served_default(family), "limit": limit,
            "splits": {split: {"samples": found["samples"],
                               "strategies": {name: {k: v for k, v in figures.items() if k in STRATEGY_FIGURES}
                                              for name, figures in found["strategies"].items()}}
                       for split, found in report["splits"].items()}}


def measure_startup(index_dir: Path, restarts: int, scratch: Path) -> list[dict]:
    """bench/startup_bench.py: a first start into an empty index store, then `restarts` restarts reusing it."""
    out = scratch / "startup.json"
    subprocess.run([sys.executable, "-m", "bench.startup_bench", "--restarts", str(restarts), "--index-dir",
                    str(index_dir), "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def measure_serving(index_dir: Path, requests: int, scratch: Path) -> tuple[dict, dict]:
    """Start the embedded default server, run the serving bench on both loads, read each part's memory, stop it."""
    port = free_port()
    server = start_server(["--port", str(port)], scratch / "server.log", {"R2T2_INDEX_DIR": str(index_dir)})
    try:
        loads = {}
        for load in ("test", "shifted"):
            out = scratch / f"serving-{load}.json"
            subprocess.run([sys.executable, "-m", "bench.serving_bench", f"http://127.0.0.1:{port}", "--requests",
                            str(requests), "--concurrency", *map(str, CONCURRENCY), "--strategies",
                            *SERVED_STRATEGIES, "--load", load, "--json", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            loads[load] = json.loads(out.read_text())
        time.sleep(5)  # let the last batch's buffers go back before memory is read
        memory = {part: asdict(found) for part, found in memory_by_part().items()}
    finally:
        stop_server(server)
    return loads, memory


def machine() -> dict:
    """What the figures were measured on."""
    import torch
    import vllm

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {"cpu": model, "cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
            "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__, "vllm": vllm.__version__}


def commit() -> dict:
    """The commit measured, and whether the tree differed from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    return {"commit": head or "unknown", "dirty": dirty}


def measure(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    results: dict = {"date": datetime.date.today().isoformat(), **commit(), "machine": machine(), "accuracy": {}}
    with tempfile.TemporaryDirectory(prefix="r2t2-summary-") as folder:
        scratch = Path(folder)
        for family, (strategies, limit) in FAMILIES.items():
            print(f"accuracy: {family} ...", flush=True)
            results["accuracy"][family] = measure_accuracy(family, strategies, max(6, round(limit * args.scale)),
                                                           scratch)
        index_dir = scratch / "indexes"
        print("start-up ...", flush=True)
        results["startup"] = measure_startup(index_dir, args.restarts, scratch)
        print("serving ...", flush=True)
        results["serving"], results["memory"] = measure_serving(index_dir, args.requests, scratch)
    results["wall_s"] = round(time.monotonic() - started)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where every figure is written (and read)")
    parser.add_argument("--page", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--plots", type=Path, default=Path("docs"), help="folder of the summary's PNG plots")
    parser.add_argument("--render-only", action="store_true", help="render the page from --results, measure nothing")
    parser.add_argument("--scale", type=float, default=1.0, help="questions per split, as a share of the sizes above")
    parser.add_argument("--requests", type=int, default=48, help="requests per serving level")
    parser.add_argument("--restarts", type=int, default=2)
    args = parser.parse_args(argv)
    install_torchvision_fix()  # before transformers or vLLM is imported here (the model's config, the versions)
    from bench.summary_page import write_summary

    if not args.render_only:
        results = measure(args)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
        print(f"measured in {results['wall_s'] / 60:.1f} min; figures in {args.results}")
    write_summary(json.loads(args.results.read_text()), args.page, args.plots)
    print(f"summary written to {args.page}; plots in {args.plots}")


if __name__ == "__main__":
    main()
