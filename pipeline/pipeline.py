"""One request's path through R2-T2: encode -> route -> embed -> search -> re-route -> prompt.

Shared by the server (which hands the prompt to a generation backend) and by `r2t2 eval` (which
generates with the torch model), so both measure the same thing. Nothing per-request is stored on
the pipeline: every call builds its own config, batch, neighbourhood and result.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from indexes.build import routing_row_names
from indexes.embedders import Embedder, neighbour_embedder
from indexes.errors import IndexMismatchError
from indexes.reference_index import Candidates, ReferenceIndex
from indexes.registry import IndexRegistry
from indexes.specs import build_from_spec
from indexes.store import IndexStore
from pipeline.answer_check import AnswerVerdict, judge
from r2t2.engine_prompt import EnginePrompt
from pipeline.explain import explained
from r2t2.model import RoutedQuery, ServableModel, load_model
from r2t2.routing import Neighbourhood, RerouteConfig, RerouteRequest, RerouteResult, reroute_many
from r2t2.routing.block import answer_pins
from r2t2.routing.layout import TARGETS, RoutingLayout
from r2t2.routing.protocol import ReferenceBatch
from r2t2.routing.reroute import routing_layout

log = logging.getLogger(__name__)
DEFAULT_INDEX = "embedded"  # the embedded family's default index (every family's is named after it)
DEFAULT_INDEX_SPEC = {"source": "builtin", "split": "reference", "limit": 8000, "seed": 0}
EPSILON_CANDIDATES = 64  # an epsilon-ball is cut from this many nearest candidates
NEEDS_NEIGHBOURS = ("ngd", "kernel")
# Shipped families route on the simplex of their experts and their routers are confident (near a
# vertex). The paper's NGD learning rate (1e-2, cosine to 1e-5) moves each weight by at most ~0.06 in
# 10 Adam steps, which cannot leave a vertex; 0.2 makes the cosine schedule's total step ~1, the
# simplex's own scale. Measured side by side in BENCHMARKS.md; requests can still ask for lr=0.01.
# The evidence guard (routing/guard.py) is on for them: on the paraphrase-val split it never cost
# accuracy net of broken answers (BENCHMARKS.md, section 1c); a request can turn it off with guard=false.
# So is the answer check (pipeline/answer_check.py): on paraphrase-val it replaced only answers of another kind
# and cost no fix at answer_space_k 16, 64 or 256 (BENCHMARKS.md, section 1d); answer_check=false turns it off.
FAMILY_DEFAULTS = {"lr": 0.2, "guard": True, "answer_check": True}


LM_TOP_EXPERTS = 8  # an LM row in the record lists its this many heaviest experts


@dataclass
class Prepared:
    prompt: EnginePrompt  # what the generation engine is fed (the model's `engine_prompts`)
    record: dict  # JSON-able account of what R2-T2 did
    # {decoder layer: distribution over its experts} the engine applies at the answer position; None: its routers
    lm_routing: dict[int, list[float]] | None = None
    # With the answer check on a request whose routing moved: the answers a changed answer must be among
    answer_space: frozenset[str] | None = None


BaseReady = Callable[[int, EnginePrompt], None]  # (request's position in the batch, its prompt under the base routing)


@dataclass(frozen=True)
class Query:
    """One question to re-route: its image, text, settings, index (None: the default) and, for the
    oracle only, its true answer."""

    image: Image.Image
    question: str
    config: RerouteConfig
    index: str | None = None
    answer: str | None = None


@dataclass
class Rerouted:
    """A query after re-routing, with the evidence needed to explain it."""

    query: ReferenceBatch
    result: RerouteResult
    index: ReferenceIndex | None
    neighbours: dict[str, dict[str, Any]]  # the strategy's neighbour id -> the reference sample it names
    timings: dict[str, float]
    batch_size: int = 1  # how many requests were re-routed together with this one (itself included)
    pinned: tuple[bool, ...] | None = None  # the rows the answer applies (routing/block.py `answer_pins`)
    # With the answer check, for a request whose routing moved: the answers the index holds for questions like
    # its neighbours' (pipeline/answer_check.py); None: no check (it is off, nothing moved, or no neighbours)
    answer_space: frozenset[str] | None = None


@dataclass(frozen=True)
class _Found:
    """A query encoded, with what its strategy needs: the step before the batched re-routing."""

    batch: ReferenceBatch
    request: RerouteRequest
    snapshot: ReferenceIndex | None
    described: dict[str, dict[str, Any]]
    timings: dict[str, float]


class ReroutePipeline:
    """One served model with its neighbour embedder, reference indexes and re-routing defaults."""

    def __init__(self, model: ServableModel, embedder: Embedder, registry: IndexRegistry,
                 defaults: RerouteConfig = RerouteConfig(), default_index: str = DEFAULT_INDEX,
                 model_name: str = "r2t2-embedded", family: str = "embedded",
                 device: torch.device = torch.device("cpu")) -> None:
        """`device` is where the model's weights are: neighbour tensors are placed there for re-routing."""
        self.model = model
        self.device = device
        self.embedder = embedder
        self.registry = registry
        self.defaults = defaults
        self.default_index = default_index
        self.model_name = model_name
        self.family = family
        self.lm_path = str(model.lm_path)
        self.layout: RoutingLayout = routing_layout(model)

    def info(self) -> dict[str, Any]:
        """What a client or the server needs to know about the served model (JSON-ready)."""
        return {"model_name": self.model_name, "family": self.family, "fingerprint": self.model.fingerprint,
                "lm_path": self.lm_path, "engine_input": self.model.engine_input,
                "routing_shape": list(self.model.routing_shape),
                "routing_rows": self.layout.to_dict(),
                "default_index": self.default_index, "max_positions": self.model.max_positions,
                # An adapter model may read questions of any length (None); the shipped families cap them.
                "max_question_tokens": getattr(self.model, "max_question_tokens", None),
                "r2t2_defaults": asdict(self.defaults), "embedder": self.embedder.name, "device": str(self.device)}

    def config_for(self, overrides: dict[str, Any]) -> RerouteConfig:
        """Server defaults with the request's options on top; ValueError names a bad or unknown field, or a
        target whose rows this model does not have."""
        config = self.defaults.replace(**overrides)
        missing = [kind for kind in TARGETS[config.target] if not self.layout.has(kind)]
        if missing:
            raise ValueError(f"target {config.target!r} re-routes {' and '.join(missing)} rows, which model "
                             f"{self.model_name!r} does not have (its rows: {', '.join(self.layout.names)})")
        return config

    def rerouted(self, image: Image.Image, question: str, config: RerouteConfig, index: str | None = None,
                 answer: str | None = None) -> Rerouted:
        """Encode the query and re-route it. `answer` is the label, needed only by the oracle."""
        outcome = self.rerouted_many([Query(image, question, config, index, answer)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def rerouted_many(self, queries: Sequence[Query],
                      on_encoded: Callable[[int, _Found], None] | None = None) -> list[Rerouted | Exception]:
        """Re-route a batch of queries, each with its own settings; results (or that query's error) in order.

        The queries are encoded together (`_encoded`), each is searched on its own, then all are re-routed in
        one `reroute_many` call, which shares model calls between requests of the same strategy. A failure of
        one query (e.g. a question too long, an unknown index) is its own result and never reaches the others.
        `on_encoded(position, found)` is told of each query as soon as it is encoded and searched, before any
        re-routing.
        """
        started = time.perf_counter()
        encoded = self._encoded(queries)
        encode_seconds = time.perf_counter() - started
        found: list[_Found | Exception] = []
        for position, (query, routed) in enumerate(zip(queries, encoded)):
            if isinstance(routed, Exception):
                found.append(routed)
                continue
            try:
                found.append(self._found(query, routed, encode_seconds))
            except Exception as err:  # noqa: BLE001 (the query's own error, returned in its slot)
                found.append(err)
                continue
            if on_encoded is not None:
                on_encoded(position, found[-1])
        ready = [f for f in found if isinstance(f, _Found)]
        done = iter(zip(ready, self._rerouted(ready)))
        outcomes: list[Rerouted | Exception] = []
        for item in found:
            if isinstance(item, Exception):
                outcomes.append(item)
                continue
            _, result = next(done)
            if isinstance(result, Exception):
                outcomes.append(result)
                continue
            timings = {**item.timings, "reroute": result.seconds}
            described = item.described
            if result.strategy == "meanshift":  # its neighbours are rows of the routing pool, found without a search
                rows = [n.id for n in result.neighbours]
                described = _described(rows, item.snapshot.take(np.asarray([int(r) for r in rows], dtype=np.int64)))
            pinned = answer_pins(self.layout, item.request.config.target, result.base_routing, result.routing)
            space = self._answer_space(item.request.config, result, item.snapshot, described)
            outcomes.append(Rerouted(item.batch, result, item.snapshot, described, timings, len(ready), pinned,
                                     space))
        return outcomes

    @staticmethod
    def _answer_space(config: RerouteConfig, result: RerouteResult, snapshot: ReferenceIndex | None,
                      described: dict[str, dict[str, Any]]) -> frozenset[str] | None:
        if not config.answer_check or snapshot is None or not result.neighbours \
                or torch.equal(result.routing, result.base_routing):
            return None
        rows = np.asarray([described[n.id]["row"] for n in result.neighbours], dtype=np.int64)
        return snapshot.answers_near(rows, config.answer_space_k)

    def checked_answer(self, done: Rerouted, rerouted: str, base: str) -> AnswerVerdict | None:
        """The answer check's verdict on a re-routed answer (None when the request has no check to make)."""
        return None if done.answer_space is None else judge(base, rerouted, done.answer_space)

    def _rerouted(self, ready: list[_Found]) -> list[RerouteResult | Exception]:
        """One `reroute_many` call for the batch (each request alone should it refuse the batch)."""
        return _batch_or_each([f.request for f in ready], lambda requests: reroute_many(self.model, requests))

    def _encoded(self, queries: Sequence[Query]) -> list[RoutedQuery | Exception]:
        """Every query encoded with its base routing, in one `encode_queries` call when the model has it; should
        that call refuse the batch, each query alone, so only a bad one fails. A model without it: one
        `encode_query` and `base_routing` per query."""
        together = getattr(self.model, "encode_queries", None)
        if together is None:
            return [_encoded_alone(self.model, query) for query in queries]
        return _batch_or_each(list(queries), lambda some: together([q.image for q in some], [q.question for q in some],
                                                                    [q.answer for q in some]))

    def _found(self, query: Query, routed: RoutedQuery, encode_seconds: float) -> _Found:
        """Find what an encoded query's strategy needs: neighbours, the routing pool, or its label."""
        config, image, question = query.config, query.image, query.question
        encoded, r0 = routed.encoded, routed.base_routing
        batch = encoded.batch
        timings: dict[str, float] = {"encode": encode_seconds, "embed": 0.0}
        snapshot, neighbourhood, pool, embedding = None, None, None, None
        described: dict[str, dict[str, Any]] = {}
        if config.strategy in NEEDS_NEIGHBOURS or config.strategy == "meanshift":
            snapshot = self.registry.get(query.index or self.default_index)
        if config.strategy in NEEDS_NEIGHBOURS:
            if encoded.question_embedder == self.embedder.name:  # the model already embedded the question
                embedding = encoded.question_embedding
            else:
                tick = time.perf_counter()
                embedding = self.embedder.embed([SimpleNamespace(image=image, question=question)])[0]
                timings["embed"] += time.perf_counter() - tick
            tick = time.perf_counter()
            wanted = config.k if config.neighbourhood == "knn" else max(config.k, EPSILON_CANDIDATES)
            hits = snapshot.search(embedding, wanted)
            neighbourhood = Neighbourhood(
                ids=hits.ids, embeddings=torch.from_numpy(hits.embeddings).float().to(self.device),
                routings=torch.from_numpy(hits.routings).float().to(self.device),
                batch=self.model.reference_batch(hits.payload),
            )
            described = _described(list(hits.ids), hits)
            timings["search"] = time.perf_counter() - tick
        elif config.strategy == "meanshift":
            pool = torch.tensor(snapshot.all_routings, dtype=torch.float32, device=self.device)
        query_embedding = None if embedding is None else torch.from_numpy(embedding).float().to(self.device)
        request = RerouteRequest(r0, config, query_embedding=query_embedding,
                                 neighbourhood=neighbourhood, pool_routings=pool,
                                 target=batch if config.strategy == "oracle" else None)
        return _Found(batch, request, snapshot, described, timings)

    def prepare(self, image: Image.Image, question: str, overrides: dict[str, Any],
                index: str | None = None) -> Prepared:
        """One request: re-route per its options and build the LM prompt (raises that request's error)."""
        outcome = self.prepare_many([(image, question, overrides, index)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def prepare_many(self, requests: Sequence[tuple[Image.Image, str, dict[str, Any], str | None]],
                     on_base: BaseReady | None = None) -> list[Prepared | Exception]:
        """The server's entry point: (image, question, r2t2 options, index) per request, re-routed together.

        Each slot holds that request's prompt and record, or the error that refused it (a bad option, an
        unknown index), so one bad request never fails the others of its batch. `on_base(i, prompt)` gets
        request i's prompt under the router's own routing as soon as it is encoded, while the batch is still
        being re-routed: the server starts that answer speculatively.
        """
        queries: list[Query | Exception] = []
        for image, question, overrides, index in requests:
            try:
                config = self.config_for(overrides)
                if config.strategy == "oracle":
                    raise ValueError("strategy 'oracle' needs the true answer and is for evaluation only")
                queries.append(Query(image, question, config, index))
            except ValueError as err:
                queries.append(err)
        valid = [q for q in queries if isinstance(q, Query)]
        positions = [i for i, q in enumerate(queries) if isinstance(q, Query)]

        def encoded(position: int, item: _Found) -> None:
            assert on_base is not None
            on_base(positions[position], self.model.engine_prompts(item.batch, item.request.r0)[0])

        done = iter(self.rerouted_many(valid, None if on_base is None else encoded))
        outcomes: list[Prepared | Exception] = []
        for query in queries:
            outcome = query if isinstance(query, Exception) else next(done)
            if not isinstance(outcome, Exception):
                prompt = self.model.engine_prompts(outcome.query, outcome.result.routing)[0]
                outcome = Prepared(prompt=prompt, record=self.record(outcome),
                                   lm_routing=self.lm_routing(outcome), answer_space=outcome.answer_space)
            outcomes.append(outcome)
        return outcomes

    def answer(self, done: Rerouted) -> str:
        """The torch model's greedy answer to a re-routed query, applying the rows the server's engine would."""
        if done.pinned is None:
            return self.model.answer(done.query, done.result.routing)[0]
        return self.model.answer(done.query, done.result.routing, pinned=done.pinned)[0]

    def lm_routing(self, done: Rerouted) -> dict[int, list[float]] | None:
        """What the engine applies for this request: each pinned LM row's distribution, by decoder layer."""
        if done.pinned is None:
            return None
        routing = done.result.routing.detach().cpu()
        return {row.layer: routing[i, :len(row.experts)].tolist()
                for i, row in enumerate(self.layout.rows) if row.kind == "lm" and done.pinned[i]}

    def record(self, done: Rerouted) -> dict:
        result = done.result.to_dict()
        vision = [(i, row) for i, row in enumerate(self.layout.rows) if row.kind == "vision"]

        def named(rows: list[list[float]]) -> dict[str, Any]:
            """{expert: weight} for one vision row; {row: {expert: weight}} for several."""
            per_row = {row.name: dict(zip(row.experts, rows[i])) for i, row in vision}
            return next(iter(per_row.values())) if len(per_row) == 1 else per_row

        result["lm_routing"] = self._lm_record(result["base_routing"], result["routing"], done)
        result["base_routing"] = named(result["base_routing"])
        result["routing"] = named(result["routing"])
        # Every neighbour is named by its reference sample (id, question, answer, task) before its numbers.
        result["neighbours"] = [{"id": n["id"], **_public(done.neighbours.get(n["id"], {})), "weight": n["weight"],
                                 "distance": n["distance"]} for n in result["neighbours"]]
        result["index"] = None if done.index is None else {"name": done.index.name,
                                                           "version": done.index.version}
        # Known without a comparison only when the routing did not move: the prompt, hence the answer, is the
        # router's own. The server fills it in when the request asks to compare with strategy "none".
        result["changed_answer"] = False if result["moved"] == 0 else None
        result["timings"] = done.timings
        result["batch_size"] = done.batch_size
        result.update(explained(result))  # why it moved, or not (pipeline/explain.py)
        return result

    def _lm_record(self, base: list[list[float]], routing: list[list[float]], done: Rerouted) -> dict | None:
        """The LM rows before and after (each layer's heaviest experts), and whether the answer applies them.

        None for a model without LM rows. `engine_experts` is filled in by the server from the engine.
        """
        rows = [(i, row) for i, row in enumerate(self.layout.rows) if row.kind == "lm"]
        if not rows:
            return None

        def heaviest(weights: list[float], experts: tuple[str, ...]) -> list[dict[str, Any]]:
            ranked = sorted(zip(experts, weights), key=lambda pair: -pair[1])[:LM_TOP_EXPERTS]
            return [{"expert": expert, "weight": weight} for expert, weight in ranked]

        return {"applied": done.pinned is not None, "layers": [
            {"row": row.name, "layer": row.layer, "base": heaviest(base[i], row.experts),
             "routing": heaviest(routing[i], row.experts), "engine_experts": None} for i, row in rows]}


def _batch_or_each(items: list[Any], call: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
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


def _described(keys: list[str], found: Candidates) -> dict[str, dict[str, Any]]:
    """What a response says of each neighbour: the reference sample's id, question, answer and task, and
    its question-embedding similarity (None for rows chosen in routing space); and its row in the index."""
    return {key: {"id": found.ids[i], "question": found.questions[i], "answer": found.answers[i],
                  "task": found.tasks[i],
                  "similarity": None if np.isnan(found.similarities[i]) else float(found.similarities[i]),
                  "row": int(found.rows[i])}
            for i, key in enumerate(keys)}


def _public(described: dict[str, Any]) -> dict[str, Any]:
    """A neighbour's description as the record shows it (its index row is internal)."""
    return {key: value for key, value in described.items() if key != "row"}


def load_pipeline(config: dict[str, Any] | None = None) -> ReroutePipeline:
    """The server's default factory: a config-described checkpoint with its default reference index.

    `config["checkpoint"]` is a checkpoint directory or a shipped family name (default "embedded"); the
    other keys are `serve_model`'s. Builds the default index on first use when the store has none for
    this model.
    """
    options = dict(config or {})
    model = load_model(options.pop("checkpoint", "embedded"))
    options["r2t2"] = {**FAMILY_DEFAULTS, **options.get("r2t2", {})}
    return serve_model(model, model.family, options)


_SERVE_OPTIONS = ("model_name", "index_dir", "default_index", "build_default_index", "r2t2", "device", "embedder")


def serve_model(model: ServableModel, family: str, options: dict[str, Any] | None = None) -> ReroutePipeline:
    """A pipeline for any `ServableModel` (a config-described family or a user's adapter).

    Options: `model_name` (default "r2t2-<family>"), `index_dir`, `default_index` (default: the family
    name), `build_default_index` (default True), `r2t2` (default strategy settings), `device` ("cpu", the
    default, or e.g. "cuda": the model, its batches, neighbour tensors and re-routing run there; the model
    must then have `.to(device)`), `embedder` (the neighbour embedder, see `neighbour_embedder`; its indexes
    must have been built with it). Unknown options are a ValueError naming them. A model without vision rows
    re-routes its LM rows unless `r2t2` names another target.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(_SERVE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown pipeline option(s) {', '.join(unknown)}; allowed: {', '.join(_SERVE_OPTIONS)}")
    faiss.omp_set_num_threads(1)  # one query per search: FAISS's threads only contend with torch's
    embedder = neighbour_embedder(options.get("embedder"), model)
    store = IndexStore(options.get("index_dir"))
    default_index = options.get("default_index") or family
    if options.get("build_default_index", True):
        ensure_default_index(model, embedder, store, default_index)
    registry = IndexRegistry(store, expected_fingerprint=model.fingerprint, expected_embedder=embedder.name,
                             expected_rows=routing_row_names(model))
    # A model without vision rows (all its routing is the LM's) re-routes its LM rows unless told otherwise.
    target = {} if routing_layout(model).has("vision") else {"target": "lm"}
    defaults = RerouteConfig().replace(**{**target, **options.get("r2t2", {})})
    device = torch.device(options.get("device") or "cpu")
    if device.type != "cpu":
        if not callable(getattr(model, "to", None)):
            raise ValueError(f"device {str(device)!r} needs a model with .to(device); {type(model).__name__} has none")
        model.to(device)
    return ReroutePipeline(model, embedder, registry, defaults=defaults, default_index=default_index,
                           model_name=options.get("model_name") or f"r2t2-{family}", family=family, device=device)


def ensure_default_index(model: ServableModel, embedder: Embedder, store: IndexStore,
                         name: str = DEFAULT_INDEX) -> None:
    """Build the default reference index (reference split, correct answers only) unless one exists.

    An index of that name built for another model is never overwritten: several models share one store,
    so it may be another served model's. That is a start-up error naming the index and both fingerprints.
    One built for this model before it had its current routing rows (e.g. before LM rows) is rebuilt as a
    new version: it is derived from built-in data only, so nothing of the user's is lost.
    """
    current = store.current_version(name) if name in store.names() else None
    if current is None:
        build_from_spec(name, DEFAULT_INDEX_SPEC, model, embedder, store, progress_bar=True)
        return
    manifest = store.manifest(name, current)
    built_for = manifest.model_fingerprint
    if (built_for == model.fingerprint and manifest.embedder_name == embedder.name
            and manifest.routing_rows != routing_row_names(model)):
        log.warning("default index %r v%d stores routing rows [%s]; the model routes [%s]: building a new version",
                    name, current, ", ".join(manifest.routing_rows) or "not recorded", ", ".join(routing_row_names(model)))
        build_from_spec(name, DEFAULT_INDEX_SPEC, model, embedder, store)
        return
    if built_for == model.fingerprint and manifest.embedder_name != embedder.name:
        raise IndexMismatchError(f"default_index {name!r} in {store.root} was built with embedder "
                                 f"{manifest.embedder_name!r}, but this server embeds questions with {embedder.name!r}: "
                                 f"serve with that embedder, or rebuild the index (`r2t2 index build --name {name}`)")
    if built_for != model.fingerprint:
        raise IndexMismatchError(f"default_index {name!r} in {store.root} was built for model {built_for}, not "
                                 f"this model ({model.fingerprint}): name another default_index, or remove that "
                                 f"index (`r2t2 index rm {name}`) if its model is gone")
