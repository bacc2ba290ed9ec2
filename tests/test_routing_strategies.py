"""Each strategy does what the method says, on models whose optima are known."""

import torch

from r2t2.routing import RerouteConfig, is_valid_routing, project_to_simplex, reroute
from routing_toys import BestRoutingBatch, CallCounter, QuadraticModel, make_neighbourhood, random_routings

L, E, D = 2, 4, 6


def scene(seed: int = 0, n: int = 12):
    generator = torch.Generator().manual_seed(seed)
    best = random_routings(n, L, E, generator, sharpness=2.0)
    neighbourhood = make_neighbourhood(torch.randn(n, D, generator=generator), best, BestRoutingBatch(best))
    r0 = random_routings(1, L, E, generator, sharpness=4.0)[0]
    return r0, torch.randn(D, generator=generator), neighbourhood


def weighted_loss(result, neighbourhood, routing: torch.Tensor) -> float:
    position = {name: i for i, name in enumerate(neighbourhood.ids)}
    idx = [position[n.id] for n in result.neighbours]
    weights = torch.tensor([n.weight for n in result.neighbours])
    return float((weights * (routing - neighbourhood.routings[idx]).pow(2).sum((-2, -1))).sum())


def test_none_returns_the_base_routing() -> None:
    r0, query, neighbourhood = scene()
    result = reroute(QuadraticModel(L, E), r0, RerouteConfig(strategy="none"), query_embedding=query,
                     neighbourhood=neighbourhood)
    assert torch.equal(result.routing, r0) and result.fallback is None and result.losses == ()


def test_ngd_lowers_the_neighbour_loss_with_one_batched_call_per_step() -> None:
    r0, query, neighbourhood = scene()
    model = CallCounter(QuadraticModel(L, E))
    result = reroute(model, r0, RerouteConfig(steps=10, lr=0.05), query_embedding=query,
                     neighbourhood=neighbourhood)
    assert result.fallback is None and result.steps == 10 and len(result.losses) == 11
    assert model.batch_sizes == [5] * 11  # k = 5 neighbours, one call per step plus the final loss
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert sum(b > a + 1e-6 for a, b in zip(result.losses, result.losses[1:])) <= 2
    # the trace is the kernel-weighted loss of the reported neighbours at the start and the end
    assert abs(weighted_loss(result, neighbourhood, r0) - result.losses[0]) < 1e-5
    assert abs(weighted_loss(result, neighbourhood, result.routing) - result.losses[-1]) < 1e-5
    assert abs(sum(n.weight for n in result.neighbours) - 1) < 1e-6


class TiltedQuadraticModel(QuadraticModel):
    """Adds 10 * sum(r): constant on the simplex, but every gradient entry shifts by the same +10."""

    def routing_loss(self, batch: BestRoutingBatch, routing: torch.Tensor) -> torch.Tensor:
        return super().routing_loss(batch, routing) + 10 * routing.sum((-2, -1))


def test_ngd_moves_even_when_the_gradient_has_a_shared_offset() -> None:
    r0, query, neighbourhood = scene()
    plain = reroute(QuadraticModel(L, E), r0, RerouteConfig(lr=0.05), query_embedding=query,
                    neighbourhood=neighbourhood)
    tilted = reroute(TiltedQuadraticModel(L, E), r0, RerouteConfig(lr=0.05), query_embedding=query,
                     neighbourhood=neighbourhood)
    assert tilted.losses[-1] < tilted.losses[0] - 0.1
    torch.testing.assert_close(tilted.routing, plain.routing)


def test_kernel_regression_with_alpha_zero_is_the_weighted_mean() -> None:
    r0, query, neighbourhood = scene()
    result = reroute(QuadraticModel(L, E), r0, RerouteConfig(strategy="kernel", alpha=0.0, k=4),
                     query_embedding=query, neighbourhood=neighbourhood)
    d = (neighbourhood.embeddings - query).norm(dim=-1)
    idx = torch.argsort(d)[:4]
    h = float(d[idx].sort().values[1:3].mean())  # median heuristic: of four distances, the middle two's mean
    weights = torch.exp(-d[idx] ** 2 / (2 * h * h))
    expected = (weights[:, None, None] * neighbourhood.routings[idx]).sum(0) / weights.sum()
    torch.testing.assert_close(result.routing, expected)
    assert result.alpha == 0.0 and result.line_search == ()
    assert [n.id for n in result.neighbours] == [f"ref-{i}" for i in idx.tolist()]


