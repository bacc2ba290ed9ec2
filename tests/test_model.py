"""The shipped multimodal MoE: loading, the routing protocol, and the fast loss path."""

import pytest
import torch

from conftest import param_hash
from r2t2.data import load_split
from r2t2.model import DEFAULT_CHECKPOINT, load_model
from r2t2.routing import RerouteConfig, RoutedModel, is_valid_routing, reroute


@pytest.fixture(scope="module")
def model():
    return load_model("embedded")


@pytest.fixture(scope="module")
def batch(model):
    samples = load_split("reference", limit=12, seed=3)
    return model.labelled_batch([s.image for s in samples], [s.question for s in samples],
                                [s.answer for s in samples]), samples


def test_checkpoint_is_small_frozen_and_fingerprinted(model) -> None:
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"checkpoint is {size / 2**20:.1f} MiB"
    assert not any(p.requires_grad for p in model.parameters())
    assert isinstance(model, RoutedModel)
    assert model.routing_shape == (3, 4) and model.routing_layout.names == ["all", "lm.layer0", "lm.layer1"]
    assert model.fingerprint == load_model("embedded").fingerprint


def test_model_answers_reference_questions(model, batch) -> None:
    data, samples = batch
    answers = model.generate(data, model.route(data))
    accuracy = sum(a == s.answer for a, s in zip(answers, samples)) / len(samples)
    assert accuracy >= 0.6, list(zip(answers, [s.answer for s in samples]))


def test_base_routing_is_valid(model, batch) -> None:
    data, _ = batch
    routing = model.route(data)
    assert routing.shape == (12, 1, 3)
    assert all(is_valid_routing(r) for r in routing)
    base = model.base_routing(data[[0]])
    assert torch.allclose(base[:1, :3], routing[0]) and torch.all(base[0, 3:] == 0)
    assert is_valid_routing(base) and torch.allclose(base, model.full_routing(data[[0]], routing[[0]])[0])


def test_fast_routing_loss_equals_transformers_forward(model, batch) -> None:
    data, _ = batch
    routing = torch.softmax(torch.randn(12, 1, 3, generator=torch.Generator().manual_seed(0)), -1)
    fast = model.routing_loss(data, routing)
    full = model.answer_loss(data, routing)
    assert fast.shape == (12,)
    assert torch.allclose(fast, full, atol=1e-4), (fast - full).abs().max()


def test_routing_loss_is_differentiable_in_routing_only(model, batch) -> None:
    data, _ = batch
    before = param_hash(model)
    routing = torch.full((1, 3), 1 / 3, requires_grad=True)
    model.routing_loss(data, routing).mean().backward()
    assert routing.grad is not None and torch.isfinite(routing.grad).all()
    assert routing.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert param_hash(model) == before


@pytest.mark.parametrize("strategy", ["ngd", "oracle"])
def test_strategies_never_touch_weights(model, batch, strategy) -> None:
    data, _ = batch
    before = param_hash(model)
    query = data[[0]]
    neighbours = data[[1, 2, 3, 4, 5]]
    from r2t2.routing import Neighbourhood

    hood = Neighbourhood(ids=[str(i) for i in range(5)], embeddings=torch.eye(5, 8),
                         routings=model.full_routing(neighbours, model.route(neighbours)), batch=neighbours)
    result = reroute(model, model.base_routing(query), RerouteConfig(strategy=strategy, steps=3, oracle_steps=3),
                     query_embedding=torch.eye(8)[0], neighbourhood=hood, target=query)
    assert is_valid_routing(result.routing)
    assert param_hash(model) == before


def test_oracle_lowers_the_query_loss(model, batch) -> None:
    data, _ = batch
    query = data[[0]]
    r0 = model.base_routing(query)
    result = reroute(model, r0, RerouteConfig(strategy="oracle"), target=query)
    assert float(model.routing_loss(query, result.routing)[0]) <= float(model.routing_loss(query, r0)[0]) + 1e-6
