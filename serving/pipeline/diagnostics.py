"""Why R2-T2 fixed or broke an answer: per-query records and the diagnostics `r2t2 eval` derives from them.

A record holds what is needed to read one failure instead of guessing it: the question, its true answer and task,
and for each strategy its answer, whether it was right, and the `r2t2` record a reply carries (docs/record.md: base
and final routing, how far it moved and in how many steps, the neighbours with their question, answer and task, the
guard's and the answer check's verdicts). Diagnostics are computed from records only, so a dump
read back (`read_dump`) gives the same numbers as the run that wrote it.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r2t2.data.answers import same_answer

BASE = "none"  # the strategy fixed/broken are counted against


def purity(query_task: str, neighbour_tasks: Sequence[str]) -> float | None:
    """Share of the neighbours whose task is the query's; None without neighbours."""
    if not neighbour_tasks:
        return None
    return sum(task == query_task for task in neighbour_tasks) / len(neighbour_tasks)


def fixed_broken(base_correct: Sequence[bool], correct: Sequence[bool]) -> tuple[int, int]:
    """(answers the base got wrong and this got right, answers the base got right and this got wrong)."""
    if len(base_correct) != len(correct):
        raise ValueError(f"{len(base_correct)} base answers but {len(correct)} answers to compare")
    fixed = sum(c and not b for b, c in zip(base_correct, correct))
    broken = sum(b and not c for b, c in zip(base_correct, correct))
    return fixed, broken


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def diagnose(records: Sequence[dict[str, Any]], strategies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per strategy: per task fixed/broken (against `none`), neighbour purity, routing distance moved,
    and how often the guard fired (by reason)."""
    tasks = sorted({r["task"] for r in records})
    out: dict[str, dict[str, Any]] = {}
    for name in strategies:
        runs = [r["strategies"][name] for r in records]
        entry: dict[str, Any] = {"per_task": {}}
        for task in [*tasks, "all"]:
            chosen = [(r, s) for r, s in zip(records, runs) if task in ("all", r["task"])]
            row: dict[str, Any] = {"questions": len(chosen)}
            if BASE in strategies:
                row["fixed"], row["broken"] = fixed_broken([r["strategies"][BASE]["correct"] for r, _ in chosen],
                                                           [s["correct"] for _, s in chosen])
                row["initially_right"] = sum(r["strategies"][BASE]["correct"] for r, _ in chosen)
            scores = [p for r, s in chosen
                      if (p := purity(r["task"], [n["task"] for n in s["neighbours"]])) is not None]
            row["purity"] = _mean(scores)
            row["moved"] = _mean([s["moved"] for _, s in chosen])
            entry["per_task"][task] = row
        entry.update({key: entry["per_task"]["all"][key] for key in ("purity", "moved")})
        reasons: dict[str, int] = {}
        for run in runs:
            if run.get("guard") and run["guard"]["fired"]:
                reasons[run["guard"]["reason"]] = reasons.get(run["guard"]["reason"], 0) + 1
        entry["guard_fired"] = reasons
        entry["answer_check"] = _answer_checks(runs, records)
        out[name] = entry
    return out


def _answer_checks(runs: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How often the answer check sent the base answer instead of a changed one; of those, how many re-routed
    answers were right (fixes it dropped) and how many base answers were right (breaks it prevented)."""
    checks = [(run.get("guard") or {}).get("answer") for run in runs]
    replaced = [(check, record["answer"]) for check, record in zip(checks, records)
                if (check or {}).get("sent") == "base"]
    return {"checked": sum(check is not None for check in checks), "replaced": len(replaced),
            "fixes_dropped": sum(same_answer(check["rerouted_answer"], truth) for check, truth in replaced),
            "breaks_prevented": sum(same_answer(check["base_answer"], truth) for check, truth in replaced)}


def write_dump(records: Sequence[dict[str, Any]], path: Path | str) -> None:
    """One JSON record per line (JSON Lines), in query order."""
    with Path(path).open("w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def read_dump(path: Path | str) -> list[dict[str, Any]]:
    """The records `write_dump` wrote, as they were."""
    with Path(path).open() as lines:
        return [json.loads(line) for line in lines if line.strip()]
