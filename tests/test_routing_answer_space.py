"""Answer-space descent on a quadratic toy: each "answer" is a best routing b_j, its loss ||r - b_j||^2, so the
answer mass under r is sum_j exp(-||r - b_j||^2) and the descent must end nearer the set than r0."""

import math

import pytest
import torch

from r2t2.routing import RerouteConfig, RerouteRequest, is_valid_routing, reroute_many
from r2t2.routing.answer_space import space_loss
from r2t2.routing.block import block_for
from routing_toys import BestRoutingBatch, QuadraticModel, make_neighbourhood

L, E = 2, 4


def _vertex(*experts: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(experts), E).float()


def _request(config: RerouteConfig, r0: torch.Tensor, answers: torch.Tensor) -> RerouteRequest:
    hood = make_neighbourhood(torch.eye(3, 5), torch.full((3, L, E), 1 / E), BestRoutingBatch(answers[[0, 0, 0]]))
    return RerouteRequest(r0, config, query_embedding=torch.zeros(5), neighbourhood=hood,
                          target=BestRoutingBatch(answers))


def _mass(routing: torch.Tensor, answers: torch.Tensor) -> float:
    return math.exp(-float(space_loss(QuadraticModel(L, E).routing_loss(BestRoutingBatch(answers), routing), len(answers))))


ANSWERS = torch.stack([_vertex(2, 3), _vertex(3, 2)])  # two "answers", both far from r0
R0 = _vertex(0, 1)


def test_it_moves_toward_the_answer_set_when_the_router_answers_outside_it():
    [result] = reroute_many(QuadraticModel(L, E), [_request(RerouteConfig(strategy="answer_space", lr=0.2), R0, ANSWERS)])
    assert is_valid_routing(result.routing)
    assert _mass(result.routing, ANSWERS) > _mass(R0, ANSWERS) + 0.1
    record = result.to_dict()
    assert record["answer_space_mass"][0] == pytest.approx(_mass(R0, ANSWERS), rel=1e-5)
    assert max(record["answer_space_mass"]) == pytest.approx(_mass(result.routing, ANSWERS), rel=1e-4)
    assert [n["id"] for n in record["neighbours"]] == ["ref-0", "ref-1", "ref-2"][:RerouteConfig().space_k]


def test_it_leaves_a_routing_that_already_answers_within_the_set():
    config = RerouteConfig(strategy="answer_space", lr=0.2, space_min_mass=0.1)
    near = 0.9 * ANSWERS[0] + 0.1 * R0
    [result] = reroute_many(QuadraticModel(L, E), [_request(config, near, ANSWERS)])
    assert torch.equal(result.routing, near)
    assert len(result.to_dict()["answer_space_mass"]) == 1 and result.steps == 0


def test_lm_rows_only_move_inside_their_block_and_requests_do_not_mix():
    """With a block (here: the second row alone) only it moves; two requests together give what each gives alone."""
    from r2t2.routing.layout import LayoutRow, RoutingLayout

    class TwoRowModel(QuadraticModel):
        routing_layout = RoutingLayout((LayoutRow("all", "vision", tuple("abcd")),
                                        LayoutRow("lm.layer0", "lm", tuple("efgh"), layer=0)))

        def routing_loss(self, batch, routing, pinned=None, lm_positions="answer"):
            return super().routing_loss(batch, routing)

    model = TwoRowModel(L, E)
    lm = RerouteConfig(strategy="answer_space", target="lm", lr=0.2)
    assert block_for(model.routing_layout, "lm", R0) is not None
    requests = [_request(lm, R0, ANSWERS), _request(lm.replace(steps=3), R0, ANSWERS[[1]])]
    together = reroute_many(model, requests)
    for request, result in zip(requests, together):
        assert torch.equal(result.routing[0], R0[0]) and not torch.equal(result.routing[1], R0[1])
        [alone] = reroute_many(model, [request])
        assert torch.allclose(result.routing, alone.routing, atol=1e-6)


def test_it_needs_the_request_labelled_with_its_neighbours_answers():
    request = _request(RerouteConfig(strategy="answer_space"), R0, ANSWERS)
    with pytest.raises(ValueError, match="needs target"):
        reroute_many(QuadraticModel(L, E), [RerouteRequest(R0, request.config, query_embedding=request.query_embedding,
                                                           neighbourhood=request.neighbourhood)])
