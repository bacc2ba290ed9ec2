"""Eval diagnostics on a hand-made tiny case: purity, per-task fixed/broken, and a dump that round-trips."""
import pytest

from serving.pipeline.diagnostics import diagnose, fixed_broken, purity, read_dump, write_dump


def _run(correct: bool, tasks: list[str], moved: float = 0.0, guard: dict | None = None) -> dict:
    """One strategy's entry of a dump line: the answer, whether it was right, and the fields of its `r2t2` record."""
    return {"answer": "x", "correct": correct, "base_routing": {"a": 1.0, "b": 0.0},
            "routing": {"a": 1 - moved, "b": moved}, "moved": moved, "fallback": None, "guard": guard,
            "neighbours": [{"id": f"n{i}", "question": "q", "answer": "a", "task": t, "weight": 1 / len(tasks)}
                           for i, t in enumerate(tasks)]}


RECORDS = [
    {"id": "a", "split": "s", "question": "q1", "answer": "red", "task": "color",
     "strategies": {"none": _run(False, []), "ngd": _run(True, ["color"] * 4 + ["shape"], 0.8)}},
    {"id": "b", "split": "s", "question": "q2", "answer": "yes", "task": "presence",
     "strategies": {"none": _run(True, []), "ngd": _run(False, ["color", "color", "presence", "shape", "shape"], 0.6)}},
    {"id": "c", "split": "s", "question": "q3", "answer": "no", "task": "presence",
     "strategies": {"none": _run(True, []),
                    "ngd": _run(True, ["presence"] * 5, 0.0, {"fired": True, "reason": "no_loss_gain"})}},
]


def test_purity_and_fixed_broken_by_hand() -> None:
    assert purity("color", ["color", "color", "shape", "count"]) == 0.5
    assert purity("color", []) is None
    assert fixed_broken([False, True, True, False], [True, False, True, False]) == (1, 1)
    with pytest.raises(ValueError):
        fixed_broken([True], [True, False])


def test_diagnose_per_task() -> None:
    ngd = diagnose(RECORDS, ["none", "ngd"])["ngd"]
    assert ngd["per_task"]["color"] == {"questions": 1, "fixed": 1, "broken": 0, "initially_right": 0,
                                        "purity": pytest.approx(0.8), "moved": pytest.approx(0.8)}
    assert ngd["per_task"]["presence"]["fixed"] == 0 and ngd["per_task"]["presence"]["broken"] == 1
    assert ngd["per_task"]["presence"]["purity"] == pytest.approx((0.2 + 1.0) / 2)
    assert ngd["purity"] == pytest.approx((0.8 + 0.2 + 1.0) / 3)
    assert ngd["moved"] == pytest.approx(1.4 / 3)
    assert ngd["guard_fired"] == {"no_loss_gain": 1}
    assert diagnose(RECORDS, ["none", "ngd"])["none"]["purity"] is None


def test_dump_round_trips(tmp_path) -> None:
    path = tmp_path / "dump.jsonl"
    write_dump(RECORDS, path)
    back = read_dump(path)
    assert back == RECORDS
    assert diagnose(back, ["none", "ngd"]) == diagnose(RECORDS, ["none", "ngd"])


def test_answer_check_counts_compare_answers_normalised() -> None:
    """A replaced answer that is the truth in another spelling ("circle" for "The Circle.") was a fix dropped."""
    check = {"sent": "base", "reason": "outside_answer_space", "rerouted_answer": "circle", "base_answer": "two",
             "answer_space_size": 2}
    record = {"id": "a", "split": "s", "question": "q", "answer": "The Circle.", "task": "shape",
              "strategies": {"ngd": _run(True, ["shape"], guard={"fired": False, "reason": None, "answer": check})}}
    counts = diagnose([record], ["ngd"])["ngd"]["answer_check"]
    assert counts == {"checked": 1, "replaced": 1, "fixes_dropped": 1, "breaks_prevented": 0}
