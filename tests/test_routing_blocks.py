"""Re-routing part of a routing: vision rows, LM rows of another width, both, or only core experts."""

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from r2t2.routing import RerouteConfig, RerouteRequest, is_valid_routing, reroute_many
from r2t2.routing.block import block_for
from r2t2.routing.layout import LayoutRow, RoutingLayout
from routing_toys import BestRoutingBatch, QuadraticModel, make_neighbourhood, random_routings

VISION, LM = 3, 4  # expert counts: one vision row of 3, two LM rows of 4 (the matrix is [3, 4])
LAYOUT = RoutingLayout((LayoutRow("all", "vision", ("a", "b", "c")),
                        LayoutRow("lm.layer0", "lm", ("e0", "e1", "e2", "e3"), layer=0),
                        LayoutRow("lm.layer1", "lm", ("e0", "e1", "e2", "e3"), layer=1)))


@dataclass(frozen=True)
class RowedBatch:
    """Samples whose best vision row and best LM rows are known; the LM router's own rows are the best ones."""

    best: Tensor  # [B, 3, 4], vision row padded with a zero column

    def __len__(self) -> int:
        return self.best.shape[0]

    def __getitem__(self, index) -> "RowedBatch":
        return RowedBatch(self.best[torch.as_tensor(list(index) if not isinstance(index, Tensor) else index)])


class RowedModel:
    """Loss ||r_vision - b_vision||^2, plus ||r_lm - b_lm||^2 for the LM rows it is told to apply (its own LM
    routing is b_lm, so an LM row left to the model costs nothing). Records what it was told (pinned, lm_positions)."""

    routing_layout = LAYOUT
    routing_shape = LAYOUT.shape

    def __init__(self) -> None:
        self.pins: list[tuple[tuple[bool, ...] | None, str | None]] = []

    def base_routing(self, query: Tensor) -> Tensor:
        raise NotImplementedError

    def routing_loss(self, batch: RowedBatch, routing: Tensor, pinned: tuple[bool, ...] | None = None,
                     lm_positions: str | None = None) -> Tensor:
        self.pins.append((pinned, lm_positions))
        assert torch.all(routing[..., 0, VISION:] == 0), "the vision row's padding must stay zero"
        loss = (routing[..., 0, :VISION] - batch.best[:, 0, :VISION]).pow(2).sum(-1)
        for row in (1, 2):
            if pinned is not None and pinned[row]:
                loss = loss + (routing[..., row, :] - batch.best[:, row, :]).pow(2).sum(-1)
        return loss


def rowed_routings(count: int, generator: torch.Generator) -> Tensor:
    vision = random_routings(count, 1, VISION, generator, sharpness=2.0)
    lm = random_routings(count, 2, LM, generator, sharpness=2.0)
    return torch.cat([torch.nn.functional.pad(vision, (0, LM - VISION)), lm], dim=1)


