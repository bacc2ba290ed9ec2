"""Re-routing part of a routing: vision rows, LM rows of another width, both, or only core experts."""

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from r2t2.routing import RerouteConfig, RerouteRequest, is_valid_routing, reroute_many
from r2t2.routing.block import answer_pins, block_for
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
               RerouteConfig(lr=0.2, target="lm", lm_positions="first"), RerouteConfig(lr=0.2, target="lm", lm_layers=[1]),
               RerouteConfig(lr=0.2, target="lm", ngd_start="vertices"),
               RerouteConfig(lr=0.2, target="both", core_experts=3, ngd_start="vertices")]
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


@pytest.mark.parametrize("strategy", ["ngd", "kernel", "meanshift", "oracle"])
@pytest.mark.parametrize("target", ["lm", "both"])
def test_lm_layers_move_only_the_named_layers_rows_and_pin_only_them(strategy, target):
    """A request naming some LM layers leaves the other LM rows to their routers (not pinned, not moved)."""
    model = RowedModel()
    config = RerouteConfig(strategy=strategy, target=target, lm_layers=[1], lr=0.2, oracle_steps=5)
    [request], _ = requests_for([config])
    [result] = reroute_many(model, [request])
    assert torch.equal(result.routing[1], request.r0[1])
    assert not torch.allclose(result.routing[2], request.r0[2])
    assert torch.equal(result.routing[0], request.r0[0]) == (target == "lm")
    if strategy != "meanshift":  # both: its vision stage is evaluated with no LM row applied
        assert set(model.pins) - {(None, None)} == {((True, False, True), "answer")}
        assert ((None, None) in model.pins) == (target == "both")
    assert answer_pins(LAYOUT, target, request.r0, result.routing, config.lm_layers) == (True, False, True)


def test_ngd_from_vertices_descends_from_the_lowest_start_and_reports_r0s_loss_first():
    plain, searched = (RerouteConfig(target="lm", lr=0.2, steps=3, ngd_start=start) for start in ("router", "vertices"))
    [from_r0], _ = requests_for([plain], seed=0)
    [from_best], _ = requests_for([searched], seed=0)
    [a] = reroute_many(RowedModel(), [from_r0])
    [b] = reroute_many(RowedModel(), [from_best])
    assert b.losses[0] == pytest.approx(a.losses[0])  # both traces start at r0's neighbour loss
    assert len(b.losses) == b.steps + 2  # on this draw a vertex beats r0, and the descent starts there
    assert b.losses[1] < b.losses[0]
    assert is_valid_routing(b.routing)


@pytest.mark.parametrize("config", [RerouteConfig(lr=0.2), RerouteConfig(strategy="kernel"),
                                    RerouteConfig(lr=0.2, guard=True, guard_max_spread=1.0, guard_fit_loss=0.0),
                                    RerouteConfig(strategy="oracle", oracle_steps=5)], ids=lambda c: c.strategy)
def test_both_moves_the_vision_rows_then_the_lm_rows_from_there(config):
    """target both = the vision stage, then the LM stage from the routing it left, each a request of its own."""
    [request], _ = requests_for([config.replace(target="both")], seed=2)
    [both] = reroute_many(RowedModel(), [request])
    [vision] = reroute_many(RowedModel(), [dataclasses.replace(request, config=config.replace(target="vision"))])
    [lm] = reroute_many(RowedModel(), [dataclasses.replace(request, r0=vision.routing,
                                                           config=config.replace(target="lm"))])
    assert torch.equal(both.routing, lm.routing) and torch.equal(both.base_routing, request.r0)
    assert torch.equal(both.lm_stage.base_routing, vision.routing) and both.losses == vision.losses
    assert both.guard == vision.guard and both.lm_stage.guard == lm.guard
    stage = both.to_dict()["lm_stage"]
    assert stage["moved"] == pytest.approx(float((lm.routing - vision.routing).abs().sum(-1).max() / 2))


def test_both_moves_the_lm_rows_with_lm_strategy_when_set():
    [request], _ = requests_for([RerouteConfig(lr=0.2, target="both", lm_strategy="answer_space")], seed=2)
    [both] = reroute_many(RowedModel(), [request])
    assert both.strategy == "ngd" and both.lm_stage.strategy == "answer_space"
    assert "answer_space_mass" in both.to_dict()["lm_stage"]
    with pytest.raises(ValueError, match="cannot follow"):
        RerouteConfig(strategy="oracle", target="both", lm_strategy="answer_space")
    assert RerouteConfig(strategy="oracle", target="lm", lm_strategy="answer_space").strategies == ("oracle",)
    baseline = RerouteConfig(strategy="none", target="both", lm_strategy="answer_space")
    assert baseline.strategies == ("none",)  # the baseline re-routes nothing, in either stage
    [request], _ = requests_for([baseline], seed=2)
    [kept] = reroute_many(RowedModel(), [request])
    assert torch.equal(kept.routing, request.r0) and kept.lm_stage.strategy == "none"
    with pytest.raises(ValueError, match="unknown strategy"):
        RerouteConfig(target="both", lm_strategy="psychic")


def test_lm_layers_naming_a_layer_without_an_lm_row_is_refused():
    [request], _ = requests_for([RerouteConfig(target="lm", lm_layers=[0, 5])])
    with pytest.raises(ValueError, match=r"lm_layers names decoder layer\(s\) \[5\].*layers \[0, 1\]"):
        reroute_many(RowedModel(), [request])


def test_lm_layers_are_kept_sorted_and_unique():
    assert RerouteConfig(lm_layers=[3, 1, 3]).lm_layers == (1, 3)
    assert RerouteConfig().replace(lm_layers=None).lm_layers is None


@pytest.mark.parametrize("bad", [{"target": "language"}, {"target": 3}, {"core_experts": 0}, {"core_experts": 1.5},
                                 {"lm_positions": "last"}, {"lm_positions": 1}, {"lm_layers": []},
                                 {"lm_layers": [-1]}, {"lm_layers": "1"}, {"lm_layers": [1.5]}, {"lm_layers": [True]}])
def test_bad_target_options_are_refused(bad):
    with pytest.raises(ValueError):
        RerouteConfig(**bad)
