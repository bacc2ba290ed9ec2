"""Wall-clock start-up of `r2t2 serve`: a first start (empty index store: the default index is built) and restarts.

    .venv/bin/python -m bench.startup_bench --restarts 5 [--source DIR] [--log-dir DIR] [--json FILE]

Each run starts the server as a user does (`python -m serving.run`, default config, its own port), stamps
every line it prints with the seconds since launch, waits for the ready line, then stops it with SIGTERM
and waits until it has exited. The first run uses an empty index store, so it builds the default index;
the restarts reuse that store. Reported: seconds to the ready line (median, min, max of the restarts), and
the seconds of each start-up phase as the server's own progress lines state them ("... in 3.2 s").

`--source DIR` runs the server from another source tree (e.g. an older commit exported with `git archive`)
with this environment's packages, for before/after figures. Run it on a quiet machine (`heavy ...`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.local_cluster import free_port

READY = re.compile(r"^r2t2 serving on ")
PHASE = re.compile(r"^r2t2 \[ *[\d.]+ s\] (?P<phase>.+?) (?:ready |built |done )?in (?P<seconds>[\d.]+) s")
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 90


@dataclass
class Run:
    kind: str  # "first start" or "restart"
    ready_s: float | None  # seconds from launch to the ready line; None: it never came
    stopped_s: float | None  # seconds from SIGTERM to the process's exit
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds, from the progress lines
    lines: list[tuple[float, str]] = field(default_factory=list)


def start_once(kind: str, source: Path, index_dir: Path, extra: list[str]) -> Run:
    """Launch the server, read its output until the ready line, stop it, and return what was seen."""
    env = {**os.environ, "R2T2_INDEX_DIR": str(index_dir), "PYTHONUNBUFFERED": "1"}
    if source != Path.cwd():
        env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "serving.run", "--port", str(free_port()), *extra]
    launched = time.monotonic()
    process = subprocess.Popen(command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, start_new_session=True)
    run = Run(kind, None, None)
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            run.lines.append((time.monotonic() - launched, line))
            if READY.match(line):
                run.ready_s = run.lines[-1][0]
                ready.set()
        ready.set()  # the output ended: the server exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(START_TIMEOUT_S)
    stopping = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
        run.stopped_s = time.monotonic() - stopping
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(10)
    for _, line in run.lines:
        if (found := PHASE.match(line)) is not None:
            run.phases[found["phase"]] = float(found["seconds"])
    return run


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):6.1f} s  (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def report(runs: list[Run]) -> None:
    first = [r for r in runs if r.kind == "first start"]
    restarts = [r for r in runs if r.kind == "restart"]
    print(f"first start (index build included): "
          f"{', '.join('never ready' if r.ready_s is None else f'{r.ready_s:.1f} s' for r in first) or '-'}")
    print(f"restart:                            {summary([r.ready_s for r in restarts if r.ready_s is not None])}")
    print(f"stop after SIGTERM:                 {summary([r.stopped_s for r in runs if r.stopped_s is not None])}")
    failed = [r for r in runs if r.ready_s is None]
    if failed:
        print(f"{len(failed)} run(s) never printed the ready line; last lines of the first:")
        for seconds, line in failed[0].lines[-15:]:
            print(f"  {seconds:7.1f}  {line}")
    phases = list(dict.fromkeys(p for r in runs for p in r.phases))
    if phases:
        print("\nphase seconds (first start | restarts, median):")
        for phase in phases:
            once = [r.phases[phase] for r in first if phase in r.phases]
            again = [r.phases[phase] for r in restarts if phase in r.phases]
            print(f"  {phase:58.58s} {statistics.median(once) if once else float('nan'):6.1f} | "
                  f"{statistics.median(again) if again else float('nan'):6.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--no-first-start", action="store_true", help="only restarts (needs --index-dir with an index)")
    parser.add_argument("--index-dir", default=None, help="index store to use (default: a fresh temporary one)")
    parser.add_argument("--source", default=".", help="source tree to run the server from")
    parser.add_argument("--log-dir", default=None, help="write each run's time-stamped output here")
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("serve_args", nargs="*", help="passed to serving.run after --")
    args = parser.parse_args(argv)
    source = Path(args.source).resolve()
    with tempfile.TemporaryDirectory(prefix="r2t2-startup-") as scratch:
        index_dir = Path(args.index_dir or scratch)
        kinds = ([] if args.no_first_start else ["first start"]) + ["restart"] * args.restarts
        runs = []
        for number, kind in enumerate(kinds):
            run = start_once(kind, source, index_dir, args.serve_args)
            runs.append(run)
            print(f"run {number}: {kind}: ready after "
                  f"{'-' if run.ready_s is None else f'{run.ready_s:.1f} s'}", flush=True)
            if args.log_dir:
                Path(args.log_dir).mkdir(parents=True, exist_ok=True)
                Path(args.log_dir, f"run{number}.log").write_text(
                    "".join(f"{seconds:8.2f}  {line}\n" for seconds, line in run.lines))
    print()
    report(runs)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in asdict(r).items() if k != "lines"} for r in runs],
                                              indent=1))


if __name__ == "__main__":
    main()