def test_kernel_line_search_finds_the_best_mix() -> None:
    r0, query, stored = scene(seed=3)
    # each neighbour's best routing lies halfway between r0 and the routing it was answered with, so
    # the neighbour loss along alpha * r0 + (1 - alpha) * r_hat is smallest at alpha = 1/2
    best_routings = BestRoutingBatch(0.5 * r0 + 0.5 * stored.routings)
    neighbourhood = make_neighbourhood(stored.embeddings, stored.routings, best_routings)
    model = CallCounter(QuadraticModel(L, E))
    result = reroute(model, r0, RerouteConfig(strategy="kernel", line_search_steps=8),
                     query_embedding=query, neighbourhood=neighbourhood)
    assert len(result.line_search) == 10 == len(model.batch_sizes)
    assert [p.alpha for p in result.line_search[:2]] == [1.0, 0.0]  # r0 first: the guard may stop there
    assert abs(result.alpha - 0.5) < 0.05
    best = min(p.loss for p in result.line_search)
    assert best < min(p.loss for p in result.line_search[:2])
    r_hat = reroute(model.model, r0, RerouteConfig(strategy="kernel", alpha=0.0), query_embedding=query,
                    neighbourhood=neighbourhood).routing
    torch.testing.assert_close(result.routing, result.alpha * r0 + (1 - result.alpha) * r_hat)
    position = {name: i for i, name in enumerate(neighbourhood.ids)}
    idx = [position[n.id] for n in result.neighbours]
    weights = torch.tensor([n.weight for n in result.neighbours])
    own = (weights * (result.routing - best_routings.best[idx]).pow(2).sum((-2, -1))).sum()
    assert abs(float(own) - best) < 1e-5


def test_mean_shift_finds_the_mode_of_a_planted_cluster() -> None:
    generator = torch.Generator().manual_seed(1)
    mode = torch.tensor([[0.6, 0.2, 0.15, 0.05], [0.1, 0.1, 0.2, 0.6]])
    cluster = project_to_simplex(mode + 0.02 * torch.randn(40, L, E, generator=generator))
    noise = random_routings(40, L, E, generator, sharpness=3.0)
    pool = torch.cat([noise[:20], cluster, noise[20:]])
    r0 = 0.6 * mode + 0.4 * torch.full((L, E), 1 / E)
    config = RerouteConfig(strategy="meanshift", k=15, steps=60, meanshift_tol=1e-6)
    result = reroute(QuadraticModel(L, E), r0, config, pool_routings=pool)
    assert (result.routing - mode).norm() < 0.03 < (r0 - mode).norm()
    assert result.losses[-1] < 1e-3 and result.losses[-1] < result.losses[0]
    assert all(20 <= int(n.id) < 60 for n in result.neighbours)  # the last step saw only the cluster


def test_mean_shift_stops_early_once_it_stops_moving() -> None:
    pool = torch.tensor([[[0.7, 0.3]]]).expand(6, 1, 2)
    config = RerouteConfig(strategy="meanshift", k=3, steps=50, meanshift_tol=1e-4)
    result = reroute(QuadraticModel(1, 2), torch.tensor([[0.2, 0.8]]), config, pool_routings=pool)
    assert result.steps < 50 and result.losses[-1] < 1e-4
    torch.testing.assert_close(result.routing, torch.tensor([[0.7, 0.3]]), atol=1e-4, rtol=0)


def test_oracle_returns_the_best_routing_it_saw_not_the_last() -> None:
    optimum = torch.tensor([[0.97, 0.03, 0.0, 0.0]])
    model = QuadraticModel(1, E)
    result = reroute(model, torch.full((1, E), 0.25), RerouteConfig(strategy="oracle", oracle_steps=1),
                     target=BestRoutingBatch(optimum[None]))
    assert min(result.losses) < result.losses[-1]  # Adam's first big step overshoots the near-vertex optimum
    assert float(model.routing_loss(BestRoutingBatch(optimum[None]), result.routing)) == min(result.losses)


