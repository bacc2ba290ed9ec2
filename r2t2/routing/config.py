"""Settings of one re-routing call, with the paper's defaults (docs/method.md explains them).

A server holds one default `RerouteConfig`; a request may override any field through `replace`, which
validates again, so a bad per-request value is refused before any model work starts.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from r2t2.engine_prompt import LM_POSITIONS, LmPositions
from r2t2.routing.kernels import KERNELS
from r2t2.routing.layout import TARGETS
from r2t2.routing.strategies import Needs, strategy

NEIGHBOURHOODS: tuple[str, ...] = ("knn", "epsilon")
NGD_STARTS: tuple[str, ...] = ("router", "vertices")

_FLOAT_FIELDS = ("epsilon", "bandwidth", "lr", "lr_min", "ngd_tol", "alpha", "meanshift_alpha", "meanshift_tol",
                 "space_min_mass", "oracle_lr", "guard_max_spread", "guard_fit_loss", "guard_min_gain",
                 "guard_min_shift")
_INT_FIELDS = ("k", "steps", "line_search_steps", "oracle_steps", "core_experts", "answer_space_k", "space_k")


def option(default: Any, doc: str, choices: tuple[str, ...] | None = None, **bounds: float) -> Any:
    """A field a request may set: its default, what it does, and the allowed values or coarse bounds the HTTP
    schema states (serving's request options are derived from these fields; `__post_init__` checks the rest)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "choices": choices, "bounds": bounds})


@dataclass(frozen=True)
class RerouteConfig:
    """How to re-route one request.

    `target` names the routing rows a request re-routes: the vision experts' mixture, the language model's
    experts at the answer position (`lm`), or both; `lm_positions` where re-routed LM rows apply (every answer
    token, or the first one alone); `core_experts` n lets only each re-routed row's n experts with the largest
    base weight move (None: all of them).

    `strategy` names a registered strategy (routing/strategies.py). `steps` drives both NGD and mean shift;
    `bandwidth` (None = median heuristic, see kernels.py) applies in whichever space the strategy measures
    distances: embeddings for NGD and kernel regression, routings for mean shift. `alpha` None means a line
    search over [0, 1] (kernel strategy only).
    """

    strategy: str = option("ngd", "how the routing is re-optimised (the served strategies: docs/method.md)")
    target: str = option("vision", "the routing rows to re-route: vision (the mixture of vision experts), lm (the "
                         "language model's experts at the answer position, in the model's LM routing layers, applied "
                         "inside the engine) or both; lm needs a model with LM rows (/v1/models `routing_rows`)",
                         choices=tuple(TARGETS))
    lm_positions: LmPositions = option("answer", "where re-routed LM rows apply: answer (the last prompt token and "
                                       "every generated token) or first (the last prompt token alone, the position "
                                       "that produces the first answer token; every later token keeps its router)",
                                       choices=LM_POSITIONS)
    lm_strategy: str | None = option(None, "target both: the strategy that moves the LM rows, in the stage after the "
                                     "vision rows moved (null: the request's strategy); the neighbours' loss does not "
                                     "carry over to the LM rows the way it does to the vision rows, answer_space does")
    lm_layers: tuple[int, ...] | None = option(None, "the decoder layers whose LM rows a request with target lm or "
                                               "both re-routes (C3PO's critical layers; /v1/models `routing_rows` "
                                               "names each row's layer); the other LM rows keep their routers. "
                                               "null: the model's default (every LM row unless its family names "
                                               "some)")
    core_experts: int | None = option(None, "let only each re-routed row's this many experts with the largest base "
                                      "weight move (C3PO's core experts); null: all of them", ge=1, le=4096)
    k: int = option(5, "neighbours used (kNN). With neighbourhood=epsilon, the ball is taken from the max(k, 64) "
                    "nearest references", ge=1, le=256)
    neighbourhood: str = option("knn", "knn: the k nearest; epsilon: every reference within `epsilon`",
                                choices=NEIGHBOURHOODS)
    epsilon: float | None = option(None, "radius of the epsilon-ball (question-embedding distance); required with "
                                   "neighbourhood=epsilon", gt=0)
    kernel: str = option("gaussian", "how neighbours are weighted by distance", choices=KERNELS)
    bandwidth: float | None = None
    steps: int = option(10, "NGD descent steps, or most mean-shift updates", ge=0, le=1000)
    lr: float = option(1e-2, "NGD learning rate (cosine-annealed to lr_min)", gt=0)
    ngd_start: str = option("router", "where NGD descends from: router (the router's routing, the paper's) or "
                            "vertices (whichever of the router's routing and, for each re-routed row and expert, that "
                            "row's weight all on that expert has the lowest neighbour loss: a descent through top-k "
                            "expert choices only ever sees the chosen experts' slope)", choices=NGD_STARTS)
    lr_min: float = 1e-5
    # NGD stops a request once a step would move its routing by less than this (half-L1, largest row); 0: never.
    ngd_tol: float = 1e-3
    alpha: float | None = option(None, "kernel: the router's routing's share of the result (alpha r0 + (1 - alpha) "
                                 "times the neighbours' average); null: searched on [0, 1] by the neighbour loss",
                                 ge=0, le=1)
    line_search_steps: int = 8
    meanshift_alpha: float = 0.5
    meanshift_tol: float = 1e-4
    oracle_steps: int = 50
    oracle_lr: float = 0.1
    space_k: int = option(20, "answer_space: the distinct answers of this many nearest references make the answer "
                          "set (more than k: a set of answers needs more references than a routing does)", ge=1, le=256)
    space_min_mass: float = option(0.5, "answer_space: re-route only when the router's routing puts less than this "
                                   "share of its answer on the neighbours' answers", ge=0, le=1)
    # The evidence guard (routing/guard.py), for "ngd" and "kernel": keep r0 unless the neighbours support the move.
    # Thresholds chosen on the paraphrase-val split (docs/benchmark_diary.md, section 1c).
    guard: bool = option(False, "ngd and kernel: keep the router's own routing unless the neighbours agree and the "
                         "move lowers their loss; the record's `guard` says whether it fired and why")
    guard_max_spread: float = 0.5
    guard_fit_loss: float = 0.05
    guard_min_gain: float = 0.0
    guard_min_shift: float = 0.0  # keep r0 when the neighbours' weighted routing lies this close to it (0: never)
    # The answer check (serving/pipeline/answer_check.py): a changed answer is sent only if the references nearest the
    # neighbours (`answer_space_k` of them per neighbour) hold it as an answer; otherwise the base answer is.
    answer_check: bool = option(False, "when re-routing changes the answer, send it only if the reference index "
                                "holds it as an answer to questions like the neighbours' (else the router's own answer "
                                "is sent; the record's `guard.answer` says which and why)")
    answer_space_k: int = option(16, "the answer check's answer space: the answers of this many references nearest "
                                 "each neighbour", ge=1, le=256)

    def __post_init__(self) -> None:
        self._check_types()
        strategy(self.strategy)  # a registered one (routing/strategies.py)
        if self.lm_strategy is not None:
            strategy(self.lm_strategy)
            needs = {strategy(name).needs for name in self.strategies}
            if len(needs & {Needs.LABEL, Needs.NEIGHBOUR_ANSWERS}) == 2:
                raise ValueError(f"lm_strategy {self.lm_strategy!r} cannot follow strategy {self.strategy!r}: one "
                                 f"needs the true answer, the other the neighbours' answers")
        _one_of("target", self.target, tuple(TARGETS))
        _one_of("lm_positions", self.lm_positions, LM_POSITIONS)
        if self.lm_layers is not None and not self.lm_layers:
            raise ValueError("lm_layers must name at least one decoder layer, or be None (every LM row)")
        if self.core_experts is not None and self.core_experts < 1:
            raise ValueError(f"core_experts must be a positive integer or None, got {self.core_experts}")
        _one_of("neighbourhood", self.neighbourhood, NEIGHBOURHOODS)
        _one_of("ngd_start", self.ngd_start, NGD_STARTS)
        _one_of("kernel", self.kernel, KERNELS)
        if self.k <= 0:
            raise ValueError(f"k must be a positive integer, got {self.k}")
        if self.space_k <= 0:
            raise ValueError(f"space_k must be a positive integer, got {self.space_k}")
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
        for name in ("alpha", "meanshift_alpha", "space_min_mass"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name in ("ngd_tol", "meanshift_tol"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("guard_max_spread", "guard_fit_loss", "guard_min_gain", "guard_min_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def lm_stage_strategy(self) -> str:
        """What moves the LM rows in target both's second stage: `lm_strategy`, unless unset or the request's strategy
        is the baseline (`none` re-routes nothing, in either stage)."""
        if self.lm_strategy is None or strategy(self.strategy).baseline:
            return self.strategy
        return self.lm_strategy

    @property
    def strategies(self) -> tuple[str, ...]:
        """The strategies a request runs: its own, and for target both its LM stage's when that is another."""
        if self.target == "both" and self.lm_stage_strategy != self.strategy:
            return self.strategy, self.lm_stage_strategy
        return (self.strategy,)

    def replace(self, **overrides: Any) -> RerouteConfig:
        """A copy with `overrides` applied and validated (per-request settings)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown RerouteConfig field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def _check_types(self) -> None:
        for name in ("strategy", "target", "lm_positions", "neighbourhood", "kernel", "ngd_start"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.lm_strategy is not None and not isinstance(self.lm_strategy, str):
            raise ValueError(f"lm_strategy must be a string or None, got {self.lm_strategy!r}")
        for name in ("guard", "answer_check"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.lm_layers is not None:
            if isinstance(self.lm_layers, (str, bytes)) or not isinstance(self.lm_layers, (list, tuple)) or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.lm_layers):
                raise ValueError(f"lm_layers must be a list of decoder layer indices (integers >= 0), got "
                                 f"{self.lm_layers!r}")
            object.__setattr__(self, "lm_layers", tuple(sorted(set(self.lm_layers))))
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


# What the shipped families serve with. Their routers are confident (near a vertex of the simplex of their
# experts): the paper's NGD learning rate (1e-2, cosine to 1e-5) moves each weight by at most ~0.06 in 10 Adam
# steps, which cannot leave a vertex. 2.0 was the most accurate of 0.01-10 in every family on paraphrase-val
# (docs/benchmark_diary.md, section 10): its first projected step can reach another vertex, so NGD picks among
# experts the neighbours' loss favours, and it settles in fewer steps (requests can still ask for lr=0.01). The evidence
# guard (routing/guard.py) never cost accuracy net of broken answers on paraphrase-val (docs/benchmark_diary.md,
# section 1c); the answer check replaced only answers of another kind and cost no fix at answer_space_k 16, 64 or
# 256 (section 1d). A request turns either off with guard=false or answer_check=false. Neighbours whose weighted
# routing lies within 0.2 of the router's are left alone before any model call: chosen on paraphrase-val among
# 0-0.2, the most accurate in every family and strategy there (quartet NGD: 8 breaks to none), and it takes most of
# re-routing's CPU off in-distribution questions (docs/benchmark_diary.md, sections 2 and 10).
SHIPPED_FAMILY_DEFAULTS: dict[str, Any] = {"lr": 2.0, "guard": True, "answer_check": True, "guard_min_shift": 0.2}
