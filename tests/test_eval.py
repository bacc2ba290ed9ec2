"""A small `r2t2 eval` run through the real pipeline: real model, MiniLM, FAISS index, all strategies."""
import json
import math

import pytest
import torch

from indexes.build import build_index
from indexes.embedders import MiniLMEmbedder
from indexes.registry import IndexRegistry
from indexes.store import IndexStore
from r2t2.data import load_split
from r2t2.errors import QuestionTooLong
from serving.pipeline.diagnostics import diagnose, read_dump, write_dump
from serving.pipeline.evaluate import evaluate, format_table, per_expert_shift
from r2t2.routing.guard import REASONS
from r2t2.model import load_model
from serving.pipeline.request_path import ReroutePipeline
from r2t2.routing import RerouteConfig

STRATEGIES = ["none", "meanshift", "kernel", "ngd", "oracle", "ngd:guard=true"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> ReroutePipeline:
    model = load_model("embedded")
    embedder = MiniLMEmbedder()
    store = IndexStore(tmp_path_factory.mktemp("indexes"))
    spec = {"source": "builtin", "split": "reference", "limit": 400, "seed": 0}
    build_index("embedded", load_split("reference", limit=400), model, embedder, store, dataset_spec=spec,
                progress=False)
    return ReroutePipeline(model, embedder, IndexRegistry(store, model.fingerprint, embedder.name), RerouteConfig(),
                           default_index="embedded", model_name="r2t2-embedded", family="embedded")


@pytest.fixture(scope="module")
def report(pipeline) -> dict:
    return evaluate(pipeline, STRATEGIES, ["test", "paraphrase"], limit=12, progress=False)


def test_report_has_every_strategy_and_split(report) -> None:
    for split in ("test", "paraphrase"):
        data = report["splits"][split]
        assert data["samples"] == 12
        assert list(data["strategies"]) == STRATEGIES
        for name, entry in data["strategies"].items():
            assert 0.0 <= entry["accuracy"] <= 100.0
            assert entry["median_ms"] > 0 and math.isfinite(entry["median_ms"])
            assert len(entry["correct"]) == 12
            assert entry["fixed"] >= 0 and entry["broken"] >= 0
        none = data["strategies"]["none"]
        assert none["routing_before"] == none["routing_after"]
        assert none["fixed"] == none["broken"] == 0


def test_reroutes_move_the_routing(report) -> None:
    ngd = report["splits"]["paraphrase"]["strategies"]["ngd"]
    moved = [torch.tensor(a).sub(torch.tensor(b)).abs().sum() > 1e-4
             for a, b in zip(ngd["routing_after"], ngd["routing_before"])]
    assert any(moved)


def test_a_user_jsonl_split_is_evaluated_like_the_same_samples_built_in(pipeline, report, tmp_path) -> None:
    samples = load_split("test", limit=12)  # the report's test split, in its order
    lines = []
    for i, sample in enumerate(samples):
        sample.image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "question": sample.question, "answer": sample.answer,
                                 "task": sample.task}))
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n")
    mine = evaluate(pipeline, ["none", "kernel"], [str(path)], progress=False)["splits"][str(path)]
    built_in = report["splits"]["test"]["strategies"]
    assert mine["samples"] == 12
    for strategy in ("none", "kernel"):
        assert mine["strategies"][strategy]["correct"] == built_in[strategy]["correct"]
        assert mine["strategies"][strategy]["per_task"] == built_in[strategy]["per_task"]


def test_answers_are_scored_after_normalisation(pipeline, report, tmp_path) -> None:
    """A user's "The Circle." or "Three" is the model's "circle" or "3": the same questions score as built in."""
    words = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}
    samples = load_split("test", limit=12)
    lines = []
    for i, sample in enumerate(samples):
        sample.image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "question": sample.question,
                                 "answer": f"The {words.get(sample.answer, sample.answer).title()}."}))
    path = tmp_path / "spelt.jsonl"
    path.write_text("\n".join(lines) + "\n")
    mine = evaluate(pipeline, ["none"], [str(path)], progress=False)
    correct = mine["splits"][str(path)]["strategies"]["none"]["correct"]
    assert any(correct) and correct == report["splits"]["test"]["strategies"]["none"]["correct"]
    assert mine["records"][str(path)][0]["answer"].startswith("The ")


