"""Encoding a batch of questions: each one's model inputs and the router's own routing (its base routing)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from serving.pipeline.query import Query
from r2t2.engine_prompt import EnginePrompt
from r2t2.model import RoutedQuery, ServableModel

Item = TypeVar("Item")
# Reads each prompt's router distributions at its last token in the given decoder layers from the generation
# engine's prefill: [{layer: distribution}] in prompt order (the generator's `base_routing`).
EngineBase = Callable[[list[EnginePrompt], tuple[int, ...]], list[dict[int, list[float]]]]


def encode_queries(model: ServableModel, queries: Sequence[Query],
                   engine_base: EngineBase | None = None) -> list[RoutedQuery | Exception]:
    """Every query encoded with its base routing in calls of its own (`_encoded_alone`; a refused query fails
    alone). A model whose base routing comes from the engine (`base_from_engine`, e.g. one holding only its layers
    from the first routed one on) has it read by `engine_base`, all the batch's prompts at once."""
    if getattr(model, "base_from_engine", False):
        return _with_engine_base(model, queries, engine_base)
    # A call per query: a batched forward's float results depend on the batch's size and padding, and a request's
    # routing must not depend on which requests share its batch (docs/method.md, batch invariance).
    return [_encoded_alone(model, query) for query in queries]


def batch_or_each(items: list[Item], call: Callable[[list[Item]], Sequence[Any]]) -> list[Any]:
    """`call` on the whole batch, one result per item; should it refuse the batch, `call` on each item alone, so
    only a bad item fails (its slot holds its own error)."""
    try:
        return list(call(items))
    except Exception as err:  # noqa: BLE001 (isolated below)
        if len(items) == 1:
            return [err]
    outcomes: list[Any] = []
    for item in items:
        try:
            outcomes.append(call([item])[0])
        except Exception as err:  # noqa: BLE001 (that item's own error)
            outcomes.append(err)
    return outcomes


def _with_engine_base(model: ServableModel, queries: Sequence[Query],
                      engine_base: EngineBase | None) -> list[RoutedQuery | Exception]:
    encoded: list[Any] = []
    for query in queries:
        try:
            encoded.append(model.encode_query(query.image, query.question, query.answer))
        except Exception as err:  # noqa: BLE001 (the query's own error, returned in its slot)
            encoded.append(err)
    ready = [e for e in encoded if not isinstance(e, Exception)]
    if not ready:
        return encoded
    if engine_base is None:
        error = RuntimeError("this model's base routing is read from the generation engine, and none was given "
                             "(serve it, or load it with weights: full)")
        return [e if isinstance(e, Exception) else error for e in encoded]
    layers = tuple(model.routed_layers)
    # A text+image model's engine prompt is its chat text and image: no routing goes into it.
    found = iter(engine_base([model.engine_prompts(e.batch, None)[0] for e in ready], layers))
    device = getattr(model, "device", torch.device("cpu"))
    return [e if isinstance(e, Exception) else
            RoutedQuery(e, torch.tensor([rows[layer] for layer in layers], dtype=torch.float32, device=device))
            for e, rows in ((e, None if isinstance(e, Exception) else next(found)) for e in encoded)]


def _encoded_alone(model: ServableModel, query: Query) -> RoutedQuery | Exception:
    """One query in calls of its own, or its error: the model's `encode_queries` (optional in the model protocol)
    given it alone, else `encode_query` and `base_routing`."""
    together = getattr(model, "encode_queries", None)
    try:
        if together is not None:
            return together([query.image], [query.question], [query.answer])[0]
        encoded = model.encode_query(query.image, query.question, query.answer)
        return RoutedQuery(encoded, model.base_routing(encoded.batch))
    except Exception as err:  # noqa: BLE001 (the query's own error, returned in its slot)
        return err
