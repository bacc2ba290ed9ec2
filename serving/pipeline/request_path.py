"""One served model's request path: encode -> find neighbours -> re-route -> check -> record -> prompt.

Shared by the server (which hands the prompt to a generation backend) and by `r2t2 eval` (which
generates with the torch model), so both measure the same thing. Each step is its own module; this one
only sequences them. Nothing per-request is stored on the pipeline: every call builds its own config,
batch, neighbourhood and result.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
from PIL import Image

from indexes.embedders import Embedder
from indexes.reference_index import ReferenceIndex
from indexes.registry import IndexRegistry
from serving.pipeline.answer_check import AnswerVerdict, answer_space, check_answer
from serving.pipeline.encode import EngineBase, batch_or_each, encode_queries
from serving.pipeline.neighbours import NeighbourSource, pool_neighbours
from serving.pipeline.protocol import BaseReady, ModelInfo, Prepared, ServeRequest
from serving.pipeline.query import Found, Pending, Query, Rerouted
from serving.pipeline.record import build_record, question_only_record
from serving.pipeline.verified import NewRow, Refused, reference_rows
from r2t2.data.sample import Sample
from r2t2.engine_prompt import LmRows
from r2t2.model import ServableModel
from r2t2.routing import RerouteConfig, RerouteRequest, RerouteResult, reroute_many
from r2t2.routing.fit import FitSettings
from r2t2.routing.block import answer_pins, target_rows
from r2t2.routing.layout import TARGETS, RoutingLayout
from r2t2.routing.reroute import decide_before_steps, routing_layout
from r2t2.routing.strategies import Needs, strategy


class ReroutePipeline:
    """One served model with its neighbour embedder, reference indexes and re-routing defaults."""

    def __init__(self, model: ServableModel, embedder: Embedder, registry: IndexRegistry, defaults: RerouteConfig,
                 default_index: str, model_name: str, family: str,
                 device: torch.device = torch.device("cpu")) -> None:
        """`device` is where the model's weights are: neighbour tensors are placed there for re-routing."""
        self.model = model
        self.embedder = embedder
        self.defaults = defaults
        self.model_name = model_name
        self.family = family
        self.layout: RoutingLayout = routing_layout(model)
        self._neighbours = NeighbourSource(model, embedder, registry, default_index, device)
        self._engine_base: EngineBase | None = None

    def info(self) -> ModelInfo:
        """What a client or the server needs to know about the served model."""
        return ModelInfo(model_name=self.model_name, family=self.family, fingerprint=self.model.fingerprint,
                         lm_path=str(self.model.lm_path), engine_input=self.model.engine_input,
                         routing_shape=list(self.model.routing_shape), routing_rows=self.layout.to_dict(),
                         default_index=self._neighbours.default_index, max_positions=self.model.max_positions,
                         # An adapter model may read questions of any length; the shipped families cap them.
                         max_question_tokens=getattr(self.model, "max_question_tokens", None),
                         r2t2_defaults=asdict(self.defaults), embedder=self.embedder.name,
                         device=str(self._neighbours.device),
                         base_from_engine=bool(getattr(self.model, "base_from_engine", False)))

    def use_engine_base(self, engine_base: EngineBase) -> None:
        """Where a model whose info says `base_from_engine` has its queries' base routing read (the server's
        generator; set once at start, the same for every request)."""
        self._engine_base = engine_base

    def reference_index(self, name: str | None = None) -> ReferenceIndex:
        """The current version of the index a request naming `name` (None: the default) would search."""
        return self._neighbours.reference_index(name)

    def verified_rows(self, samples: Sequence[Sample], settings: FitSettings = FitSettings(),
                      index: str | None = None) -> list[NewRow | Refused]:
        """The reference row each verified answer adds to `index` (None: the default), or why none: its routing
        fitted to its answer."""
        return reference_rows(self.model, self.embedder, self.layout, samples, settings, self.defaults.lm_positions,
                              self.reference_index(index))

    def refresh_indexes(self) -> None:
        """Read every index's CURRENT and feedback log now (a server does so every `refresh_interval_s`)."""
        self._neighbours.registry.refresh()

    def follow_indexes(self, interval_s: float) -> None:
        self._neighbours.registry.start_auto_refresh(interval_s)

    def close(self) -> None:
        self._neighbours.registry.close()

    def config_for(self, overrides: dict) -> RerouteConfig:
        """Server defaults with the request's options on top; ValueError names a bad or unknown field, a target
        whose rows this model does not have, or an `lm_layers` layer without an LM row."""
        config = self.defaults.replace(**overrides)
        missing = [kind for kind in TARGETS[config.target] if not self.layout.has(kind)]
        if missing:
            raise ValueError(f"target {config.target!r} re-routes {' and '.join(missing)} rows, which model "
                             f"{self.model_name!r} does not have (its rows: {', '.join(self.layout.names)})")
        target_rows(self.layout, config.target, config.lm_layers)  # lm_layers must name this model's LM layers
        return config

    def rerouted(self, image: Image.Image, question: str, config: RerouteConfig, index: str | None = None,
                 answer: str | None = None) -> Rerouted:
        """Encode the query and re-route it. `answer` is the label, which only a strategy that needs it reads."""
        outcome = self.rerouted_many([Query(image, question, config, index, answer)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def rerouted_many(self, queries: Sequence[Query],
                      on_encoded: Callable[[int, Found], None] | None = None) -> list[Rerouted | Exception]:
        """Re-route a batch of queries, each with its own settings; results (or that query's error) in order.

        Each query is encoded and searched on its own, then all are re-routed in one `reroute_many` call, which runs
        the requests of one strategy in lockstep; a query gets what it gets alone (docs/method.md, batch invariance). A failure of one
        query (e.g. a question too long, an unknown index) is its own result and never reaches the others.
        `on_encoded(position, found)` is told of each query as soon as it is encoded and searched, before any
        re-routing.
        """
        found = self._found_many(queries, on_encoded)
        ready = [f for f in found if isinstance(f, Found)]
        results = iter(self._rerouted_results([f.request for f in ready]))
        return [item if isinstance(item, Exception) else self._finished(item, next(results), len(ready))
                for item in found]

    def _rerouted_results(self, requests: list[RerouteRequest]) -> list[RerouteResult | Exception]:
        """`reroute_many` over the requests together; should it refuse them, each alone, so only a bad one fails."""
        return batch_or_each(requests, lambda some: reroute_many(self.model, some))

    def _found_many(self, queries: Sequence[Query],
                    on_encoded: Callable[[int, Found], None] | None) -> list[Found | Exception]:
        """Every query encoded (together) and searched (each on its own), or its own error."""
        started = time.perf_counter()
        encoded = encode_queries(self.model, queries, self._engine_base)
        encode_seconds = time.perf_counter() - started
        found: list[Found | Exception] = []
        for position, (query, routed) in enumerate(zip(queries, encoded)):
            if isinstance(routed, Exception):
                found.append(routed)
                continue
            try:
                found.append(self._neighbours.find(query, routed, encode_seconds))
            except Exception as err:  # noqa: BLE001 (the query's own error, returned in its slot)
                found.append(err)
                continue
            if on_encoded is not None:
                on_encoded(position, found[-1])
        return found

    def _finished(self, item: Found, result: RerouteResult | Exception, batch_size: int) -> Rerouted | Exception:
        """A re-routed query with the evidence its record and answer check need."""
        if isinstance(result, Exception):
            return result
        described = item.described
        if strategy(result.strategy).needs is Needs.POOL:  # its neighbours are rows of the pool, found without a search
            described = pool_neighbours(item.snapshot, [n.id for n in result.neighbours])
        config = item.request.config
        pinned = answer_pins(self.layout, config.target, result.base_routing, result.routing, config.lm_layers)
        return Rerouted(item.batch, result, item.snapshot, described, {**item.timings, "reroute": result.seconds},
                        batch_size, pinned, config.lm_positions,
                        answer_space(config, result, item.snapshot, described))

    def prepare(self, image: Image.Image, question: str, overrides: dict, index: str | None = None) -> Prepared:
        """One request: re-route per its options and build the LM prompt (raises that request's error)."""
        outcome = self.prepare_many([ServeRequest(image, question, overrides, index)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def prepare_many(self, requests: Sequence[ServeRequest],
                     on_base: BaseReady | None = None) -> list[Prepared | Exception]:
        """A batch of requests through both of the server's stages (`begin_many`, then `finish_many` for the
        requests the first left pending), in one call."""
        begun = self.begin_many(requests, on_base)
        finished = iter(self.finish_many([item for item in begun if isinstance(item, Pending)]))
        return [next(finished) if isinstance(item, Pending) else item for item in begun]

    def begin_many(self, requests: Sequence[ServeRequest],
                   on_base: BaseReady | None = None) -> list[Prepared | Pending | Exception]:
        """The server's first stage: a batch of requests encoded together and searched, and each one the evidence
        guard decides from its neighbours alone (no model call) or whose strategy is the baseline prepared at once;
        the others are `Pending`, for `finish_many`, which runs their strategies.

        Each slot holds that request's prompt and record, its `Pending`, or the error that refused it (a bad
        option, an unknown index), so one bad request never fails the others of its batch. A request without an
        image is not re-routed: its slot holds the model's `question_prompt` and a record saying so.
        `on_base(i, prompt)` gets request i's prompt under the router's own routing as soon as it is encoded: the
        server starts that answer speculatively.
        """
        queries: list[Query | Prepared | Exception] = []
        for image, question, overrides, index in requests:
            if image is None:  # its options only matter to re-routing, which needs an image: they are ignored
                queries.append(self._question_only(question))
                continue
            try:
                config = self.config_for(overrides)
                for field, name in (("strategy", config.strategy), ("lm_strategy", config.lm_strategy)):
                    if name is not None and not strategy(name).served:
                        raise ValueError(f"{field} {name!r} is for evaluation only (r2t2 eval)")
                queries.append(Query(image, question, config, index))
            except ValueError as err:
                queries.append(err)
        valid = [q for q in queries if isinstance(q, Query)]
        positions = [i for i, q in enumerate(queries) if isinstance(q, Query)]

        def encoded(position: int, item: Found) -> None:
            assert on_base is not None
            on_base(positions[position], self.model.engine_prompts(item.batch, item.request.r0)[0])

        found = self._found_many(valid, None if on_base is None else encoded)
        ready = [f for f in found if isinstance(f, Found)]
        decided: list[RerouteResult | Exception | None] = list(decide_before_steps(self.model,
                                                                                  [f.request for f in ready]))
        # The baseline re-routes nothing: it is answered here rather than queued behind the others' strategies.
        now = [j for j, f in enumerate(ready) if strategy(f.request.config.strategy).baseline]
        for j, result in zip(now, self._rerouted_results([ready[j].request for j in now])):
            decided[j] = result
        outcomes = iter(decided)
        begun: list[Prepared | Pending | Exception] = []
        for item in found:
            if isinstance(item, Exception):
                begun.append(item)
                continue
            result = next(outcomes)
            if result is None:
                begun.append(Pending(item, len(ready)))
                continue
            done = self._finished(item, result, len(ready))
            begun.append(done if isinstance(done, Exception) else self._prepared(done))
        at = iter(begun)
        return [next(at) if isinstance(query, Query) else query for query in queries]

    def finish_many(self, pending: Sequence[Pending]) -> list[Prepared | Exception]:
        """The server's second stage: the strategies of requests `begin_many` left pending (from any of its batches),
        run together; each slot that request's prompt and record, or its error."""
        results = self._rerouted_results([p.found.request for p in pending])
        done = [self._finished(p.found, result, p.batch_size) for p, result in zip(pending, results)]
        return [item if isinstance(item, Exception) else self._prepared(item) for item in done]

    def _prepared(self, done: Rerouted) -> Prepared:
        """A re-routed request's engine prompt, record, LM rows and answer space."""
        return Prepared(prompt=self.model.engine_prompts(done.query, done.result.routing)[0],
                        record=build_record(done, self.layout), lm_rows=self.lm_rows(done),
                        answer_space=done.answer_space)

    def _question_only(self, question: str) -> Prepared | Exception:
        """A question asked without an image: the model's prompt of the question alone, not re-routed (the
        neighbours and the experts' routing come from an image), or that request's error (QuestionTooLong)."""
        started = time.perf_counter()
        if not hasattr(self.model, "question_prompt"):  # an adapter written before text-only turns were answered
            return ValueError(f"model {self.model_name!r} answers only questions about an image: send an image_url "
                              f"part (its adapter has no question_prompt, docs/models.md)")
        try:
            prompt = self.model.question_prompt(question)
        except Exception as err:  # noqa: BLE001 (the request's own error, returned in its slot)
            return err
        return Prepared(prompt=prompt, record=question_only_record(time.perf_counter() - started))

    def answer(self, done: Rerouted) -> str:
        """The torch model's greedy answer to a re-routed query, applying the rows the server's engine would."""
        if done.pinned is None:
            return self.model.answer(done.query, done.result.routing)[0]
        return self.model.answer(done.query, done.result.routing, pinned=done.pinned,
                                 lm_positions=done.lm_positions)[0]

    def checked_answer(self, done: Rerouted, rerouted: str, base: str) -> AnswerVerdict | None:
        """The answer check's verdict on a re-routed answer (None when the request has no check to make)."""
        return None if done.answer_space is None else check_answer(base, rerouted, done.answer_space)

    def lm_rows(self, done: Rerouted) -> LmRows | None:
        """What the engine applies for this request: each pinned LM row's distribution, by decoder layer, at the
        positions the request asked for."""
        if done.pinned is None:
            return None
        routing = done.result.routing.detach().cpu()
        return LmRows({row.layer: routing[i, :len(row.experts)].tolist()
                       for i, row in enumerate(self.layout.rows) if row.kind == "lm" and done.pinned[i]},
                      done.lm_positions)