def test_table_and_routing_shift(report) -> None:
    table = format_table(report)
    assert "| ngd |" in table and "**paraphrase**" in table
    shift = per_expert_shift(report, "paraphrase", "ngd")
    for group in shift.values():
        assert len(group["before"]) == 3 and abs(sum(group["after"]) - 1) < 1e-4


def test_diagnostics_per_task_and_a_dump_that_round_trips(report, tmp_path) -> None:
    records = report["records"]["paraphrase"]
    assert len(records) == 12 and all(list(r["strategies"]) == STRATEGIES for r in records)
    diagnostics = report["splits"]["paraphrase"]["diagnostics"]
    for name in STRATEGIES:
        entry, per_task = report["splits"]["paraphrase"]["strategies"][name], diagnostics[name]["per_task"]
        assert sum(row["fixed"] for task, row in per_task.items() if task != "all") == entry["fixed"]
        assert sum(row["broken"] for task, row in per_task.items() if task != "all") == entry["broken"]
    assert 0.0 <= diagnostics["ngd"]["purity"] <= 1.0 and diagnostics["none"]["purity"] is None
    first = records[0]["strategies"]["ngd"]
    assert first["neighbours"] and all(n["task"] and n["question"] and n["answer"] for n in first["neighbours"])
    path = tmp_path / "dump.jsonl"
    write_dump(records, path)
    assert read_dump(path) == records and diagnose(read_dump(path), STRATEGIES) == diagnostics
    assert "neighbour purity" in format_table(report)


def test_guard_verdict_is_recorded_and_a_fired_guard_keeps_the_base_routing(report) -> None:
    for record in report["records"]["paraphrase"] + report["records"]["test"]:
        run = record["strategies"]["ngd:guard=true"]
        assert run["guard"]["fired"] == (run["guard"]["reason"] is not None)
        assert run["guard"]["reason"] in (None, *REASONS)
        if run["guard"]["fired"]:
            assert run["routing"] == run["base_routing"]
        assert record["strategies"]["ngd"].get("guard") is None


def test_prepare_gives_prompt_and_named_record(pipeline) -> None:
    sample = load_split("paraphrase", limit=1, seed=2)[0]
    prepared = pipeline.prepare(sample.image, sample.question, {"strategy": "kernel", "k": 3}, None)
    assert prepared.prompt.ndim == 2 and prepared.prompt.shape[1] == 128
    record = prepared.record.public()
    assert set(record["routing"]) == set(pipeline.model.config.expert_names)
    assert record["lm_routing"]["applied"] is False and prepared.lm_rows is None
    assert [layer["row"] for layer in record["lm_routing"]["layers"]] == ["lm.layer0", "lm.layer1"]
    assert abs(sum(record["routing"].values()) - 1) < 1e-4
    assert len(record["neighbours"]) == 3
    assert all(n["answer"] and -1.0 <= n["similarity"] <= 1.0 for n in record["neighbours"])
    references = {s.id: s for s in load_split("reference", limit=400)}
    for neighbour in record["neighbours"]:  # each names the reference sample it is
        sample = references[neighbour["id"]]
        assert (neighbour["question"], neighbour["answer"], neighbour["task"]) == (sample.question, sample.answer,
                                                                                  sample.task)
    assert record["index"] == {"name": "embedded", "version": 1}
    assert {"embed", "encode", "search", "reroute"} <= set(record["timings"])


def test_meanshift_neighbours_are_described_like_the_others(pipeline) -> None:
    sample = load_split("paraphrase", limit=1, seed=2)[0]
    record = pipeline.prepare(sample.image, sample.question, {"strategy": "meanshift", "k": 3}, None).record.public()
    references = {s.id for s in load_split("reference", limit=400)}
    assert record["neighbours"] and all(n["id"] in references and n["question"] and n["answer"] and
                                        n["similarity"] is None for n in record["neighbours"])


def test_bad_options_are_refused(pipeline) -> None:
    sample = load_split("test", limit=1)[0]
    for bad in ({"strategy": "magic"}, {"k": 0}, {"steps": -1}, {"kernel": "cubic"}, {"colour": 1},
                {"strategy": "oracle"}):
        with pytest.raises(ValueError):
            pipeline.prepare(sample.image, sample.question, bad, None)


