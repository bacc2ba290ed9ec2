"""The evidence guard on hand-made neighbourhoods: it keeps r0 when they disagree and lets it move when they agree."""
import pytest
import torch

from r2t2.routing.config import RerouteConfig
from r2t2.routing.guard import GuardSettings, judge, neighbour_spread

SETTINGS = GuardSettings(max_spread=0.5, fit_loss=0.1, min_gain=0.0)
R0 = torch.tensor([[1.0, 0.0, 0.0]])
TARGET = torch.tensor([[0.0, 1.0, 0.0]])
EVEN = torch.full((4,), 0.25)


def _loss_towards(good: torch.Tensor, base_value: float = 2.0):
    """Neighbours answered best at `good`: loss grows with the half-L1 distance from it."""
    return lambda routings: base_value * (routings - good).abs().sum((-1, -2)) / 2


def test_spread_is_zero_for_agreeing_and_large_for_split_neighbours() -> None:
    agree = TARGET.expand(4, 1, 3)
    split = torch.stack([torch.eye(3)[i % 3].view(1, 3) for i in range(4)])
    assert neighbour_spread(EVEN, agree) == pytest.approx(0.0)
    assert neighbour_spread(EVEN, split) > 0.5


def test_guard_keeps_r0_when_the_neighbours_disagree() -> None:
    split = torch.stack([torch.eye(3)[i % 3].view(1, 3) for i in range(4)])
    verdict = judge(R0, split.mean(0), EVEN, split, _loss_towards(TARGET), SETTINGS)
    assert verdict.fired and verdict.reason == "neighbours_disagree"


def test_guard_lets_the_routing_move_when_the_neighbours_agree() -> None:
    agree = TARGET.expand(4, 1, 3)
    verdict = judge(R0, TARGET, EVEN, agree, _loss_towards(TARGET), SETTINGS)
    assert not verdict.fired and verdict.reason is None
    assert verdict.moved_loss < verdict.base_loss


def test_guard_keeps_r0_when_the_base_already_fits_the_neighbours() -> None:
    agree = TARGET.expand(4, 1, 3)
    verdict = judge(R0, TARGET, EVEN, agree, _loss_towards(R0, base_value=0.05), SETTINGS)
    assert verdict.fired and verdict.reason == "base_fits_neighbours"


def test_guard_keeps_r0_when_the_move_does_not_lower_the_loss() -> None:
    agree = TARGET.expand(4, 1, 3)
    worse = lambda routings: 1.0 + _loss_towards(R0)(routings)  # noqa: E731 (lowest at r0, above fit_loss)
    verdict = judge(R0, TARGET, EVEN, agree, worse, SETTINGS)
    assert verdict.fired and verdict.reason == "no_loss_gain"
    verdict = judge(R0, TARGET, EVEN, agree, lambda r: torch.full((r.shape[0],), float("nan")), SETTINGS)
    assert verdict.fired


def test_guard_options_are_validated() -> None:
    assert RerouteConfig().replace(guard=True, guard_max_spread=0.3).guard
    with pytest.raises(ValueError, match="guard must be true or false"):
        RerouteConfig().replace(guard="yes")
    with pytest.raises(ValueError, match="guard_min_gain must be >= 0"):
        RerouteConfig().replace(guard_min_gain=-1)
