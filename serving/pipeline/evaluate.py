"""Accuracy, oracle-gap share and latency of each R2-T2 strategy, measured side by side.

Every query goes through the same `ReroutePipeline` the server uses, one query at a time (latency is
per query, as a user sees it); answers are generated greedily with the torch model.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from serving.pipeline.answer_check import AnswerVerdict
from r2t2.data import load_samples
from r2t2.data.answers import same_answer
from r2t2.data.sample import Sample
from r2t2.routing import RerouteConfig
from r2t2.routing.layout import RoutingLayout
from serving.pipeline.diagnostics import BASE, diagnose
from serving.pipeline.intervals import accuracy_interval, paired_interval
from serving.pipeline.request_path import ReroutePipeline
from serving.pipeline.query import Rerouted
from serving.pipeline.record import build_record


@dataclass
class StrategyStats:
    correct: list[bool] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    fallbacks: int = 0
    routing_before: list[list[float]] = field(default_factory=list)
    routing_after: list[list[float]] = field(default_factory=list)


def split_variants(text: str) -> list[str]:
    """"none,ngd:lm_layers=[2,3],kernel" -> its variants: commas inside a JSON list belong to the value."""
    variants, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            variants.append(text[start:i])
            start = i + 1
    return [*variants, text[start:]]


def parse_variant(text: str) -> dict:
    """`NAME` or `NAME:lr=0.2:steps=20` -> request options (values read as JSON scalars when they parse)."""
    strategy, *pairs = text.split(":")
    options: dict = {"strategy": strategy}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"strategy variant {text!r}: expected key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def evaluate(pipeline: ReroutePipeline, strategies: Sequence[str], splits: Sequence[str],
             limit: int | None = None, seed: int = 0, overrides: dict | None = None,
             progress: bool = True) -> dict:
    """Run every strategy (or variant, see `parse_variant`) on every sample of the splits: built-in split
    names or paths of the user's JSONL files (see `r2t2.data.load_samples`).

    Returns the report as plain data; "none" and "oracle" are the references for fixed/broken and gap.
    `report["records"][split]` holds one record per query (see serving.pipeline.diagnostics), for `--dump`.
    """
    torch.manual_seed(seed)
    configs = {s: pipeline.config_for({**(overrides or {}), **parse_variant(s)}) for s in strategies}
    report: dict = {"strategies": list(strategies), "splits": {}, "limit": limit, "seed": seed,
                    "routing_rows": pipeline.layout.to_dict(),
                    "config": {s: dataclasses.asdict(c) for s, c in configs.items()}, "records": {}}
    for split in splits:
        summary, records = evaluate_samples(pipeline, configs, load_samples(split, limit=limit, seed=seed),
                                            f"eval {split}", progress)
        report["splits"][split] = summary
        report["records"][split] = records
    return report


def evaluate_samples(pipeline: ReroutePipeline, configs: dict[str, RerouteConfig], samples: Sequence[Sample],
                     desc: str = "eval", progress: bool = True) -> tuple[dict, list[dict]]:
    """Every configured strategy on every sample: the summary (`summarise`, with `diagnose`'s diagnostics) and one
    record per sample."""
    stats = {s: StrategyStats() for s in configs}
    tasks: list[str] = []
    records: list[dict] = []
    for sample in tqdm(samples, desc=desc, unit="q", disable=not progress):
        tasks.append(sample.task)
        records.append(_record(sample))
        for name, config in configs.items():
            started = time.perf_counter()
            done = pipeline.rerouted(sample.image, sample.question, config, answer=sample.answer)
            answer = pipeline.answer(done)
            verdict = None
            if done.answer_space is not None:  # the answer check needs the base routing's answer too
                base = pipeline.model.answer(done.query, done.result.base_routing)[0]
                verdict = pipeline.checked_answer(done, answer, base)
                answer = base if verdict.sent == "base" else answer
            stats[name].seconds.append(time.perf_counter() - started)
            correct = same_answer(answer, sample.answer)
            stats[name].correct.append(correct)
            stats[name].fallbacks += done.result.fallback is not None
            stats[name].routing_before.append(done.result.base_routing.tolist())
            stats[name].routing_after.append(done.result.routing.tolist())
            records[-1]["strategies"][name] = _run_record(done, answer, correct, verdict, pipeline.layout)
    summary = summarise(stats, tasks, {name: config.target for name, config in configs.items()})
    summary["diagnostics"] = diagnose(records, list(configs))
    return summary, records


def _record(sample: Sample) -> dict:
    return {"id": sample.id, "split": sample.split, "question": sample.question, "answer": sample.answer,
            "task": sample.task, "strategies": {}}


def _run_record(done: Rerouted, answer: str, correct: bool, verdict: AnswerVerdict | None,
                layout: RoutingLayout) -> dict:
    """One strategy's account of one query: its answer, whether it was right, and the `r2t2` record a reply to the
    same request carries (docs/record.md), the answer check's verdict included."""
    record = build_record(done, layout)
    if verdict is not None:
        record.checked(verdict)
    return {"answer": answer, "correct": correct, **record.public()}


def _accuracy(flags: Sequence[bool]) -> float:
    return 100.0 * sum(flags) / max(len(flags), 1)


def summarise(stats: dict[str, StrategyStats], tasks: Sequence[str], targets: dict[str, str] | None = None) -> dict:
    """Accuracy (overall and per task), oracle-gap share, fixed/broken vs none, median latency.

    A strategy's gap is measured to the oracle that re-routes the same rows (`targets`: name -> target;
    e.g. `NAME:target=lm` against `oracle:target=lm`), else to `oracle`.
    """
    base = stats.get(BASE)
    targets = targets or {}
    oracles = {targets.get(name, "vision"): st for name, st in stats.items() if name.split(":")[0] == "oracle"}
    out: dict = {"samples": len(tasks), "strategies": {}}
    for name, st in stats.items():
        oracle = oracles.get(targets.get(name, "vision"), stats.get("oracle"))
        acc = _accuracy(st.correct)
        entry = {
            "accuracy": acc,
            "interval": accuracy_interval(st.correct),  # 95 %, a bootstrap over the questions
            "per_task": {t: _accuracy([c for c, tt in zip(st.correct, tasks) if tt == t])
                         for t in sorted(set(tasks))},
            "median_ms": 1000 * statistics.median(st.seconds) if st.seconds else None,
            "fallbacks": st.fallbacks,
            "routing_before": st.routing_before,
            "routing_after": st.routing_after,
            "correct": st.correct,
        }
        if base is not None:
            entry["vs_none"] = paired_interval(st.correct, base.correct)  # 95 %, in points, the same questions
            entry["fixed"] = sum(c and not b for c, b in zip(st.correct, base.correct))
            entry["broken"] = sum(b and not c for c, b in zip(st.correct, base.correct))
            if oracle is not None:
                gap = _accuracy(oracle.correct) - _accuracy(base.correct)
                entry["gap_closed"] = None if gap <= 0 else (acc - _accuracy(base.correct)) / gap
        out["strategies"][name] = entry
    if base is not None and base.seconds:
        none_ms = out["strategies"][BASE]["median_ms"]
        for entry in out["strategies"].values():
            entry["latency_ratio"] = entry["median_ms"] / none_ms if none_ms else None
    return out


def format_table(report: dict) -> str:
    """A Markdown table per split: the numbers docs/benchmark_diary.md records."""
    lines = []
    for split, data in report["splits"].items():
        lines.append(f"\n**{split}** ({data['samples']} questions)\n")
        lines.append("| strategy | accuracy % | 95 % interval | vs none, points (95 %) | gap closed | fixed | broken | "
                     "fallbacks | median ms | x none |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for name, e in data["strategies"].items():
            gap, ratio = e.get("gap_closed"), e.get("latency_ratio")  # None without `none` (or `oracle`) to compare
            lines.append(
                f"| {name} | {e['accuracy']:.1f} | {_span(e.get('interval'))} | {_span(e.get('vs_none'), signed=True)} | "
                f"{'-' if gap is None else f'{100 * gap:.0f} %'} | "
                f"{e.get('fixed', '-')} | {e.get('broken', '-')} | {e['fallbacks']} | "
                f"{e['median_ms']:.1f} | {'-' if ratio is None else f'{ratio:.2f}'} |")
        tasks = sorted(next(iter(data["strategies"].values()))["per_task"])
        lines.append("\n| strategy | " + " | ".join(tasks) + " |")
        lines.append("|---|" + "---|" * len(tasks))
        for name, e in data["strategies"].items():
            lines.append(f"| {name} | " + " | ".join(f"{e['per_task'][t]:.1f}" for t in tasks) + " |")
        if "diagnostics" in data:
            lines.append(format_diagnostics(data["diagnostics"]))
    return "\n".join(lines)


def _span(interval: Sequence[float] | None, signed: bool = False) -> str:
    if interval is None:
        return "-"
    low, high = interval
    return f"{low:+.1f} to {high:+.1f}" if signed else f"{low:.1f}-{high:.1f}"


def format_diagnostics(diagnostics: dict) -> str:
    """Per strategy: purity, mean distance moved, guard verdicts; per task: fixed/broken (vs none)."""
    def number(value: float | None, scale: float = 1.0) -> str:
        return "-" if value is None else f"{scale * value:.2f}" if scale == 1.0 else f"{scale * value:.0f} %"

    first = next(iter(diagnostics.values()))["per_task"]
    tasks = [t for t in first if t != "all"]
    lines = ["\n| strategy | neighbour purity | mean moved | guard fired | "
             + " | ".join(f"{t} fixed/broken" for t in tasks) + " |",
             "|---|---|---|---|" + "---|" * len(tasks)]
    for name, d in diagnostics.items():
        fired = ", ".join(f"{reason} {n}" for reason, n in sorted(d["guard_fired"].items())) or "-"
        check = d["answer_check"]
        if check["checked"]:
            fired += (f"; answer check: {check['replaced']} of {check['checked']} replaced ({check['fixes_dropped']} "
                      f"fixes dropped, {check['breaks_prevented']} breaks prevented)")
        cells = [f"{d['per_task'][t].get('fixed', '-')}/{d['per_task'][t].get('broken', '-')}" for t in tasks]
        lines.append(f"| {name} | {number(d['purity'], 100.0)} | {number(d['moved'])} | {fired} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_report(report: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(report))


def per_expert_shift(report: dict, split: str, strategy: str, row: int = 0) -> dict:
    """Mean routing per expert of one routing row (default: the first) before/after `strategy`, for initially
    wrong vs right samples (Fig. 4)."""
    data = report["splits"][split]["strategies"]
    base_correct = data[BASE]["correct"]
    st = data[strategy]
    width = len(report["routing_rows"][row]["experts"])
    groups: dict = defaultdict(lambda: {"before": [], "after": []})
    for right, before, after in zip(base_correct, st["routing_before"], st["routing_after"]):
        group = groups["initially right" if right else "initially wrong"]
        group["before"].append(before[row][:width])
        group["after"].append(after[row][:width])
    return {name: {k: torch.tensor(v).mean(0).tolist() for k, v in g.items()} for name, g in groups.items()}
