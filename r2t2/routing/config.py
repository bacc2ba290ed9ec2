"""Settings of one re-routing call, with the paper's defaults (docs/method.md explains them).

A server holds one default `RerouteConfig`; a request may override any field through `replace`, which
validates again, so a bad per-request value is refused before any model work starts.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from r2t2.routing.kernels import KERNELS
from r2t2.routing.layout import TARGETS

STRATEGIES: tuple[str, ...] = ("none", "ngd", "kernel", "meanshift", "oracle")
NEIGHBOURHOODS: tuple[str, ...] = ("knn", "epsilon")

_FLOAT_FIELDS = ("epsilon", "bandwidth", "lr", "lr_min", "ngd_tol", "alpha", "meanshift_alpha", "meanshift_tol",
                 "oracle_lr", "guard_max_spread", "guard_fit_loss", "guard_min_gain")
_INT_FIELDS = ("k", "steps", "line_search_steps", "oracle_steps", "core_experts", "answer_space_k")


@dataclass(frozen=True)
class RerouteConfig:
    """How to re-route one request.

    `target` names the routing rows a request re-routes: the vision experts' mixture, the language model's
    experts at the answer position (`lm`), or both; `core_experts` n lets only each re-routed row's n
    experts with the largest base weight move (None: all of them).

    `steps` drives both NGD and mean shift; `bandwidth` (None = median heuristic, see kernels.py) applies
    in whichever space the strategy measures distances: embeddings for NGD and kernel regression,
    routings for mean shift. `alpha` None means a line search over [0, 1] (kernel strategy only).
    """

    strategy: str = "ngd"
    target: str = "vision"
    core_experts: int | None = None
    k: int = 5
    neighbourhood: str = "knn"
    epsilon: float | None = None
    kernel: str = "gaussian"
    bandwidth: float | None = None
    steps: int = 10
    lr: float = 1e-2
    lr_min: float = 1e-5
    # NGD stops a request once a step would move its routing by less than this (half-L1, largest row); 0: never.
    ngd_tol: float = 1e-3
    alpha: float | None = None
    line_search_steps: int = 8
    meanshift_alpha: float = 0.5
    meanshift_tol: float = 1e-4
    oracle_steps: int = 50
    oracle_lr: float = 0.1
    # The evidence guard (routing/guard.py), for "ngd" and "kernel": keep r0 unless the neighbours support the move.
    # Thresholds chosen on the paraphrase-val split (BENCHMARKS.md, section 1c).
    guard: bool = False
    guard_max_spread: float = 0.5
    guard_fit_loss: float = 0.05
    guard_min_gain: float = 0.0
    # The answer check (pipeline/answer_check.py): a changed answer is sent only if the references nearest the
    # neighbours (`answer_space_k` of them per neighbour) hold it as an answer; otherwise the base answer is.
    answer_check: bool = False
    answer_space_k: int = 16

    def __post_init__(self) -> None:
        self._check_types()
        _one_of("strategy", self.strategy, STRATEGIES)
        _one_of("target", self.target, tuple(TARGETS))
        if self.core_experts is not None and self.core_experts < 1:
            raise ValueError(f"core_experts must be a positive integer or None, got {self.core_experts}")
        _one_of("neighbourhood", self.neighbourhood, NEIGHBOURHOODS)
        _one_of("kernel", self.kernel, KERNELS)
        if self.k <= 0:
            raise ValueError(f"k must be a positive integer, got {self.k}")
        if self.answer_space_k <= 0:
            raise ValueError(f"answer_space_k must be a positive integer, got {self.answer_space_k}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.oracle_steps < 0:
            raise ValueError(f"oracle_steps must be >= 0, got {self.oracle_steps}")
        if self.line_search_steps < 2:
            raise ValueError(f"line_search_steps must be >= 2, got {self.line_search_steps}")
        if self.neighbourhood == "epsilon":
            if self.epsilon is None or self.epsilon <= 0:
                raise ValueError(f"epsilon must be > 0 when neighbourhood='epsilon', got {self.epsilon}")
        elif self.epsilon is not None:
            raise ValueError(f"epsilon is only used with neighbourhood='epsilon' (got neighbourhood="
                             f"{self.neighbourhood!r}, epsilon={self.epsilon}); set epsilon=None")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0 or None (median heuristic), got {self.bandwidth}")
        for name in ("lr", "oracle_lr", "lr_min"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("lr", "oracle_lr"):
            if self.lr_min > getattr(self, name):
                raise ValueError(f"lr_min ({self.lr_min}) must not exceed {name} ({getattr(self, name)})")
        for name in ("alpha", "meanshift_alpha"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name in ("ngd_tol", "meanshift_tol"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("guard_max_spread", "guard_fit_loss", "guard_min_gain"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def replace(self, **overrides: Any) -> RerouteConfig:
        """A copy with `overrides` applied and validated (per-request settings)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown RerouteConfig field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def _check_types(self) -> None:
        for name in ("strategy", "target", "neighbourhood", "kernel"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("guard", "answer_check"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if value is None and name == "core_experts":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None and name in ("epsilon", "bandwidth", "alpha"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # JSON may carry 1 for 1.0


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
