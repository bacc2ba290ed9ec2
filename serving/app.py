"""Assemble the Ray Serve application: Ingress -> ReRouter -> Generator."""
from __future__ import annotations

from typing import Any

from ray.serve import Application

from serving.config import ServerConfig
from serving.generator import Generator
from serving.ingress import Ingress
from serving.rerouter import ReRouter


def build_app(config: ServerConfig) -> Application:
    """The three deployments, each scaled and sized by its own section of the config."""
    rerouter = ReRouter.options(**config.rerouter.ray_options()).bind(config)
    generator = Generator.options(**config.generator.ray_options()).bind(config, rerouter)
    return Ingress.options(**config.ingress.ray_options()).bind(config, rerouter, generator)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve run` / `serve deploy` (see deploy/serve.yaml).

    `args` may name a YAML file in `config_path`; every other key overrides that file's top level.
    """
    args = dict(args)
    path = args.pop("config_path", None)
    config = ServerConfig.from_yaml(path, **args) if path else ServerConfig.model_validate(args)
    return build_app(config)
