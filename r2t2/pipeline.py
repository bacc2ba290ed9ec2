"""One request's path through R2-T2: encode -> route -> embed -> search -> re-route -> prompt.

Shared by the server (which hands the prompt to a generation backend) and by `r2t2 eval` (which
generates with the torch model), so both measure the same thing. Nothing per-request is stored on
the pipeline: every call builds its own config, batch, neighbourhood and result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faiss
import torch
from PIL import Image

from indexes.embedders import MINILM_NAME, Embedder, MiniLMEmbedder
from indexes.reference_index import ReferenceIndex
from indexes.registry import IndexRegistry
from indexes.specs import build_from_spec
from indexes.store import IndexStore
from r2t2.model import MultimodalMoE, load_default_model
from r2t2.model.batches import LabelledBatch
from r2t2.routing import Neighbourhood, RerouteConfig, RerouteResult, reroute

DEFAULT_INDEX = "embedded"
DEFAULT_INDEX_SPEC = {"source": "builtin", "split": "reference", "limit": 8000, "seed": 0}
EPSILON_CANDIDATES = 64  # an epsilon-ball is cut from this many nearest candidates
NEEDS_NEIGHBOURS = ("ngd", "kernel")
# The embedded model's routing lives on the simplex of 3 experts and its router is confident (near a
# vertex). METHOD.md's NGD learning rate (1e-2, cosine to 1e-5) moves each weight by at most ~0.06 in
# 10 Adam steps, which cannot leave a vertex; 0.2 makes the cosine schedule's total step ~1, the
# simplex's own scale. Measured side by side in BENCHMARKS.md; requests can still ask for lr=0.01.
EMBEDDED_DEFAULTS = {"lr": 0.2}


@dataclass
class Prepared:
    prompt_embeds: torch.Tensor  # [S, hidden] float32: the whole prompt for the language model
    record: dict  # JSON-able account of what R2-T2 did


@dataclass
class Rerouted:
    """A query after re-routing, with the evidence needed to explain it."""

    query: LabelledBatch
    result: RerouteResult
    index: ReferenceIndex | None
    neighbour_answers: dict[str, str]
    neighbour_similarities: dict[str, float]
    timings: dict[str, float]


class ReroutePipeline:
    def __init__(self, model: MultimodalMoE, embedder: Embedder, registry: IndexRegistry,
                 defaults: RerouteConfig = RerouteConfig(), default_index: str = DEFAULT_INDEX,
                 model_name: str = "r2t2-embedded") -> None:
        self.model = model
        self.embedder = embedder
        self.registry = registry
        self.defaults = defaults
        self.default_index = default_index
        self.model_name = model_name
        self.lm_path = str(model.checkpoint_dir / "lm")

    def config_for(self, overrides: dict[str, Any]) -> RerouteConfig:
        """Server defaults with the request's options on top; ValueError names a bad or unknown field."""
        return self.defaults.replace(**overrides)

    def rerouted(self, image: Image.Image, question: str, config: RerouteConfig, index: str | None = None,
                 answer: str | None = None) -> Rerouted:
        """Encode the query and re-route it. `answer` is the label, needed only by the oracle."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        sentence = self.model.embed_questions([question])  # the LM reads it; MiniLM search reuses it
        timings["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        query = self.model.labelled_batch([image], [question], [answer or ""], question_embeddings=sentence)
        r0 = self.model.base_routing(query)
        timings["encode"] = time.perf_counter() - started
        snapshot, neighbourhood, pool = None, None, None
        embedding = None
        answers: dict[str, str] = {}
        similarities: dict[str, float] = {}
        if config.strategy in NEEDS_NEIGHBOURS or config.strategy == "meanshift":
            snapshot = self.registry.get(index or self.default_index)
        if config.strategy in NEEDS_NEIGHBOURS:
            if self.embedder.name == MINILM_NAME:
                embedding = sentence[0].numpy()
            else:
                tick = time.perf_counter()
                embedding = self.embedder.embed([SimpleNamespace(image=image, question=question)])[0]
                timings["embed"] += time.perf_counter() - tick
            tick = time.perf_counter()
            wanted = config.k if config.neighbourhood == "knn" else max(config.k, EPSILON_CANDIDATES)
            found = snapshot.search(embedding, wanted)
            neighbourhood = Neighbourhood(
                ids=found.ids, embeddings=torch.from_numpy(found.embeddings).float(),
                routings=torch.from_numpy(found.routings).float(),
                batch=self.model.reference_batch(found.payload),
            )
            answers = dict(zip(found.ids, found.answers))
            similarities = {i: float(s) for i, s in zip(found.ids, found.similarities)}
            timings["search"] = time.perf_counter() - tick
        elif config.strategy == "meanshift":
            pool = torch.tensor(snapshot.all_routings, dtype=torch.float32)
        tick = time.perf_counter()
        result = reroute(self.model, r0, config,
                         query_embedding=None if embedding is None else torch.from_numpy(embedding).float(),
                         neighbourhood=neighbourhood, pool_routings=pool,
                         target=query if config.strategy == "oracle" else None)
        timings["reroute"] = time.perf_counter() - tick
        return Rerouted(query, result, snapshot, answers, similarities, timings)

    def prepare(self, image: Image.Image, question: str, overrides: dict[str, Any],
                index: str | None = None) -> Prepared:
        """The server's entry point: re-route per the request's options and build the LM prompt."""
        config = self.config_for(overrides)
        if config.strategy == "oracle":
            raise ValueError("strategy 'oracle' needs the true answer and is for evaluation only")
        done = self.rerouted(image, question, config, index)
        prompt = self.model.prompt_embeds(done.query, done.result.routing)[0]
        return Prepared(prompt_embeds=prompt, record=self.record(done))

    def record(self, done: Rerouted) -> dict:
        names = self.model.expert_names
        result = done.result.to_dict()

        def named(rows: list[list[float]]) -> list[dict[str, float]] | dict[str, float]:
            per_layer = [dict(zip(names, row)) for row in rows]
            return per_layer[0] if len(per_layer) == 1 else per_layer

        result["base_routing"] = named(result["base_routing"])
        result["routing"] = named(result["routing"])
        for neighbour in result["neighbours"]:
            neighbour["answer"] = done.neighbour_answers.get(neighbour["id"])
            neighbour["similarity"] = done.neighbour_similarities.get(neighbour["id"])
        result["index"] = None if done.index is None else {"name": done.index.name,
                                                           "version": done.index.version}
        result["timings"] = done.timings
        return result


def load_pipeline(config: dict | None = None) -> ReroutePipeline:
    """The embedded default: shipped checkpoint, MiniLM question embedder, default reference index.

    Builds the default index on first use when the index directory has none for this model.
    """
    config = config or {}
    faiss.omp_set_num_threads(1)  # one query per search: FAISS's threads only contend with torch's
    model = load_default_model()
    embedder = MiniLMEmbedder()
    store = IndexStore(config.get("index_dir"))
    ensure_default_index(model, embedder, store, DEFAULT_INDEX)
    registry = IndexRegistry(store, expected_fingerprint=model.fingerprint, expected_embedder=embedder.name)
    defaults = RerouteConfig().replace(**{**EMBEDDED_DEFAULTS, **config.get("r2t2", {})})
    return ReroutePipeline(model, embedder, registry, defaults=defaults)


def ensure_default_index(model: MultimodalMoE, embedder: Embedder, store: IndexStore,
                         name: str = DEFAULT_INDEX) -> None:
    """Build the default reference index (reference split, correct answers only) unless one exists."""
    current = store.current_version(name) if name in store.names() else None
    if current is not None and store.manifest(name, current).model_fingerprint == model.fingerprint:
        return
    build_from_spec(name, DEFAULT_INDEX_SPEC, model, embedder, store)
