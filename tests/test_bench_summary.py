"""BENCHMARKS.md's generated summary: written between its markers only, from the figures `make bench` records."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.summary_page import END, START, write_summary


def _strategy(accuracy: float, fixed: int = 0, broken: int = 0) -> dict:
    return {"accuracy": accuracy, "interval": [accuracy - 5, accuracy + 5], "vs_none": [0.0, 1.0], "fixed": fixed,
            "broken": broken, "median_ms": 10.0, "fallbacks": 0}


def _level(strategy: str, concurrency: int, per_s: float, skipped: float) -> dict:
    return {"strategy": strategy, "concurrency": concurrency, "requests": 8, "errors": 0, "requests_per_s": per_s,
            "p50_s": 1 / per_s, "skipped_share": skipped}


def _results() -> dict:
    split = {"samples": 8, "strategies": {"none": _strategy(50.0), "ngd": _strategy(62.5, 2, 1)}}
    levels = [_level(s, c, p, k) for s, k in (("none", 0.0), ("ngd", 0.25)) for c, p in ((1, 10.0), (16, 20.0))]
    return {"date": "2026-12-08", "commit": "abc1234", "dirty": False, "wall_s": 600,
            "machine": {"cpu": "a CPU", "cores": 2, "memory_gib": 24, "gpu": "no GPU", "python": "3.11",
                        "torch": "2.13", "vllm": "0.32"},
            "accuracy": {"embedded": {"default": "ngd", "limit": 8,
                                      "splits": {name: split for name in ("test", "paraphrase", "rephrased")}}},
            "startup": [{"kind": "first start", "ready_s": 120.0, "stopped_s": 5.0},
                        {"kind": "restart", "ready_s": 50.0, "stopped_s": 4.0}],
            "serving": {"test": {"levels": levels}, "shifted": {"levels": levels}},
            "memory": {"engine core": {"processes": 1, "pss_mib": 1500.0, "rss_mib": 1700.0}}}


def test_the_summary_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "BENCHMARKS.md"
    page.write_text(f"# Benchmarks\n\nbefore\n\n{START}\nold summary\n{END}\n\nafter\n")
    write_summary(_results(), page, tmp_path / "docs")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old summary" not in text and text.count(START) == 1 and text.count(END) == 1
    assert "commit `abc1234`" in text
    assert "| embedded | none | 50.0 (45.0-55.0) |" in text
    assert "| **ngd** (served) | 62.5 (57.5-67.5); +2 / -1 |" in text  # the family's served strategy, marked
    assert "| in distribution | none | 10.0 | 100 | 20.0 | 50 | 1.00x | 1.00x | - |" in text  # none takes no steps
    assert "| 1.00x | 1.00x | 25 % |" in text
    assert "| 120 s (n=1, 120-120) | 50 s (n=1, 50-50) |" in text
    assert "](docs/bench_accuracy.png)" in text and (tmp_path / "docs" / "bench_accuracy.png").stat().st_size > 0
    assert (tmp_path / "docs" / "bench_throughput.png").stat().st_size > 0


def test_a_page_without_markers_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n")
    with pytest.raises(SystemExit, match="summary:start"):
        write_summary(_results(), page, tmp_path / "docs")
    assert page.read_text() == "# Benchmarks\n"
