"""Why re-routing moved as it did, or not: one sentence per record, and the neighbours grouped by question.

Read from a finished r2t2 record (docs/record.md), so it says only what the record shows: the strategy,
a fallback, the guard's verdict and reason, where the line search ended, the loss trace, how far the
routing moved and which experts gained and lost weight. The words of each strategy are its registry entry's
(r2t2/routing/strategies.py: `title`, `evidence`, `why_still`). Neighbours that are the same question (asked
of different images, so with the same embedding and weight) are one group with their count and answers.
"""
from __future__ import annotations

from typing import Any

from r2t2.routing.strategies import strategy

STILL = 5e-4  # `moved` below this is reported as not moving (what a 3-decimal display shows as 0.000)
GUARD_REASONS = {
    "neighbours_disagree": "the neighbours' own routings disagree (spread {neighbour_spread:.2f}), so their "
                           "average suits none of them",
    "neighbours_agree_with_router": "the neighbours were answered right with about its own routing, so nothing "
                                    "says it is wrong",
    "base_fits_neighbours": "the neighbours are already answered well under it (their loss is "
                            "{neighbour_loss_base:.3f}), so nothing says it is wrong",
    "no_loss_gain": "moving did not lower the neighbours' loss enough ({neighbour_loss_base:.3f} before, "
                    "{neighbour_loss_moved:.3f} after)",
}


def explained(record: dict[str, Any]) -> dict[str, Any]:
    """The record's `explanation` and `neighbour_questions` (the fields this module adds to it)."""
    groups = neighbour_questions(record.get("neighbours") or [])
    return {"explanation": explanation(record, groups), "neighbour_questions": groups}


def neighbour_questions(neighbours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The neighbours grouped by (question, task), in order of first appearance: each group's count, summed
    weight, the first one's similarity and distance (copies share them in question space) and its answers."""
    groups: dict[tuple[Any, Any], dict[str, Any]] = {}
    for neighbour in neighbours:
        key = (neighbour.get("question"), neighbour.get("task"))
        group = groups.setdefault(key, {"question": key[0], "task": key[1], "count": 0, "weight": 0.0,
                                        "similarity": neighbour.get("similarity"),
                                        "distance": neighbour.get("distance"), "answers": {}})
        group["count"] += 1
        group["weight"] += float(neighbour.get("weight", 0.0))
        answer = neighbour.get("answer")
        group["answers"][answer] = group["answers"].get(answer, 0) + 1
    return list(groups.values())


def explanation(record: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    """One sentence: why the routing the answer was generated with is where it is (two for `both`, whose LM rows
    have a stage of their own after the vision rows')."""
    stage = (record.get("lm_routing") or {}).get("stage")
    first = _sentence(record, groups)
    if stage is None:
        return first
    return f"{first.removesuffix('.')} (the vision rows); then for the LM rows, {_stage(stage, stage['strategy'])}."


def _stage(stage: dict[str, Any], name: str) -> str:
    """What the LM rows' stage of a `both` request did, from its record."""
    guard = stage.get("guard") or {}
    if stage.get("fallback") and float(stage.get("moved") or 0.0) < STILL:
        return f"it kept them: {stage['fallback']}"
    if guard.get("fired"):
        reason = GUARD_REASONS.get(guard.get("reason"), "{reason}").format(**guard)
        return f"the evidence guard left them to the routers: {reason}"
    if float(stage.get("moved") or 0.0) < STILL:
        return f"{strategy(name).title} left them where the routers put them"
    return f"{strategy(name).title} moved {_weight(float(stage['moved']))}"


def _sentence(record: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    entry = strategy(record["strategy"])
    if entry.baseline:
        return f"Strategy {entry.name} answers with the router's own routing; nothing was re-routed."
    moved, fallback, guard = float(record.get("moved") or 0.0), record.get("fallback"), record.get("guard")
    copies = _copies(groups)
    if fallback:
        if moved < STILL:
            return f"{entry.title} kept the router's routing: {fallback}."
        return f"{entry.title} stopped early ({fallback}) after moving {_weight(moved)} {_shift(record)}."
    if guard and guard.get("fired"):
        reason = GUARD_REASONS.get(guard.get("reason"), "{reason}").format(**guard)
        return f"The evidence guard kept the router's routing: {reason}{copies}."
    if moved < STILL:
        return f"{entry.title} left the routing where the router put it: {entry.why_still(record)}{copies}."
    return f"{entry.title} moved {_weight(moved)} {_shift(record)}{entry.evidence(record)}{copies}."


def _weight(moved: float) -> str:
    return f"{moved:.2f} of the routing weight" if moved >= 0.005 else f"{moved:.3f} of the routing weight"


def _rows(routing: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{row: {expert: weight}}; a one-row routing ({expert: weight}) is one row named ''."""
    if routing and all(isinstance(v, dict) for v in routing.values()):
        return routing
    return {"": routing or {}}


def _lm_rows(record: dict[str, Any], field: str) -> dict[str, dict[str, float]]:
    """The LM rows' listed weights ({row: {expert: weight}}), from the record's `lm_routing`."""
    layers = (record.get("lm_routing") or {}).get("layers") or []
    return {layer["row"]: {entry["expert"]: entry["weight"] for entry in layer[field]} for layer in layers}


def _shift(record: dict[str, Any]) -> str:
    """Which expert lost the most weight and which gained the most, in the row that moved most (vision or LM)."""
    before = {**_rows(record.get("base_routing") or {}), **_lm_rows(record, "base")}
    after = {**_rows(record.get("routing") or {}), **_lm_rows(record, "routing")}
    changes = [(row, expert, after.get(row, {}).get(expert, 0.0) - weight)
               for row, weights in before.items() for expert, weight in weights.items()]
    if not changes:
        return ""
    row = max(before, key=lambda r: sum(abs(c) for rr, _, c in changes if rr == r))
    in_row = [(expert, change) for r, expert, change in changes if r == row]
    lost, gained = min(in_row, key=lambda c: c[1]), max(in_row, key=lambda c: c[1])
    where = f" in row {row}" if row else ""
    return f"from {lost[0]} to {gained[0]}{where}"


def _copies(groups: list[dict[str, Any]]) -> str:
    """'; its 5 neighbours are one question ...' when every neighbour asks the same question."""
    if len(groups) != 1 or groups[0]["count"] < 2 or groups[0]["question"] is None:
        return ""
    group = groups[0]
    answers = ", ".join(f"{answer} ({count})" for answer, count in
                        sorted(group["answers"].items(), key=lambda item: -item[1]))
    return f"; its {group['count']} neighbours are one question asked of {group['count']} images " \
           f"(\"{group['question']}\", answers {answers})"
