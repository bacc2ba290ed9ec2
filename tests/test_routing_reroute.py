"""The dispatcher refuses missing or mismatched inputs with clear errors and reports JSON-ready results."""

import json

import pytest
import torch

from r2t2.routing import Neighbourhood, RerouteConfig, reroute
from routing_toys import BestRoutingBatch, QuadraticModel, make_neighbourhood, random_routings

MODEL = QuadraticModel(2, 3)
R0 = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
ROUTINGS = random_routings(6, 2, 3, torch.Generator().manual_seed(0))
NEIGHBOURHOOD = make_neighbourhood(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), ROUTINGS,
                                   BestRoutingBatch(ROUTINGS))
QUERY = torch.zeros(4)


@pytest.mark.parametrize("r0, message", [
    (torch.full((3, 2), 0.5), "r0 must have the model's routing shape"),
    (torch.full((2, 3), 0.5), "r0 is not a valid routing"),
    (torch.tensor([[1.5, -0.5, 0.0], [1.0, 0.0, 0.0]]), "r0 is not a valid routing"),
    (torch.tensor([[float("nan"), 0.5, 0.5], [1.0, 0.0, 0.0]]), "r0 is not a valid routing"),
    (torch.ones(2, 3, dtype=torch.long), "r0 must be a floating-point tensor"),
    ([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], "r0 must be a floating-point tensor"),
])
def test_bad_r0_is_refused(r0: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reroute(MODEL, r0, RerouteConfig(strategy="none"))  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy, inputs, message", [
    ("ngd", {}, "needs query_embedding and neighbourhood"),
    ("kernel", {"query_embedding": QUERY}, "needs query_embedding and neighbourhood"),
    ("ngd", {"query_embedding": torch.zeros(5), "neighbourhood": NEIGHBOURHOOD}, "dimension 5"),
    ("ngd", {"query_embedding": torch.zeros(1, 4), "neighbourhood": NEIGHBOURHOOD}, "query_embedding must be a 1-D"),
    ("ngd", {"query_embedding": torch.full((4,), float("inf")), "neighbourhood": NEIGHBOURHOOD}, "finite"),
    ("ngd", {"query_embedding": QUERY, "neighbourhood": make_neighbourhood(
        torch.zeros(6, 4), torch.full((6, 3, 2), 0.5), BestRoutingBatch(ROUTINGS))}, "routings must be"),
    ("kernel", {"query_embedding": QUERY, "neighbourhood": make_neighbourhood(
        torch.zeros(6, 4), ROUTINGS * 2, BestRoutingBatch(ROUTINGS))}, "routings must be valid"),
    ("meanshift", {}, "needs pool_routings"),
    ("meanshift", {"pool_routings": torch.full((4, 3, 2), 0.5)}, r"pool_routings must be \[N, 2, 3\]"),
    ("meanshift", {"pool_routings": ROUTINGS + 1}, "pool_routings must be valid"),
    ("oracle", {}, "needs target"),
    ("oracle", {"target": BestRoutingBatch(ROUTINGS)}, "exactly one sample"),
])
def test_missing_or_mismatched_inputs_are_refused(strategy: str, inputs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reroute(MODEL, R0, RerouteConfig(strategy=strategy), **inputs)


def test_model_and_config_types_are_checked() -> None:
    with pytest.raises(ValueError, match="RoutedModel"):
        reroute(object(), R0, RerouteConfig())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RerouteConfig"):
        reroute(MODEL, R0, {"strategy": "ngd"})  # type: ignore[arg-type]


def test_neighbourhood_validates_its_own_alignment() -> None:
    with pytest.raises(ValueError, match="batch has 6 samples"):
        Neighbourhood(ids=["a", "b"], embeddings=torch.zeros(2, 4), routings=ROUTINGS[:2],
                      batch=BestRoutingBatch(ROUTINGS))


def test_result_is_json_ready_and_timed() -> None:
    result = reroute(MODEL, R0, RerouteConfig(strategy="kernel", k=3), query_embedding=QUERY,
                     neighbourhood=NEIGHBOURHOOD)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["strategy"] == "kernel" and payload["fallback"] is None and result.seconds > 0
    assert torch.equal(torch.tensor(payload["base_routing"]), R0)
    assert len(payload["neighbours"]) == 3 and set(payload["neighbours"][0]) == {"id", "weight", "distance"}
    assert sum(n["weight"] for n in payload["neighbours"]) == pytest.approx(1.0)
    assert len(payload["line_search"]) == 10 and payload["toward_neighbours"] == 1 - result.alpha
    assert torch.tensor(payload["routing"]).shape == (2, 3)
    # Kernel regression takes no steps: no step count and no per-step trace, unlike NGD.
    assert payload["neighbour_space"] == "question" and "steps_taken" not in payload
    assert not {"losses", "alpha", "steps", "seconds"} & set(payload)


def test_record_names_each_strategy_s_own_work() -> None:
    ngd = reroute(MODEL, R0, RerouteConfig(steps=4, lr=0.1), query_embedding=QUERY, neighbourhood=NEIGHBOURHOOD)
    shift = reroute(MODEL, R0, RerouteConfig(strategy="meanshift", k=3), pool_routings=ROUTINGS)
    none = reroute(MODEL, R0, RerouteConfig(strategy="none")).to_dict()
    assert ngd.to_dict()["steps_taken"] == 4 and len(ngd.to_dict()["neighbour_loss"]) == 5
    assert shift.to_dict()["neighbour_space"] == "routing"
    assert len(shift.to_dict()["distance_moved"]) == shift.to_dict()["steps_taken"] >= 1
    assert none["moved"] == 0 and none["neighbours"] == [] and none["neighbour_space"] is None
    assert set(none) - {"guard"} == {"strategy", "base_routing", "routing", "moved", "fallback", "neighbour_space",
                                     "neighbours"}
    assert 0 < ngd.to_dict()["moved"] <= 1


def test_inputs_are_not_modified_and_results_do_not_share_state() -> None:
    r0 = R0.clone()
    first = reroute(MODEL, r0, RerouteConfig(lr=0.1), query_embedding=QUERY, neighbourhood=NEIGHBOURHOOD)
    second = reroute(MODEL, r0, RerouteConfig(lr=0.1), query_embedding=QUERY, neighbourhood=NEIGHBOURHOOD)
    assert torch.equal(r0, R0) and torch.equal(NEIGHBOURHOOD.routings, ROUTINGS)
    assert torch.equal(first.routing, second.routing) and first.losses == second.losses
    assert not torch.equal(first.routing, R0)
