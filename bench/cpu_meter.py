"""Where a load test's CPU goes: the machine's busy share and CPU-seconds per part of the server.

The kernel's counters, read before and after a level: `/proc/stat` for the machine (every process, the load
generator's included), and each process's user+system time, grouped by the part of the server it is (Ray
names its worker processes after the actor they host). Linux only: this is a benchmark of a local server.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

# Substrings of a process's command line (Ray sets it to the actor's name, vLLM to VLLM::EngineCore) -> the part of
# the server it is, first match wins. Not "vllm" alone: it would also match the replicas of an app named vllm.
PARTS: tuple[tuple[str, str], ...] = (
    ("EngineCore", "engine core"),
    ("ReRouter", "re-router"), ("Generator", "generator"), ("Ingress", "ingress"),
    ("ProxyActor", "http proxy"), ("IndexManager", "index manager"), ("serving.run", "server process"),
    ("ServeController", "ray"), ("raylet", "ray"), ("gcs_server", "ray"), ("dashboard", "ray"),
    ("log_monitor", "ray"), ("ray", "ray"),
)
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    machine_busy_s: float  # CPU-seconds every core spent outside idle and iowait since boot
    by_pid: dict[int, tuple[str, float]]  # pid -> (part, CPU-seconds)


def _machine_busy_s() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS  # user..steal; guest time is already inside user


def part_of(command: str) -> str:
    """The part of the server a process with this command line is (`PARTS`), else "other"."""
    return next((part for needle, part in PARTS if needle in command), "other")


def snapshot() -> CpuSnapshot:
    """The machine's busy CPU-seconds and every process's CPU-seconds, now."""
    by_pid: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            times = process.cpu_times()
            command = " ".join(process.info["cmdline"] or [process.info["name"] or ""])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pid = process.info["pid"]
        by_pid[pid] = ("load generator" if pid == os.getpid() else part_of(command), times.user + times.system)
    return CpuSnapshot(_machine_busy_s(), by_pid)


@dataclass(frozen=True)
class CpuUse:
    """CPU used between two snapshots: the machine's busy share (100 per busy core) and CPU-seconds per part."""

    busy_percent: float
    machine_s: float
    by_part: dict[str, float]


def used(before: CpuSnapshot, after: CpuSnapshot, elapsed_s: float) -> CpuUse:
    """What happened between `before` and `after`, `elapsed_s` apart (a process started between them counts
    from zero)."""
    by_part: dict[str, float] = {}
    for pid, (part, seconds) in after.by_pid.items():
        earlier = before.by_pid.get(pid)
        spent = seconds - (earlier[1] if earlier is not None and earlier[0] == part else 0.0)
        by_part[part] = by_part.get(part, 0.0) + max(spent, 0.0)
    machine_s = after.machine_busy_s - before.machine_busy_s
    return CpuUse(100.0 * machine_s / elapsed_s, machine_s, dict(sorted(by_part.items(), key=lambda kv: -kv[1])))
