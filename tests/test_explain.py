"""Each record says in one sentence why its routing moved or not, and its fields cannot contradict each other."""

import pytest
import torch

from serving.pipeline.explain import explained, neighbour_questions
from r2t2.routing import RerouteConfig, reroute
from routing_toys import BestRoutingBatch, QuadraticModel, make_neighbourhood, random_routings

MODEL = QuadraticModel(1, 3)
R0 = torch.tensor([[0.8, 0.1, 0.1]])
ROUTINGS = random_routings(6, 1, 3, torch.Generator().manual_seed(0), sharpness=3.0)
NEIGHBOURHOOD = make_neighbourhood(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), ROUTINGS,
                                   BestRoutingBatch(ROUTINGS))
QUERY = torch.zeros(4)


def kernel(**options: object) -> dict:
    return reroute(MODEL, R0, RerouteConfig(strategy="kernel", k=5, **options), query_embedding=QUERY,
                   neighbourhood=NEIGHBOURHOOD).to_dict()


def test_a_kernel_record_kept_by_the_guard_is_not_toward_the_neighbours() -> None:
    moving = kernel()
    assert moving["moved"] > 0 and moving["toward_neighbours"] > 0
    kept = kernel(guard=True, guard_max_spread=0.0)  # any spread is too much: the guard fires
    assert kept["guard"]["fired"] and kept["guard"]["reason"] == "neighbours_disagree"
    assert kept["moved"] == 0 and kept["toward_neighbours"] == 0
    assert kept["guard"]["decided_before_steps"] and kept["line_search"] == []  # decided before any search
    after = kernel(guard=True, guard_min_gain=1e9)  # no move gains that much: fired once the search has run
    assert after["guard"]["reason"] == "no_loss_gain" and not after["guard"]["decided_before_steps"]
    assert after["moved"] == 0 and after["toward_neighbours"] == 0
    assert after["line_search"] == moving["line_search"]  # what the search tried is still shown


def test_moved_is_toward_neighbours_times_the_neighbours_distance() -> None:
    for alpha in (0.0, 0.25, 1.0):
        record = kernel(alpha=alpha)
        full = kernel(alpha=0.0)["moved"]
        assert record["moved"] == pytest.approx(record["toward_neighbours"] * full, abs=1e-6)


def record(strategy: str, moved: float = 0.0, **fields: object) -> dict:
    routing = {"vit": 0.1, "resnet": 0.9, "gray": 0.0}
    after = {"vit": 0.1 + moved, "resnet": 0.9 - moved, "gray": 0.0}
    return {"strategy": strategy, "base_routing": routing, "routing": after, "moved": moved, "fallback": None,
            "guard": None, "neighbours": [], **fields}


def copies(answers: list[str]) -> list[dict]:
    return [{"id": f"ref-{i}", "question": "what color is the shape?", "answer": answer, "task": "color",
             "similarity": 0.9, "weight": 1 / len(answers), "distance": 0.4} for i, answer in enumerate(answers)]


@pytest.mark.parametrize("given, expected", [
    (record("none"), "Strategy none answers with the router's own routing; nothing was re-routed."),
    (record("ngd", fallback="empty neighbourhood"), "NGD kept the router's routing: empty neighbourhood."),
    (record("ngd", 0.6, neighbour_loss=[2.31, 1.2, 0.13], steps_taken=2),
     "NGD moved 0.60 of the routing weight from resnet to vit: in 2 steps the neighbours' answer loss went from "
     "2.310 to 0.130."),
    (record("kernel", 0.3, toward_neighbours=0.5),
     "Kernel regression moved 0.30 of the routing weight from resnet to vit, 0.50 of the way to the neighbours' "
     "weighted routing."),
    (record("kernel", toward_neighbours=0.0),
     "Kernel regression left the routing where the router put it: the line search found the neighbours' loss "
     "lowest at the router's own routing."),
    (record("meanshift", steps_taken=0), "Mean shift left the routing where the router put it: it took no steps "
                                         "(steps 0)."),
    (record("ngd", guard={"fired": True, "reason": "base_fits_neighbours", "neighbour_spread": 0.1,
                          "neighbour_loss_base": 0.02, "neighbour_loss_moved": 0.01}, neighbours=copies(["red"] * 3)),
     "The evidence guard kept the router's routing: the neighbours are already answered well under it (their loss "
     "is 0.020), so nothing says it is wrong; its 3 neighbours are one question asked of 3 images (\"what color is "
     "the shape?\", answers red (3))."),
    (record("kernel", guard={"fired": True, "reason": "neighbours_disagree", "neighbour_spread": 0.61,
                             "neighbour_loss_base": 1.0, "neighbour_loss_moved": 0.5}),
     "The evidence guard kept the router's routing: the neighbours' own routings disagree (spread 0.61), so their "
     "average suits none of them."),
])
def test_the_sentence_says_why(given: dict, expected: str) -> None:
    assert explained(given)["explanation"] == expected


def test_a_move_of_the_lm_rows_names_their_experts() -> None:
    lm = {"applied": True, "layers": [
        {"row": "lm.layer1", "layer": 1, "engine_experts": ["e0", "e2"], "engine_tokens": 2,
         "base": [{"expert": "e2", "weight": 0.5}, {"expert": "e0", "weight": 0.3}, {"expert": "e1", "weight": 0.2}],
         "routing": [{"expert": "e0", "weight": 0.7}, {"expert": "e2", "weight": 0.2}, {"expert": "e1", "weight": 0.1}]}]}
    given = record("kernel", 0.0, toward_neighbours=1.0, lm_routing=lm)
    given["moved"] = 0.4  # the LM row moved; the vision row did not
    assert explained(given)["explanation"] == ("Kernel regression moved 0.40 of the routing weight from e2 to e0 in "
                                               "row lm.layer1, 1.00 of the way to the neighbours' weighted routing.")


def test_copies_of_one_question_are_one_group_with_their_answers() -> None:
    other = {"id": "ref-9", "question": "is there a circle?", "answer": "no", "task": "presence",
             "similarity": 0.5, "weight": 0.1, "distance": 0.9}
    groups = neighbour_questions([*copies(["red", "blue", "red"]), other])
    assert [(g["question"], g["count"], g["answers"]) for g in groups] == [
        ("what color is the shape?", 3, {"red": 2, "blue": 1}), ("is there a circle?", 1, {"no": 1})]
    assert groups[0]["weight"] == pytest.approx(1.0) and groups[0]["similarity"] == 0.9
    mixed = explained(record("ngd", guard={"fired": True, "reason": "no_loss_gain", "neighbour_spread": 0.1,
                                           "neighbour_loss_base": 1.5, "neighbour_loss_moved": 1.49},
                             neighbours=copies(["red", "blue", "red"])))["explanation"]
    assert mixed.endswith("(\"what color is the shape?\", answers red (2), blue (1)).")