def test_mean_shift_with_an_empty_pool_keeps_the_base_routing() -> None:
    r0 = torch.tensor([[0.2, 0.8]])
    result = reroute(QuadraticModel(1, 2), r0, RerouteConfig(strategy="meanshift"),
                     pool_routings=torch.zeros(0, 1, 2))
    assert result.fallback == "empty neighbourhood" and torch.equal(result.routing, r0)


def test_oracle_reaches_the_targets_optimum() -> None:
    optimum = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    r0 = torch.tensor([[0.0, 0.0, 0.1, 0.9], [0.9, 0.1, 0.0, 0.0]])
    result = reroute(QuadraticModel(L, E), r0, RerouteConfig(strategy="oracle"),
                     target=BestRoutingBatch(optimum[None]))
    assert result.fallback is None and len(result.losses) == 51
    torch.testing.assert_close(result.routing, optimum, atol=0.03, rtol=0)


def test_oracle_starts_from_the_best_vertex() -> None:
    vertex = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    result = reroute(QuadraticModel(1, E), torch.full((1, E), 0.25),
                     RerouteConfig(strategy="oracle", oracle_steps=3), target=BestRoutingBatch(vertex[None]))
    assert result.losses[0] == 0.0 and torch.equal(result.routing, vertex)


def test_empty_epsilon_ball_falls_back_to_the_base_routing() -> None:
    r0, query, neighbourhood = scene()
    for strategy in ("ngd", "kernel"):
        config = RerouteConfig(strategy=strategy, neighbourhood="epsilon", epsilon=1e-3)
        result = reroute(QuadraticModel(L, E), r0, config, query_embedding=query, neighbourhood=neighbourhood)
        assert result.fallback == "empty neighbourhood"
        assert torch.equal(result.routing, r0) and result.neighbours == ()


def test_epsilon_ball_uses_every_candidate_within_epsilon() -> None:
    r0, query, neighbourhood = scene()
    d = (neighbourhood.embeddings - query).norm(dim=-1)
    epsilon = float(d.sort().values[7])
    result = reroute(QuadraticModel(L, E), r0, RerouteConfig(neighbourhood="epsilon", epsilon=epsilon),
                     query_embedding=query, neighbourhood=neighbourhood)
    assert len(result.neighbours) == 8 and result.fallback is None


def test_non_finite_loss_mid_descent_keeps_the_last_finite_routing() -> None:
    r0 = torch.tensor([[0.34, 0.22, 0.22, 0.22]])
    far = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]]).expand(5, 1, 4)
    neighbourhood = make_neighbourhood(torch.eye(5, D), far, BestRoutingBatch(far))
    model = QuadraticModel(1, 4, barrier=0.3)  # log(r[0, 0] - 0.3): NaN once descent pushes r[0, 0] below
    result = reroute(model, r0, RerouteConfig(lr=0.02, steps=10), query_embedding=torch.zeros(D),
                     neighbourhood=neighbourhood)
    assert result.fallback is not None and "non-finite" in result.fallback
    assert 0 < result.steps < 10 and all(torch.isfinite(torch.tensor(result.losses)))
    assert is_valid_routing(result.routing) and result.routing[0, 0] > 0.3
    assert torch.isfinite(model.routing_loss(BestRoutingBatch(far), result.routing)).all()


def test_loss_that_is_never_finite_leaves_the_base_routing() -> None:
    r0, query, neighbourhood = scene()
    poisoned = QuadraticModel(L, E, poisoned=True)
    for strategy in ("ngd", "kernel", "oracle"):
        result = reroute(poisoned, r0, RerouteConfig(strategy=strategy), query_embedding=query,
                         neighbourhood=neighbourhood, target=neighbourhood.batch[[0]])
        assert result.fallback is not None and "non-finite" in result.fallback, strategy
        assert torch.equal(result.routing, r0), strategy
