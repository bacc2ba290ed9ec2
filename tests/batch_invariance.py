"""Re-routing the same requests alone, as one batch and as the batch reversed, for the batch-invariance tests.

Goes through `ReroutePipeline.rerouted_many`: the queries encoded together, each searched, then one `reroute_many`
over all of them, the two steps the server's re-router runs for a batch (`begin_many`, `finish_many`). Answers are
the torch model's greedy answers after the answer check, as `r2t2 eval` makes them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from r2t2.data.sample import Sample
from serving.pipeline.query import Query, Rerouted
from serving.pipeline.request_path import ReroutePipeline


@dataclass(frozen=True)
class Ways:
    """Each request's routing and answer, alone, in the batch and in the reversed batch (in request order)."""

    alone: list[Rerouted]
    batched: list[Rerouted]
    reversed: list[Rerouted]
    answers: dict[str, list[str]]

    def routing_gap(self) -> float:
        """The largest difference of any routing entry between the alone and either batched run."""
        return max(float((a.result.routing - other.result.routing).abs().max())
                   for a, b, r in zip(self.alone, self.batched, self.reversed) for other in (b, r))

    def answers_differing(self) -> int:
        """How many requests get another answer in either batched run than alone."""
        alone = self.answers["alone"]
        return sum(a != b or a != r for a, b, r in zip(alone, self.answers["batched"], self.answers["reversed"]))


def three_ways(pipeline: ReroutePipeline, samples: Sequence[Sample], options: Sequence[dict]) -> Ways:
    """The samples re-routed alone one by one, as one batch, and as the batch reversed; sample i with request
    options `options[i]`."""
    queries = [Query(s.image, s.question, pipeline.config_for(o), answer=s.answer) for s, o in zip(samples, options)]
    alone = [_done(pipeline.rerouted_many([query])[0]) for query in queries]
    batched = [_done(item) for item in pipeline.rerouted_many(queries)]
    reversed_ = [_done(item) for item in pipeline.rerouted_many(queries[::-1])][::-1]
    answers = {name: [answer(pipeline, done) for done in run]
               for name, run in (("alone", alone), ("batched", batched), ("reversed", reversed_))}
    return Ways(alone, batched, reversed_, answers)


def answer(pipeline: ReroutePipeline, done: Rerouted) -> str:
    """The answer a client gets: the re-routed one, or the router's where the answer check sends that."""
    with torch.no_grad():
        rerouted = pipeline.answer(done)
        if done.answer_space is None:
            return rerouted
        base = pipeline.model.answer(done.query, done.result.base_routing)[0]
    verdict = pipeline.checked_answer(done, rerouted, base)
    return base if verdict is not None and verdict.sent == "base" else rerouted


def _done(item: Rerouted | Exception) -> Rerouted:
    if isinstance(item, Exception):
        raise item
    return item
