"""The strategy registry: what the rest of r2t2 asks of a strategy, so that nothing else names one.

A strategy is one module that builds its `Strategy` entry and calls `register` when imported. The built-in
ones are imported by `r2t2.routing`; a user's module is imported by naming it in the server config's
`strategies` (`import_strategies`), or by importing it. From its entry, configs accept the strategy,
`reroute_many` checks its inputs, batches and runs it, the pipeline finds what it `needs`, its record and
explanation read as it says, `r2t2 eval` runs it, and the server offers it when `served`.

Pure stdlib: the registry imports nothing of the routing code, not even for its annotations, so that every module
of it (the config, which checks names against the registry, included) can register and import it. The hooks take
and return what their docstrings say: a `RoutedModel`, `RerouteRequest`s, a `RerouteConfig`, `RerouteResult`s.
"""
from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]  # an r2t2 record (docs/record.md), as `RerouteResult.to_dict` and the pipeline build it
# What the hooks are given and give back, named for the reader (the registry imports none of these types).
RoutedModel = Any
RerouteRequest = Any
RerouteConfig = Any
RerouteResult = Any
TOOK_NO_STEPS = "it took no steps (steps 0)"  # `why_still` of an iterative strategy asked for no steps


class Needs(enum.Enum):
    """What a strategy re-routes from besides r0: what the pipeline finds for it and `reroute_many` checks."""

    NOTHING = "nothing"
    NEIGHBOURS = "neighbours"  # the reference questions nearest the request's: `query_embedding`, `neighbourhood`
    POOL = "pool"  # every reference routing of the index: `pool_routings`
    LABEL = "label"  # the request's true answer: `target`, a batch of one
    # The question-space neighbours, and the request labelled with each distinct answer they give: `target`, a
    # batch of one sample per answer.
    NEIGHBOUR_ANSWERS = "neighbour_answers"

    @property
    def neighbour_space(self) -> str | None:
        """Where the strategy's neighbours are found, as the record's `neighbour_space` says (None: it has none)."""
        return {Needs.NEIGHBOURS: "question", Needs.NEIGHBOUR_ANSWERS: "question", Needs.POOL: "routing"}.get(self)


def _one_group(config: RerouteConfig) -> Hashable:
    return None


def _nothing_seen(result: RerouteResult) -> tuple[float, float] | None:
    return None


def _no_fields(result: RerouteResult) -> Record:
    return {}


def _no_evidence(record: Record) -> str:
    return ""


def _nothing_moved_it(record: Record) -> str:
    return "nothing moved it"


@dataclass(frozen=True)
class Strategy:
    """One strategy: its name and words, its inputs, and the hooks the rest of r2t2 calls.

    `run(model, requests)` re-routes a group of validated requests (each holding what `needs` names, in r0's
    dtype) and returns one `RerouteResult` per request, in order, with `strategy` set to `name`. Requests whose
    `group(config)` is equal run in one call, so a strategy that batches model calls groups by what must be
    shared (e.g. its step count); the default puts all of a strategy's requests in one call.

    `guarded`: the evidence guard (routing/guard.py) may keep r0 instead of the result; needs neighbours.
    `losses_seen(result)`: the neighbour loss at r0 and at the result's routing when the result already holds
    both, which spares the guard evaluating them again. `baseline`: the strategy always answers with the router's
    own routing (the reference the others are compared with). `record(result)`: the record fields of the
    strategy's own work. `evidence(record)`: what supported a move, appended to the explanation's sentence
    (", ..." or ": ..."); `why_still(record)`: why the routing did not move.
    """

    name: str
    title: str  # how sentences name it, e.g. "Mean shift"
    description: str  # one line, for the HTTP schema and docs/method.md's strategies table
    needs: Needs
    run: Callable[[RoutedModel, list[RerouteRequest]], list[RerouteResult]]
    served: bool = True  # False: evaluation only (`r2t2 eval`), never offered over HTTP
    guarded: bool = False
    baseline: bool = False
    group: Callable[[RerouteConfig], Hashable] = _one_group
    losses_seen: Callable[[RerouteResult], tuple[float, float] | None] = _nothing_seen
    record: Callable[[RerouteResult], Record] = _no_fields
    evidence: Callable[[Record], str] = _no_evidence
    why_still: Callable[[Record], str] = _nothing_moved_it

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"a strategy's name must be an identifier (it is a request option), got {self.name!r}")
        if self.guarded and self.needs is not Needs.NEIGHBOURS:
            raise ValueError(f"strategy {self.name!r}: the evidence guard weighs question-space neighbours, "
                             f"so a guarded strategy needs Needs.NEIGHBOURS, not {self.needs}")


def step_trace(field: str) -> Callable[[RerouteResult], Record]:
    """The `record` hook of an iterative strategy: its steps taken, and its `losses` under the name `field`."""
    def fields(result: RerouteResult) -> Record:
        return {"steps_taken": result.steps, field: list(result.losses)}
    return fields


_REGISTERED: dict[str, Strategy] = {}


def register(entry: Strategy) -> Strategy:
    """Add a strategy (ValueError when its name is taken): from then on every part of r2t2 offers it."""
    if entry.name in _REGISTERED:
        raise ValueError(f"strategy {entry.name!r} is already registered")
    _REGISTERED[entry.name] = entry
    return entry


def strategy(name: str) -> Strategy:
    """The registered strategy called `name`; ValueError listing the registered ones for any other name."""
    try:
        return _REGISTERED[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(_REGISTERED)}") from None


def strategy_names(*, served: bool = False) -> tuple[str, ...]:
    """The registered strategies' names in the order they were registered; `served`: only those served over HTTP."""
    return tuple(name for name, entry in _REGISTERED.items() if entry.served or not served)


def import_strategies(modules: Iterable[str]) -> None:
    """Import each dotted module path, whose import registers its strategies (the server config's `strategies`).

    ValueError naming the first module that cannot be imported or fails while registering.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 (whatever the user's module raises, the module is at fault)
            raise ValueError(f"strategy module {module!r} cannot be imported: {type(err).__name__}: {err}") from err
