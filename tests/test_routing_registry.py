"""The strategy registry: a strategy added from outside r2t2 (tests/toy_strategy.py) through `register` alone is
validated, batched, recorded, explained and served like a built-in one, and docs/method.md lists the built-ins."""
from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from r2t2.routing import (Needs, RerouteConfig, RerouteRequest, Strategy, import_strategies, register, reroute_many,
                          strategies, strategy, strategy_names)
from routing_toys import QuadraticModel, random_routings

ROOT = Path(__file__).resolve().parents[1]
NAME = "halfway"  # tests/toy_strategy.py


@pytest.fixture(autouse=True)
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """tests/toy_strategy.py imported (so registered) for one test, in a copy of the registry: the session's own
    registry, which other tests' servers and OpenAPI documents are compared with, keeps the built-ins alone."""
    monkeypatch.setattr(strategies, "_REGISTERED", dict(strategies._REGISTERED))
    sys.modules.pop("toy_strategy", None)
    yield importlib.import_module("toy_strategy")
    sys.modules.pop("toy_strategy", None)


def test_a_registered_strategy_is_accepted_and_served() -> None:
    assert NAME in strategy_names() and NAME in strategy_names(served=True)
    assert RerouteConfig().replace(strategy=NAME).strategy == NAME
    assert "oracle" in strategy_names() and "oracle" not in strategy_names(served=True)


def test_an_unknown_strategy_is_refused_naming_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=rf"unknown strategy 'magic'; expected one of none, .*ngd.*{NAME}"):
        RerouteConfig(strategy="magic")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'ngd' is already registered"):
        register(strategy("ngd"))


@pytest.mark.parametrize("name", ["two words", "ngd:fast", ""])
def test_a_name_must_be_usable_as_an_option(name: str, toy: ModuleType) -> None:
    with pytest.raises(ValueError, match="identifier"):
        Strategy(name=name, title="x", description="x", needs=Needs.NOTHING, run=toy.halfway)


def test_only_a_strategy_with_question_space_neighbours_can_be_guarded(toy: ModuleType) -> None:
    with pytest.raises(ValueError, match="guarded strategy needs Needs.NEIGHBOURS"):
        Strategy(name="loose", title="x", description="x", needs=Needs.POOL, run=toy.halfway, guarded=True)


def test_a_strategy_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ValueError, match="strategy module 'no_such_strategies' cannot be imported"):
        import_strategies(["toy_strategy", "no_such_strategies"])


def test_a_server_does_not_start_with_a_strategy_module_it_cannot_import() -> None:
    from serving.config import ServerConfig
    from serving.lifecycle.preflight import StartupError, check_models

    with pytest.raises(StartupError, match="^strategies: strategy module 'no_such_strategies' cannot be imported"):
        check_models(ServerConfig(strategies=["toy_strategy", "no_such_strategies"]))


def test_the_toy_strategy_runs_in_a_batch_beside_the_built_ins() -> None:
    model = QuadraticModel(2, 4)
    generator = torch.Generator().manual_seed(0)
    r0 = random_routings(3, 2, 4, generator, sharpness=5.0)
    pool = random_routings(8, 2, 4, generator)
    requests = [RerouteRequest(r0[0], RerouteConfig(strategy=NAME, guard=True)),
                RerouteRequest(r0[1], RerouteConfig(strategy="meanshift"), pool_routings=pool),
                RerouteRequest(r0[2], RerouteConfig(strategy=NAME))]
    toy, shifted, other = reroute_many(model, requests)
    for result, base in ((toy, r0[0]), (other, r0[2])):
        assert result.strategy == NAME and result.fallback is None
        assert torch.allclose(result.routing, (base + 0.25) / 2)
    assert toy.guard is None  # the evidence guard applies to strategies with question-space neighbours only
    assert shifted.strategy == "meanshift" and shifted.neighbours
    record = toy.to_dict()
    assert record["strategy"] == NAME and record["neighbour_space"] is None and record["neighbours"] == []
    assert "kernel_bandwidth" not in record and "steps_taken" not in record


def test_the_toy_strategy_moves_only_what_a_target_lets_move() -> None:
    model = QuadraticModel(1, 4)
    r0 = torch.tensor([[0.7, 0.2, 0.1, 0.0]])
    (result,) = reroute_many(model, [RerouteRequest(r0, RerouteConfig(strategy=NAME, core_experts=2))])
    assert torch.allclose(result.routing, torch.tensor([[0.575, 0.325, 0.1, 0.0]]))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 (the pipeline under test)
    from serving.pipeline.factory import load_pipeline

    # The toy strategy needs no reference index, so none is built.
    return load_pipeline({"checkpoint": "embedded", "index_dir": str(tmp_path_factory.mktemp("indexes")),
                          "build_default_index": False})


def test_the_toy_strategy_runs_through_the_pipeline(pipeline) -> None:  # noqa: ANN001
    from serving.pipeline.protocol import ServeRequest
    from r2t2.data import load_split

    sample = load_split("test", limit=1)[0]
    toy, unknown, base = pipeline.prepare_many([ServeRequest(sample.image, sample.question, {"strategy": s}, None)
                                                for s in (NAME, "magic", "none")])
    assert isinstance(unknown, ValueError) and NAME in str(unknown)
    record = toy.record.public()
    assert record["strategy"] == NAME and record["neighbours"] == [] and record["index"] is None
    experts = len(record["base_routing"])
    for expert, weight in record["routing"].items():
        assert weight == pytest.approx((record["base_routing"][expert] + 1 / experts) / 2, abs=1e-6)
    assert record["explanation"].startswith("Half-way moved ")
    assert base.record.public()["routing"] == record["base_routing"]


def test_the_method_documents_every_built_in_strategy() -> None:
    text = (ROOT / "docs" / "method.md").read_text()
    table = text[text.index("## The strategies"):].split("\n\n")[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    documented = [(re.fullmatch(r"`(\w+)`", row[0])[1], row[1]) for row in rows]
    built_in = [name for name in strategy_names() if strategy(name).run.__module__.startswith("r2t2.")]
    assert documented == [(name, strategy(name).description) for name in built_in]
