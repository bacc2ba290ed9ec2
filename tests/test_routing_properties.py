"""Whatever the inputs, every strategy returns a valid routing and leaves the model untouched."""

import hashlib

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from r2t2.routing import KERNELS, RerouteConfig, is_valid_routing, reroute, strategy_names
from routing_toys import (BestRoutingBatch, LabelledBatch, QuadraticModel, TinyMixtureNet, make_neighbourhood,
                          random_routings)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), layers=st.integers(1, 3), experts=st.integers(1, 5),
       n=st.integers(0, 9), k=st.integers(1, 6), strategy=st.sampled_from(strategy_names()),
       kernel=st.sampled_from(KERNELS), sharpness=st.floats(0.0, 20.0), use_epsilon=st.booleans())
@example(seed=0, layers=1, experts=1, n=0, k=1, strategy="meanshift", kernel="gaussian", sharpness=0.0,
         use_epsilon=False)  # an empty reference pool once crashed mean shift
def test_every_strategy_returns_a_valid_routing(seed: int, layers: int, experts: int, n: int, k: int,
                                                strategy: str, kernel: str, sharpness: float,
                                                use_epsilon: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    best = random_routings(n, layers, experts, generator, sharpness)
    neighbourhood = make_neighbourhood(torch.randn(n, 4, generator=generator), best, BestRoutingBatch(best))
    r0 = random_routings(1, layers, experts, generator, sharpness)[0]
    neighbourhood_settings = {"neighbourhood": "epsilon", "epsilon": 2.0} if use_epsilon else {}
    config = RerouteConfig(strategy=strategy, k=k, kernel=kernel, steps=5, oracle_steps=5,
                           **neighbourhood_settings)
    target = BestRoutingBatch(random_routings(1, layers, experts, generator, sharpness))
    result = reroute(QuadraticModel(layers, experts), r0, config, query_embedding=torch.randn(4, generator=generator),
                     neighbourhood=neighbourhood, pool_routings=best, target=target)
    assert is_valid_routing(result.routing)
    assert result.routing.shape == (layers, experts) and not result.routing.requires_grad
    assert torch.equal(result.base_routing, r0)
    if result.fallback is not None:
        assert n == 0 or use_epsilon or kernel in ("linear", "polynomial")


def _fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, parameter in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(parameter.detach().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("strategy", strategy_names())
def test_model_parameters_never_change_and_get_no_grad(strategy: str) -> None:
    generator = torch.Generator().manual_seed(7)
    model = TinyMixtureNet(layers=2, experts=3, features=6, classes=4)
    assert all(p.requires_grad for p in model.parameters())
    references = LabelledBatch(torch.randn(10, 6, generator=generator), torch.randint(0, 4, (10,), generator=generator))
    routings = random_routings(10, 2, 3, generator)
    neighbourhood = make_neighbourhood(torch.randn(10, 5, generator=generator), routings, references)
    r0 = model.base_routing(torch.randn(6, generator=generator))
    before = _fingerprint(model)
    result = reroute(model, r0, RerouteConfig(strategy=strategy), query_embedding=torch.randn(5, generator=generator),
                     neighbourhood=neighbourhood, pool_routings=routings, target=references[[0]])
    assert _fingerprint(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert is_valid_routing(result.routing) and result.fallback is None


def test_gradient_strategies_improve_a_real_network() -> None:
    generator = torch.Generator().manual_seed(3)
    model = TinyMixtureNet(layers=2, experts=3, features=6, classes=4)
    references = LabelledBatch(torch.randn(6, 6, generator=generator), torch.randint(0, 4, (6,), generator=generator))
    r0 = model.base_routing(torch.randn(6, generator=generator))
    target = references[[2]]
    with torch.no_grad():
        base_loss = float(model.routing_loss(target, r0))
    result = reroute(model, r0, RerouteConfig(strategy="oracle"), target=target)
    with torch.no_grad():
        assert float(model.routing_loss(target, result.routing)) < base_loss
    neighbourhood = make_neighbourhood(torch.randn(6, 5, generator=generator), random_routings(6, 2, 3, generator),
                                       references)
    ngd = reroute(model, r0, RerouteConfig(lr=0.05), query_embedding=torch.randn(5, generator=generator),
                  neighbourhood=neighbourhood)
    assert ngd.losses[-1] < ngd.losses[0]
