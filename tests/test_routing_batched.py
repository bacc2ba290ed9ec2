"""Re-routing a batch of requests gives each request exactly what it gets alone, in fewer model calls."""

import dataclasses

import pytest
import torch

from r2t2.routing import RerouteConfig, RerouteRequest, is_valid_routing, reroute, reroute_many
from routing_toys import (BestRoutingBatch, JoiningNet, LabelledBatch, QuadraticModel, make_neighbourhood,
                          random_routings)

L, E, D = 2, 3, 6


def requests(seed: int = 0) -> list[RerouteRequest]:
    """Requests with different strategies and settings over one reference set."""
    generator = torch.Generator().manual_seed(seed)
    n = 20
    batch = LabelledBatch(torch.randn(n, D, generator=generator), torch.randint(0, 4, (n,), generator=generator))
    hood = make_neighbourhood(torch.randn(n, D, generator=generator),
                              random_routings(n, L, E, generator, sharpness=2.0), batch)
    configs = [RerouteConfig(lr=0.2), RerouteConfig(lr=0.05, k=3), RerouteConfig(strategy="kernel"),
               RerouteConfig(strategy="none"), RerouteConfig(strategy="kernel", k=7, kernel="matern"),
               RerouteConfig(lr=0.1, lr_min=0.01, kernel="linear"), RerouteConfig(steps=4),
               RerouteConfig(strategy="kernel", alpha=0.3), RerouteConfig(strategy="meanshift", k=4),
               RerouteConfig(neighbourhood="epsilon", epsilon=1e-9)]  # an empty ball: falls back alone
    out = []
    for i in range(16):
        r0 = random_routings(1, L, E, generator, sharpness=3.0)[0]
        out.append(RerouteRequest(r0, configs[i % len(configs)], query_embedding=torch.randn(D, generator=generator),
                                  neighbourhood=hood, pool_routings=hood.routings))
    return out


def test_each_request_of_a_mixed_batch_gets_what_it_gets_alone() -> None:
    model = JoiningNet()
    batch = requests()
    together = reroute_many(model, batch)
    for request, joint in zip(batch, together):
        alone = reroute_many(model, [request])[0]
        assert joint.strategy == alone.strategy == request.config.strategy
        assert torch.allclose(joint.routing, alone.routing, atol=1e-6, rtol=0), request.config
        assert joint.fallback == alone.fallback and joint.steps == alone.steps
        assert [n.id for n in joint.neighbours] == [n.id for n in alone.neighbours]
        assert joint.losses == pytest.approx(alone.losses, abs=1e-6)
        assert is_valid_routing(joint.routing)


def test_each_request_of_one_strategy_has_model_calls_of_its_own() -> None:
    model = JoiningNet()
    ngd = [dataclasses.replace(r, config=r.config.replace(ngd_tol=0.0)) for r in requests()
           if r.config.strategy == "ngd" and r.config.steps == 10 and r.config.neighbourhood == "knn"]
    reroute_many(model, ngd)
    assert model.calls == [r.config.k for r in ngd] * 11  # 10 steps + the final loss, a call per request in each


def test_a_model_that_cannot_join_batches_gives_the_same_results() -> None:
    generator = torch.Generator().manual_seed(3)
    best = random_routings(12, L, E, generator, sharpness=2.0)
    hood = make_neighbourhood(torch.randn(12, D, generator=generator), best, BestRoutingBatch(best))
    batch = [RerouteRequest(random_routings(1, L, E, generator)[0], RerouteConfig(lr=0.1 * (i + 1)),
                            query_embedding=torch.randn(D, generator=generator), neighbourhood=hood) for i in range(4)]
    together = reroute_many(QuadraticModel(L, E), batch)
    for request, joint in zip(batch, together):
        alone = reroute(QuadraticModel(L, E), request.r0, request.config, query_embedding=request.query_embedding,
                        neighbourhood=hood)
        assert torch.allclose(joint.routing, alone.routing, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lr", [1e30, 1e300])
def test_a_learning_rate_that_overflows_falls_back_for_that_request_only(lr: float) -> None:
    batch = requests()[:2]
    blown, fine = RerouteRequest(batch[0].r0, RerouteConfig(lr=lr), batch[0].query_embedding, batch[0].neighbourhood), batch[1]
    results = reroute_many(JoiningNet(), [blown, fine])
    assert results[0].fallback is not None and "overflowed" in results[0].fallback
    assert is_valid_routing(results[0].routing)
    assert results[1].fallback is None
    assert torch.allclose(results[1].routing, reroute_many(JoiningNet(), [fine])[0].routing, atol=1e-6, rtol=0)


def test_a_bad_request_is_refused_before_any_model_work() -> None:
    model = JoiningNet()
    batch = requests()[:3]
    broken = RerouteRequest(torch.full((L, E), 0.5), RerouteConfig())  # rows do not sum to one
    with pytest.raises(ValueError, match="not a valid routing"):
        reroute_many(model, batch + [broken])
    assert model.calls == []


def test_the_guard_reads_the_strategy_s_own_losses_without_another_model_call() -> None:
    model = JoiningNet()
    request = requests()[0]
    guarded = RerouteRequest(request.r0, RerouteConfig(lr=0.2, guard=True), request.query_embedding,
                             request.neighbourhood)
    result = reroute_many(model, [guarded])[0]
    assert model.calls == [5] * 11  # the descent's calls only
    assert result.guard is not None
    assert (result.guard.base_loss, result.guard.moved_loss) == (result.losses[0], result.losses[-1])
    searched = reroute_many(model, [RerouteRequest(request.r0, RerouteConfig(strategy="kernel", guard=True),
                                                   request.query_embedding, request.neighbourhood)])[0]
    assert len(model.calls) == 11 + len(searched.line_search)
