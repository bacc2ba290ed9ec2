"""RerouteConfig: paper defaults, validation that names the bad field, validated per-request overrides."""

import json

import pytest

from r2t2.routing import KERNELS, RerouteConfig, strategy_names
from r2t2.routing.kernels import KERNEL_FUNCTIONS


def test_defaults_follow_the_paper() -> None:
    config = RerouteConfig()
    assert (config.strategy, config.k, config.neighbourhood, config.kernel) == ("ngd", 5, "knn", "gaussian")
    assert (config.steps, config.lr, config.lr_min) == (10, 1e-2, 1e-5)
    assert config.epsilon is None and config.bandwidth is None and config.alpha is None


def test_exported_names_match_implementations() -> None:
    assert strategy_names()[:6] == ("none", "meanshift", "kernel", "ngd", "answer_space", "oracle")  # built-ins first
    assert set(KERNELS) == set(KERNEL_FUNCTIONS) == {"gaussian", "matern", "polynomial", "linear"}


@pytest.mark.parametrize("overrides, field", [
    ({"k": 0}, "k"),
    ({"k": -3}, "k"),
    ({"k": 2.5}, "k"),
    ({"k": True}, "k"),
    ({"steps": -1}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"lr_min": 0.0}, "lr_min"),
    ({"lr": 1e-3, "lr_min": 1e-2}, "lr_min"),
    ({"oracle_lr": 1e-6}, "lr_min"),
    ({"neighbourhood": "epsilon"}, "epsilon"),
    ({"neighbourhood": "epsilon", "epsilon": 0.0}, "epsilon"),
    ({"epsilon": 0.5}, "epsilon"),
    ({"strategy": "magic"}, "strategy"),
    ({"kernel": "cosine"}, "kernel"),
    ({"neighbourhood": "radius"}, "neighbourhood"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": -0.1}, "alpha"),
    ({"meanshift_alpha": 2.0}, "meanshift_alpha"),
    ({"meanshift_tol": -1.0}, "meanshift_tol"),
    ({"ngd_tol": -1e-3}, "ngd_tol"),
    ({"bandwidth": 0.0}, "bandwidth"),
    ({"line_search_steps": 1}, "line_search_steps"),
    ({"oracle_steps": -5}, "oracle_steps"),
    ({"kernel": 3}, "kernel"),
])
def test_bad_values_raise_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RerouteConfig(**overrides)
    with pytest.raises(ValueError, match=field):
        RerouteConfig().replace(**overrides)


def test_replace_overrides_and_keeps_the_original() -> None:
    base = RerouteConfig()
    changed = base.replace(strategy="kernel", alpha=0.0, neighbourhood="epsilon", epsilon=0.3, k=3)
    assert (changed.strategy, changed.alpha, changed.epsilon, changed.k) == ("kernel", 0.0, 0.3, 3)
    assert base == RerouteConfig()


def test_replace_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="stepz"):
        RerouteConfig().replace(stepz=3)


def test_integers_from_json_become_floats() -> None:
    config = RerouteConfig().replace(**json.loads('{"lr": 1, "alpha": 0, "bandwidth": 2}'))
    assert isinstance(config.lr, float) and isinstance(config.alpha, float) and config.bandwidth == 2.0
