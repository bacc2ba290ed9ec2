"""The deployment files parse, satisfy Ray's schema, and build the app they name."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

import r2t2  # noqa: F401
from serving.app import app_builder
from serving.config import ServerConfig

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _serve_configs() -> list[dict]:
    rayservice = next(d for d in yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()) if d["kind"] == "RayService")
    return [yaml.safe_load((DEPLOY / "serve.yaml").read_text()), yaml.safe_load(rayservice["spec"]["serveConfigV2"])]


@pytest.mark.parametrize("serve_config", _serve_configs(), ids=["serve.yaml", "rayservice.yaml"])
def test_serve_configs_are_valid_and_build(serve_config: dict) -> None:
    ServeDeploySchema.model_validate(serve_config)
    (app,) = serve_config["applications"]
    assert app["import_path"] == "serving.app:app_builder"
    ServerConfig.model_validate(app["args"])
    assert app_builder(app["args"]) is not None


def test_container_config_and_config_path_argument() -> None:
    path = DEPLOY / "container.yaml"
    assert ServerConfig.from_yaml(path).index_dir == "/data/indexes"
    assert app_builder({"config_path": str(path), "backend": "torch"}) is not None


def test_two_models_config_serves_both_families_on_two_cores() -> None:
    config = ServerConfig.from_yaml(DEPLOY / "two-models.yaml")
    assert [(m.name, m.pipeline["checkpoint"]) for m in config.models] == [
        ("r2t2-embedded", "embedded"), ("r2t2-quartet", "quartet")]
    cpus = config.ingress.num_cpus + config.indexes.num_cpus + sum(
        config.rerouter_options(m).num_cpus + config.generator_options(m).num_cpus for m in config.models)
    assert cpus <= 2 and all(config.vllm_options(m).kv_cache_gib == 1 for m in config.models)
    assert app_builder({"config_path": str(DEPLOY / "two-models.yaml")}) is not None


def test_three_models_config_adds_the_qwen3vl_family_on_two_cores() -> None:
    config = ServerConfig.from_yaml(DEPLOY / "three-models.yaml")
    assert [(m.name, m.pipeline["checkpoint"]) for m in config.models] == [
        ("r2t2-embedded", "embedded"), ("r2t2-quartet", "quartet"), ("r2t2-qwen3vl", "qwen3vl")]
    cpus = config.ingress.num_cpus + config.indexes.num_cpus + sum(
        config.rerouter_options(m).num_cpus + config.generator_options(m).num_cpus for m in config.models)
    assert cpus <= 2 and all(config.vllm_options(m).enforce_eager for m in config.models)  # LM routing needs eager
    assert app_builder({"config_path": str(DEPLOY / "three-models.yaml")}) is not None


def test_rayservice_puts_generators_on_gpus() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    args = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    config = ServerConfig.model_validate(args)
    assert [config.generator_options(m).num_gpus for m in config.models] == [1, 0.5]  # a GPU each, or a shared one
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    assert any(d["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in d["spec"]["accessModes"] for d in docs)
