"""Assemble the Ray Serve application: Ingress -> ReRouter -> Generator, and Ingress -> IndexManager."""
from __future__ import annotations

from typing import Any

from ray.serve import Application

from serving.config import ServerConfig
from serving.generator import Generator
from serving.index_manager import IndexManager
from serving.ingress import Ingress
from serving.rerouter import ReRouter


def build_app(config: ServerConfig) -> Application:
    """The deployments, each sized by its own section of the config (the index manager is one replica)."""
    rerouter = ReRouter.options(**config.rerouter.ray_options()).bind(config)
    generator = Generator.options(**config.generator.ray_options()).bind(config, rerouter)
    indexes = IndexManager.options(ray_actor_options={"num_cpus": config.indexes.num_cpus}).bind(config)
    return Ingress.options(**config.ingress.ray_options()).bind(config, rerouter, generator, indexes)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve run` / `serve deploy` (see deploy/serve.yaml).

    `args` may name a YAML file in `config_path`; every other key overrides that file's top level.
    """
    args = dict(args)
    path = args.pop("config_path", None)
    config = ServerConfig.from_yaml(path, **args) if path else ServerConfig.model_validate(args)
    return build_app(config)
