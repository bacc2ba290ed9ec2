"""Assemble the Ray Serve application: per served model a ReRouter -> Generator pair, one Ingress in front of
all of them, and one IndexManager for the shared reference-index store."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from serving.config import ServerConfig, actor_options
from serving.deployments.generator import Generator
from serving.deployments.index_manager import IndexManager
from serving.deployments.ingress import Ingress
from serving.deployments.names import deployment_name
from serving.deployments.rerouter import ReRouter


# On SIGTERM or Ctrl-C a replica checks for unfinished requests every 0.2 s (Ray's default: 2 s, paid once per
# deployment, one after the other) and is stopped after 3 s at most (default 20 s), which a request in flight on
# the embedded model needs a third of: with the rest of the stop (serving/lifecycle/stopping.py) within 10 s.
SHUTDOWN = {"graceful_shutdown_wait_loop_s": 0.2, "graceful_shutdown_timeout_s": 3.0}


def build_app(config: ServerConfig, engines: Mapping[str, tuple[str, str]] | None = None) -> Application:
    """The deployments, each sized by its own section of the config (the index manager is one replica).

    `engines` (model id -> the checkpoint its engine loads and its `engine_input`, as the start-up checks found
    them) lets each generator start its engine at once; a generator without one asks its re-router, which must
    load its pipeline first.
    """
    models: dict[str, tuple[Application, Application]] = {}
    for entry in config.models:
        rerouter = ReRouter.options(name=deployment_name("ReRouter", entry.name), **SHUTDOWN,
                                    **config.rerouter_options(entry).ray_options()).bind(config, entry.name)
        generator = Generator.options(name=deployment_name("Generator", entry.name), **SHUTDOWN,
                                      **config.generator_options(entry).ray_options()).bind(
            config, entry.name, rerouter, (engines or {}).get(entry.name))
        models[entry.name] = (rerouter, generator)
    rerouters = {name: rerouter for name, (rerouter, _) in models.items()}
    placed = actor_options(config.indexes.num_cpus, 0.0, config.indexes.resources)
    indexes = IndexManager.options(ray_actor_options=placed, **SHUTDOWN).bind(config, rerouters)
    return Ingress.options(**config.ingress.ray_options(), **SHUTDOWN).bind(config, models, indexes)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve run` / `serve deploy` (see deploy/serve.yaml).

    `args` may name a YAML file in `config_path`; every other key overrides that file's top level.
    """
    args = dict(args)
    path = args.pop("config_path", None)
    config = ServerConfig.from_yaml(path, **args) if path else ServerConfig.model_validate(args)
    return build_app(config)