MIXED_OPTIONS = [{"strategy": "ngd"}, {"strategy": "kernel"}, {"strategy": "none"}, {"strategy": "meanshift", "k": 3},
                 {"strategy": "ngd", "lr": 0.05, "k": 3}, {"strategy": "kernel", "k": 7, "kernel": "matern"},
                 {"strategy": "ngd", "steps": 4}, {"strategy": "ngd", "neighbourhood": "epsilon", "epsilon": 0.9},
                 {"strategy": "kernel", "guard": True}]


def test_a_mixed_batch_of_16_matches_each_request_alone(pipeline) -> None:
    """The server re-routes concurrent requests as one batch: each must get exactly its lone result."""
    samples = load_split("paraphrase", limit=16)
    requests = [(s.image, s.question, MIXED_OPTIONS[i % len(MIXED_OPTIONS)], None) for i, s in enumerate(samples)]
    together = pipeline.prepare_many(requests)
    assert all(p.record.batch_size == 16 for p in together)
    for request, joint in zip(requests, together):
        alone = pipeline.prepare(*request)
        assert alone.record.batch_size == 1
        assert joint.record.strategy == alone.record.strategy == request[2]["strategy"]
        routing = {e: torch.tensor(w) for e, w in joint.record.routing.items()}
        for expert, weight in alone.record.routing.items():
            assert abs(routing[expert] - weight) <= 1e-6, (request[2], expert)
        assert torch.allclose(joint.prompt, alone.prompt, atol=1e-5, rtol=0)
        answers = [pipeline.model.answer(pipeline.model.encode_query(request[0], request[1]).batch,
                                         torch.tensor([list(p.record.routing.values())])) for p in (joint, alone)]
        assert answers[0] == answers[1]


def test_requests_the_guard_decides_from_their_neighbours_skip_the_second_stage(pipeline) -> None:
    from serving.pipeline.query import Pending

    samples = load_split("paraphrase", limit=8)
    requests = [(s.image, s.question, {"strategy": "ngd", "guard": True, "guard_min_shift": 1.0 if i % 2 else 0.0},
                 None) for i, s in enumerate(samples)]
    begun = pipeline.begin_many(requests)
    assert [isinstance(item, Pending) for item in begun] == [True, False] * 4
    finished = iter(pipeline.finish_many([item for item in begun if isinstance(item, Pending)]))
    staged = [next(finished) if isinstance(item, Pending) else item for item in begun]
    for i, (two_stages, one_call) in enumerate(zip(staged, pipeline.prepare_many(requests))):
        assert two_stages.record.batch_size == one_call.record.batch_size == 8
        assert two_stages.record.routing == pytest.approx(one_call.record.routing, abs=1e-6)
        if i % 2:
            assert two_stages.record.guard.decided_before_steps and two_stages.record.moved == 0
    baseline = pipeline.begin_many([(samples[0].image, samples[0].question, {"strategy": "none"}, None)])
    assert not isinstance(baseline[0], Pending) and baseline[0].record.strategy == "none"  # nothing to wait for


def test_one_bad_request_in_a_batch_fails_alone(pipeline) -> None:
    sample = load_split("test", limit=1)[0]
    outcomes = pipeline.prepare_many([(sample.image, sample.question, {"strategy": "ngd"}, None),
                                      (sample.image, sample.question, {"strategy": "ngd", "k": 0}, None),
                                      (sample.image, sample.question, {"strategy": "kernel"}, "no-such-index"),
                                      (sample.image, "what " * 200 + "is it?", {"strategy": "ngd"}, None)])
    assert outcomes[0].record.strategy == "ngd" and outcomes[0].record.batch_size == 1
    assert isinstance(outcomes[1], ValueError) and "k must be" in str(outcomes[1])
    assert isinstance(outcomes[2], Exception) and "no-such-index" in str(outcomes[2])
    assert isinstance(outcomes[3], QuestionTooLong)


