"""What a running server holds in memory, per part of the server (the parts bench/cpu_meter.py names).

PSS (proportional set size) is the honest figure for a server of many processes: pages that forked workers
share (Python, torch's libraries) are split between them, so the parts add up to what the server costs the
machine. RSS counts each shared page once per process, so it is reported beside it for comparison only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from bench.cpu_meter import part_of


@dataclass(frozen=True)
class PartMemory:
    processes: int
    pss_mib: float
    rss_mib: float


def memory_by_part() -> dict[str, PartMemory]:
    """Every server process's memory now, summed per part; the load generator and unrelated processes left out."""
    found: dict[str, list[float]] = {}
    for process in psutil.process_iter(["pid", "cmdline", "name"]):
        if process.info["pid"] == os.getpid():
            continue
        try:
            part = part_of(" ".join(process.info["cmdline"] or [process.info["name"] or ""]))
            if part == "other":
                continue
            memory = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        entry = found.setdefault(part, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += getattr(memory, "pss", memory.rss) / 2**20
        entry[2] += memory.rss / 2**20
    return {part: PartMemory(int(n), round(pss, 1), round(rss, 1))
            for part, (n, pss, rss) in sorted(found.items(), key=lambda kv: -kv[1][1])}
