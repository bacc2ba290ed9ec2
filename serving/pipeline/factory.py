"""Building a served model's pipeline: the model, its neighbour embedder, its reference indexes and defaults.

`load_pipeline` is the server's default factory (a server config's `pipeline_factory`); `serve_model` wraps
any `ServableModel`, a user's adapter included.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import torch

from indexes.build import routing_row_names
from indexes.embedders import Embedder, neighbour_embedder
from indexes.errors import IndexMismatchError
from indexes.registry import IndexRegistry
from indexes.specs import build_from_spec
from indexes.store import IndexStore
from serving.pipeline.request_path import ReroutePipeline
from r2t2.model import ServableModel, load_model
from r2t2.routing import RerouteConfig
from r2t2.routing.config import SHIPPED_FAMILY_DEFAULTS
from r2t2.routing.reroute import routing_layout
from r2t2.routing.strategies import strategy

log = logging.getLogger(__name__)
DEFAULT_INDEX = "embedded"  # the embedded family's default index (every family's is named after it)
DEFAULT_INDEX_SPEC = {"source": "builtin", "split": "reference", "limit": 8000, "seed": 0}
SERVE_OPTIONS = ("model_name", "index_dir", "default_index", "build_default_index", "r2t2", "device", "dtype",
                 "embedder")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # the weights' dtype a pipeline may load


def load_pipeline(config: dict[str, Any] | None = None) -> ReroutePipeline:
    """The server's default factory: a config-described checkpoint with its default reference index.

    `config["checkpoint"]` is a checkpoint directory or a shipped family name (default "embedded"); the
    other keys are `serve_model`'s. The re-routing defaults are the shipped ones, over them the family
    config's `r2t2_defaults`, over those the config's `r2t2`. Builds the default index on first use when the store has none for
    this model. `config["dtype"]` ("float32", the default, or "bfloat16") is the model weights' dtype;
    `config["weights"]` what it loads: "full" (the default); for a Hugging Face image-text checkpoint "tail"
    (its language model from the first routed layer on) or "none" (no weights: kernel with a fixed alpha and
    meanshift only), its queries' base routing then read from the serving engine.
    """
    options = dict(config or {})
    model = load_model(options.pop("checkpoint", "embedded"), _dtype(options), options.pop("weights", "full"))
    # The shipped settings, then the family config's own (`r2t2_defaults`), then the server config's.
    family = getattr(model, "r2t2_defaults", {})
    options["r2t2"] = {**SHIPPED_FAMILY_DEFAULTS, **family, **options.get("r2t2", {})}
    return serve_model(model, model.family, options)


def serve_model(model: ServableModel, family: str, options: dict[str, Any] | None = None) -> ReroutePipeline:
    """A pipeline for any `ServableModel` (a config-described family or a user's adapter).

    Options: `model_name` (default "r2t2-<family>"), `index_dir`, `default_index` (default: the family
    name), `build_default_index` (default True), `r2t2` (default strategy settings), `device` ("cpu", the
    default, or e.g. "cuda": the model, its batches, neighbour tensors and re-routing run there; the model
    must then have `.to(device)`), `dtype` ("float32", the default, or "bfloat16": the weights', half the
    memory; routings and losses stay float32; a model loaded in another dtype must have `.to(dtype)`),
    `embedder` (the neighbour embedder, see `neighbour_embedder`; its indexes must have been built with it).
    Unknown options are a ValueError naming them. A model without vision rows re-routes its LM rows unless
    `r2t2` names another target.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(SERVE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown pipeline option(s) {', '.join(unknown)}; allowed: {', '.join(SERVE_OPTIONS)}")
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
    for field, name in (("strategy", defaults.strategy), ("lm_strategy", defaults.lm_strategy)):
        if name is not None and not strategy(name).served:  # every request would be refused
            raise ValueError(f"r2t2_defaults: {field} {name!r} is for evaluation only (r2t2 eval), never served")
    dtype = _dtype(options)
    if dtype != torch.float32:
        if not callable(getattr(model, "to", None)):
            raise ValueError(f"dtype {dtype} needs a model with .to(dtype); {type(model).__name__} has none")
        model.to(dtype)
    device = torch.device(options.get("device") or "cpu")
    if device.type != "cpu":
        if not callable(getattr(model, "to", None)):
            raise ValueError(f"device {str(device)!r} needs a model with .to(device); {type(model).__name__} has none")
        model.to(device)
    return ReroutePipeline(model, embedder, registry, defaults=defaults, default_index=default_index,
                           model_name=options.get("model_name") or f"r2t2-{family}", family=family, device=device)


def _dtype(options: dict[str, Any]) -> torch.dtype:
    name = options.get("dtype") or "float32"
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def default_index_spec(model: ServableModel) -> tuple[dict[str, Any], Path | None]:
    """The default index's dataset spec and the data directory it reads from: the built-in reference split, or
    the model's own reference set when it carries one (`default_references`, a JSONL file: a random-weights
    skeleton's, labelled with its own answers since it answers the real labels by chance alone)."""
    own = getattr(model, "default_references", None)
    if own is None:
        return DEFAULT_INDEX_SPEC, None
    return {"source": "jsonl", "path": Path(own).name}, Path(own).parent


def ensure_default_index(model: ServableModel, embedder: Embedder, store: IndexStore,
                         name: str) -> None:
    """Build the default reference index (`default_index_spec`, correct answers only) unless one exists.

    An index of that name built for another model is never overwritten: several models share one store,
    so it may be another served model's. That is a start-up error naming the index and both fingerprints.
    One built for this model before it had its current routing rows (e.g. before LM rows) is rebuilt as a
    new version: it is derived from built-in data or the model's own set only, so nothing of the user's is lost.
    """
    spec, data_dir = default_index_spec(model)
    current = store.current_version(name) if name in store.names() else None
    if current is None:
        build_from_spec(name, spec, model, embedder, store, data_dir=data_dir, progress_bar=True)
        return
    manifest = store.manifest(name, current)
    built_for = manifest.model_fingerprint
    if (built_for == model.fingerprint and manifest.embedder_name == embedder.name
            and manifest.routing_rows != routing_row_names(model)):
        log.warning("default index %r v%d stores routing rows [%s]; the model routes [%s]: building a new version",
                    name, current, ", ".join(manifest.routing_rows) or "not recorded", ", ".join(routing_row_names(model)))
        build_from_spec(name, spec, model, embedder, store, data_dir=data_dir)
        return
    if built_for == model.fingerprint and manifest.embedder_name != embedder.name:
        raise IndexMismatchError(f"default_index {name!r} in {store.root} was built with embedder "
                                 f"{manifest.embedder_name!r}, but this server embeds questions with {embedder.name!r}: "
                                 f"serve with that embedder, or rebuild the index (`r2t2 index build --name {name}`)")
    if built_for != model.fingerprint:
        raise IndexMismatchError(f"default_index {name!r} in {store.root} was built for model {built_for}, not "
                                 f"this model ({model.fingerprint}): name another default_index, or remove that "
                                 f"index (`r2t2 index rm {name}`) if its model is gone")