def test_a_question_without_an_image_is_prepared_alone_and_not_rerouted(pipeline) -> None:
    from serving.pipeline.record import NO_IMAGE

    sample = load_split("test", limit=1)[0]
    # Options only re-routing reads are ignored: even ones an image request is refused for.
    outcomes = pipeline.prepare_many([(None, sample.question, {"strategy": "magic", "k": 0}, "no-such-index"),
                                      (sample.image, sample.question, {"strategy": "kernel"}, None),
                                      (None, "what " * 200 + "is it?", {}, None)])
    alone, rerouted = outcomes[0], outcomes[1]
    assert torch.equal(alone.prompt, pipeline.model.question_prompt(sample.question))
    assert alone.lm_rows is None and alone.answer_space is None
    record = alone.record.public()
    assert (record["strategy"], record["fallback"], record["moved"], record["routing"], record["neighbours"],
            record["index"], record["lm_routing"], record["changed_answer"]) == ("none", NO_IMAGE, 0.0, {}, [], None,
                                                                                 None, False)
    assert set(record["timings"]) == {"encode"} and "batch_size" not in record
    assert rerouted.record.strategy == "kernel" and rerouted.record.batch_size == 1  # re-routed alone
    assert isinstance(outcomes[2], QuestionTooLong)


class WithoutBatchedEncode:
    """The embedded model seen through a wrapper that lacks the optional `encode_queries`."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self._inner = inner

    def __getattr__(self, name: str):  # noqa: ANN204
        if name == "encode_queries":
            raise AttributeError(name)
        return getattr(self._inner, name)


def _routings(prepared: list) -> list[torch.Tensor]:
    return [torch.tensor(list(p.record.routing.values())) for p in prepared]


def test_a_model_without_batched_encode_and_a_refused_batch_encode_each_request_alone(pipeline, monkeypatch) -> None:
    samples = load_split("paraphrase", limit=4, seed=5)
    requests = [(s.image, s.question, {"strategy": "ngd"}, None) for s in samples]
    batched = pipeline.prepare_many(requests)
    monkeypatch.setattr(pipeline, "model", WithoutBatchedEncode(pipeline.model))
    assert getattr(pipeline.model, "encode_queries", None) is None
    one_by_one = pipeline.prepare_many(requests)
    monkeypatch.undo()
    encode_queries, calls = pipeline.model.encode_queries, []

    def refusing(images, questions, answers):  # noqa: ANN001, ANN202
        """Refuses a batch holding the question "boom" as a whole, as a model might on unexpected input."""
        calls.append(len(questions))
        if "boom" in questions:
            raise RuntimeError("boom")
        return encode_queries(images, questions, answers)

    monkeypatch.setattr(pipeline.model, "encode_queries", refusing, raising=False)
    isolated = pipeline.prepare_many(requests[:2] + [(samples[0].image, "boom", {"strategy": "ngd"}, None)]
                                     + requests[2:])
    assert calls == [1, 1, 1, 1, 1]  # each query encoded in a call of its own: only the bad one fails
    assert isinstance(isolated[2], RuntimeError)
    del isolated[2]
    for joint, alone, separate in zip(_routings(batched), _routings(one_by_one), _routings(isolated)):
        assert torch.allclose(joint, alone, atol=1e-6, rtol=0) and torch.allclose(joint, separate, atol=1e-6, rtol=0)


def test_target_lm_moves_the_lm_rows_and_hands_them_to_the_engine(pipeline) -> None:
    sample = load_split("paraphrase", limit=1, seed=2)[0]
    prepared = pipeline.prepare(sample.image, sample.question, {"strategy": "kernel", "target": "lm", "guard": False,
                                                                "alpha": 0.0}, None)
    record = prepared.record.public()
    assert record["lm_routing"]["applied"] is True and record["moved"] > 0
    assert sorted(prepared.lm_rows.layers) == [0, 1] and prepared.lm_rows.positions == "answer"
    for layer in record["lm_routing"]["layers"]:
        weights = prepared.lm_rows.layers[layer["layer"]]
        assert len(weights) == 4 and abs(sum(weights) - 1) < 1e-5
        assert layer["routing"][0]["weight"] == pytest.approx(max(weights))
    base = pipeline.prepare(sample.image, sample.question, {"strategy": "none"}, None)
    assert torch.equal(prepared.prompt, base.prompt)  # the vision rows did not move
    first = pipeline.prepare(sample.image, sample.question, {"strategy": "kernel", "target": "lm", "guard": False,
                                                             "alpha": 0.0, "lm_positions": "first"}, None)
    assert first.lm_rows.positions == "first"  # the request's positions travel with its rows to the engine