def requests_for(configs: list[RerouteConfig], seed: int = 0) -> tuple[list[RerouteRequest], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    n, d = 12, 5
    best = rowed_routings(n, generator)
    hood = make_neighbourhood(torch.randn(n, d, generator=generator), rowed_routings(n, generator), RowedBatch(best))
    out = []
    for config in configs:
        r0 = rowed_routings(1, generator)[0]
        target = RowedBatch(best[:1])
        out.append(RerouteRequest(r0, config, query_embedding=torch.randn(d, generator=generator), neighbourhood=hood,
                                  pool_routings=rowed_routings(30, generator), target=target))
    return out, best


STRATEGY_CONFIGS = [RerouteConfig(lr=0.2), RerouteConfig(strategy="kernel"), RerouteConfig(strategy="meanshift"),
                    RerouteConfig(strategy="oracle", oracle_steps=5), RerouteConfig(strategy="kernel", alpha=0.2),
                    RerouteConfig(lr=0.2, guard=True, guard_max_spread=1.0, guard_fit_loss=0.0)]


@pytest.mark.parametrize("config", STRATEGY_CONFIGS, ids=lambda c: c.strategy + ("-guard" if c.guard else ""))
def test_target_vision_equals_a_model_without_lm_rows(config):
    """The vision block of a model with LM rows is re-routed exactly as a vision-only model re-routes it."""
    [request], best = requests_for([config])
    results = reroute_many(RowedModel(), [request])
    vision_only = RerouteRequest(
        request.r0[:1, :VISION], config, query_embedding=request.query_embedding,
        neighbourhood=make_neighbourhood(request.neighbourhood.embeddings,
                                         request.neighbourhood.routings[:, :1, :VISION],
                                         BestRoutingBatch(best[:, :1, :VISION])),
        pool_routings=request.pool_routings[:, :1, :VISION], target=BestRoutingBatch(best[:1, :1, :VISION]))
    [alone] = reroute_many(QuadraticModel(1, VISION), [vision_only])
    assert torch.equal(results[0].routing[:1, :VISION], alone.routing)
    assert torch.equal(results[0].routing[1:], request.r0[1:])  # LM rows untouched
    assert results[0].losses == alone.losses and results[0].line_search == alone.line_search
    assert results[0].guard == alone.guard


@pytest.mark.parametrize("positions", ["answer", "first"])
@pytest.mark.parametrize("strategy", ["ngd", "kernel", "meanshift", "oracle"])
def test_target_lm_moves_only_lm_rows_and_pins_them(strategy, positions):
    """The model is told which rows to apply and at which answer positions, as the request asked."""
    model = RowedModel()
    [request], _ = requests_for([RerouteConfig(strategy=strategy, target="lm", lr=0.2, oracle_steps=5,
                                               lm_positions=positions)])
    [result] = reroute_many(model, [request])
    assert torch.equal(result.routing[0], request.r0[0])
    assert not torch.allclose(result.routing[1:], request.r0[1:])
    assert is_valid_routing(result.routing)
    if strategy != "meanshift":  # mean shift never calls the model
        assert set(model.pins) == {((True, True, True), positions)}


@pytest.mark.parametrize("strategy", ["ngd", "kernel", "meanshift", "oracle"])
def test_target_both_keeps_the_narrow_rows_padding_at_zero(strategy):
    [request], _ = requests_for([RerouteConfig(strategy=strategy, target="both", lr=0.2, oracle_steps=5)])
    [result] = reroute_many(RowedModel(), [request])  # the model asserts the padding on every call
    assert result.routing[0, VISION:].abs().sum() == 0
    assert is_valid_routing(result.routing)
    assert not torch.allclose(result.routing, request.r0)


@pytest.mark.parametrize("strategy", ["ngd", "kernel", "meanshift", "oracle"])
def test_core_experts_move_only_the_top_experts_of_each_row(strategy):
    [request], _ = requests_for([RerouteConfig(strategy=strategy, target="lm", core_experts=2, lr=0.2,
                                               oracle_steps=5)])
    [result] = reroute_many(RowedModel(), [request])
    core = request.r0[1:].topk(2, dim=-1).indices
    fixed = torch.ones(2, LM, dtype=torch.bool).scatter(-1, core, False)
    assert torch.allclose(result.routing[1:][fixed], request.r0[1:][fixed], atol=0)
    assert torch.allclose(result.routing[1:][~fixed].reshape(2, 2).sum(-1),
                          request.r0[1:][~fixed].reshape(2, 2).sum(-1), atol=1e-6)
    assert is_valid_routing(result.routing)


def test_a_batch_mixing_targets_gives_each_request_what_it_gets_alone():
    configs = [RerouteConfig(lr=0.2), RerouteConfig(lr=0.2, target="lm"), RerouteConfig(lr=0.2, target="both"),
               RerouteConfig(strategy="kernel", target="lm"), RerouteConfig(strategy="kernel"),
               RerouteConfig(lr=0.2, target="lm", core_experts=3), RerouteConfig(strategy="none", target="lm"),
               RerouteConfig(lr=0.2, target="lm", lm_positions="first")]
    batch, _ = requests_for(configs, seed=3)
    together = reroute_many(RowedModel(), batch)
    for request, result in zip(batch, together):
        [alone] = reroute_many(RowedModel(), [request])
        assert torch.allclose(result.routing, alone.routing, atol=1e-6)


def test_lm_target_on_a_model_without_lm_rows_is_refused():
    [request], _ = requests_for([RerouteConfig(target="lm")])
    plain = RerouteRequest(request.r0[:1, :VISION], request.config, query_embedding=request.query_embedding,
                           neighbourhood=make_neighbourhood(request.neighbourhood.embeddings,
                                                            request.neighbourhood.routings[:, :1, :VISION],
                                                            BestRoutingBatch(torch.zeros(12, 1, VISION))))
    with pytest.raises(ValueError, match="target 'lm' needs lm routing rows"):
        reroute_many(QuadraticModel(1, VISION), [plain])


def test_block_for_the_whole_routing_of_a_vision_model_is_none():
    layout = RoutingLayout((LayoutRow("all", "vision", ("a", "b")),))
    assert block_for(layout, "vision", torch.tensor([[0.5, 0.5]])) is None
    assert block_for(LAYOUT, "vision", rowed_routings(1, torch.Generator())[0]).pinned is None
    assert block_for(LAYOUT, "lm", rowed_routings(1, torch.Generator())[0]).pinned == (True, True, True)


@pytest.mark.parametrize("bad", [{"target": "language"}, {"target": 3}, {"core_experts": 0}, {"core_experts": 1.5},
                                 {"lm_positions": "last"}, {"lm_positions": 1}])
def test_bad_target_options_are_refused(bad):
    with pytest.raises(ValueError):
        RerouteConfig(**bad)
