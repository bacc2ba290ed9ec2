"""Encoding a batch of questions: each one's model inputs and the router's own routing (its base routing)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pipeline.query import Query
from r2t2.model import RoutedQuery, ServableModel

Item = TypeVar("Item")


def encode_queries(model: ServableModel, queries: Sequence[Query]) -> list[RoutedQuery | Exception]:
    """Every query encoded with its base routing, in one `encode_queries` call when the model has it; should
    that call refuse the batch, each query alone, so only a bad one fails. A model without it: one
    `encode_query` and `base_routing` per query."""
    together = getattr(model, "encode_queries", None)  # optional in the model protocol
    if together is None:
        return [_encoded_alone(model, query) for query in queries]
    return batch_or_each(list(queries), lambda some: together([q.image for q in some], [q.question for q in some],
                                                               [q.answer for q in some]))


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


def _encoded_alone(model: ServableModel, query: Query) -> RoutedQuery | Exception:
    """One query through `encode_query` and `base_routing` (a model without `encode_queries`), or its error."""
    try:
        encoded = model.encode_query(query.image, query.question, query.answer)
        return RoutedQuery(encoded, model.base_routing(encoded.batch))
    except Exception as err:  # noqa: BLE001 (the query's own error, returned in its slot)
        return err
