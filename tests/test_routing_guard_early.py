"""The guard's verdicts that need no step are reached before the steps: same routing as judging afterwards, fewer
model calls, and a batch's requests unaffected by which of them stopped early."""
import pytest
import torch

from r2t2.routing import RerouteConfig, reroute, reroute_many
from r2t2.routing.guard import GuardSettings, judge
from r2t2.routing.neighbours import weigh_neighbourhood
from r2t2.routing.reroute import decide_before_steps
from r2t2.routing.request import RerouteRequest
from routing_toys import BestRoutingBatch, CallCounter, QuadraticModel, make_neighbourhood, random_routings

L, E, D = 2, 3, 5
MODEL = QuadraticModel(L, E)


def scene(seed: int):
    generator = torch.Generator().manual_seed(seed)
    best = random_routings(8, L, E, generator, sharpness=float(1 + seed % 4))
    hood = make_neighbourhood(torch.randn(8, D, generator=generator), best, BestRoutingBatch(best))
    return random_routings(1, L, E, generator, sharpness=4.0)[0], torch.randn(D, generator=generator), hood


def judged_afterwards(r0, query, hood, config: RerouteConfig) -> torch.Tensor:
    """The routing the guard gives when it judges the unguarded strategy's result (the order before the early
    decision): r0 when it fires, the strategy's routing otherwise."""
    free = reroute(MODEL, r0, config.replace(guard=False), query_embedding=query, neighbourhood=hood)
    chosen = weigh_neighbourhood(query, hood, config)
    weights = chosen.weights

    def losses(routings: torch.Tensor) -> torch.Tensor:
        return torch.stack([(weights * MODEL.routing_loss(hood.batch[chosen.indices.tolist()], r.expand(
            len(weights), L, E))).sum() for r in routings])

    verdict = judge(r0, free.routing, weights, hood.routings[chosen.indices], losses,
                    GuardSettings.of(config))
    return r0 if verdict.fired else free.routing


@pytest.mark.parametrize("strategy", ["kernel", "ngd"])
@pytest.mark.parametrize("fit_loss", [0.0, 0.3, 0.6])
def test_deciding_before_the_steps_gives_the_routing_judging_after_them_gives(strategy: str, fit_loss: float) -> None:
    decided = 0
    for seed in range(12):
        r0, query, hood = scene(seed)
        config = RerouteConfig(strategy=strategy, k=4, guard=True, guard_max_spread=0.35, guard_fit_loss=fit_loss)
        result = reroute(MODEL, r0, config, query_embedding=query, neighbourhood=hood)
        assert torch.allclose(result.routing, judged_afterwards(r0, query, hood, config), atol=1e-6)
        decided += result.guard.before_steps
        if result.guard.before_steps:
            assert result.guard.fired and result.guard.reason in ("neighbours_disagree", "base_fits_neighbours")
    assert decided > 0  # the scenes reach the early verdicts


def test_neighbours_that_disagree_cost_no_model_call() -> None:
    r0, query, hood = scene(0)
    for strategy in ("kernel", "ngd"):
        counted = CallCounter(MODEL)
        result = reroute(counted, r0, RerouteConfig(strategy=strategy, guard=True, guard_max_spread=0.0),
                         query_embedding=query, neighbourhood=hood)
        assert counted.batch_sizes == [] and result.guard.reason == "neighbours_disagree"
        assert result.guard.base_loss is None and torch.equal(result.routing, r0)


@pytest.mark.parametrize("strategy", ["kernel", "ngd"])
def test_a_base_that_fits_costs_one_evaluation(strategy: str) -> None:
    r0, query, hood = scene(1)
    counted = CallCounter(MODEL)
    result = reroute(counted, r0, RerouteConfig(strategy=strategy, k=4, guard=True, guard_max_spread=1.0,
                                                guard_fit_loss=1e9), query_embedding=query, neighbourhood=hood)
    assert counted.batch_sizes == [4]  # r0's loss, and for NGD no gradient
    assert result.guard.reason == "base_fits_neighbours" and result.guard.before_steps
    assert result.guard.base_loss == result.guard.moved_loss and torch.equal(result.routing, r0)
    assert result.steps == (1 if strategy == "kernel" else 0)


@pytest.mark.parametrize("strategy", ["kernel", "ngd"])
def test_requests_that_stop_early_leave_their_batch_mates_alone(strategy: str) -> None:
    requests = []
    for seed in range(6):
        r0, query, hood = scene(seed)
        fit = 1e9 if seed % 2 else 0.0  # every other request stops at r0
        requests.append(RerouteRequest(r0, RerouteConfig(strategy=strategy, k=4, guard=True, guard_max_spread=1.0,
                                                         guard_fit_loss=fit), query, hood))
    together = reroute_many(MODEL, requests)
    for request, result in zip(requests, together):
        alone = reroute_many(MODEL, [request])[0]
        assert torch.allclose(result.routing, alone.routing, atol=1e-6)
        assert result.guard.before_steps == alone.guard.before_steps == (request.config.guard_fit_loss > 1)


def test_requests_decided_from_their_neighbours_are_known_before_any_model_call() -> None:
    counted = CallCounter(MODEL)
    requests = [RerouteRequest(r0, RerouteConfig(strategy="ngd", k=4, guard=True, guard_max_spread=1.0,
                                                 guard_min_shift=1.0 if seed % 2 else 0.0), query, hood)
                for seed, (r0, query, hood) in enumerate(scene(seed) for seed in range(6))]
    decided = decide_before_steps(counted, requests)
    assert counted.batch_sizes == [] and [result is not None for result in decided] == [False, True] * 3
    for early, result, request in zip(decided, reroute_many(MODEL, requests), requests):
        if early is not None:  # the neighbours lie within 1.0 of every r0
            assert early.guard == result.guard and early.guard.reason == "neighbours_agree_with_router"
            assert torch.equal(early.routing, request.r0) and torch.equal(result.routing, request.r0)
