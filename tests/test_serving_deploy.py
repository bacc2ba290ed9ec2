"""The deployment files parse, satisfy Ray's (and KubeRay's) schemas, and build the app they name."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deploy.rayservice_check import kuberay_problems, manifest_problems, serve_config_problems
from serving.deployments.app import app_builder
from serving.config import ServerConfig

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _serve_configs() -> list[dict]:
    rayservice = next(d for d in yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()) if d["kind"] == "RayService")
    return [yaml.safe_load((DEPLOY / "serve.yaml").read_text()), yaml.safe_load(rayservice["spec"]["serveConfigV2"])]


@pytest.mark.parametrize("serve_config", _serve_configs(), ids=["serve.yaml", "rayservice.yaml"])
def test_serve_configs_are_valid_and_build(serve_config: dict) -> None:
    ServeDeploySchema.model_validate(serve_config)
    (app,) = serve_config["applications"]
    assert app["import_path"] == "serving.deployments.app:app_builder"
    ServerConfig.model_validate(app["args"])
    assert app_builder(app["args"]) is not None


def test_local_cluster_config_pins_each_deployment_to_its_node() -> None:
    from deploy.local_cluster import ROLES

    config = ServerConfig.from_yaml(DEPLOY / "local-cluster.yaml")
    [entry] = config.models
    pins = {"ingress": config.ingress.resources, "indexes": config.indexes.resources,
            "rerouter": config.rerouter_options(entry).resources,
            "generator": config.generator_options(entry).resources}
    assert pins == {"ingress": {"r2t2_head": 1}, "indexes": {"r2t2_head": 1}, "rerouter": {"r2t2_rerouters": 1},
                    "generator": {"r2t2_generators": 1}}
    offered = {resource for resources in ROLES.values() for resource in resources}  # by the cluster's nodes
    assert all(set(resources) <= offered for resources in pins.values())
    options = config.rerouter_options(entry).ray_options()
    assert options["ray_actor_options"] == {"num_cpus": 0.1, "num_gpus": 0.0, "resources": {"r2t2_rerouters": 1}}
    assert app_builder({"config_path": str(DEPLOY / "local-cluster.yaml")}) is not None


def test_spreading_pinning_and_autoscaling_reach_serve_as_serve_takes_them() -> None:
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    from serving.config import DeploymentOptions

    spread = DeploymentOptions(num_replicas=2, max_replicas_per_node=1, resources={"r2t2_worker": 1}).ray_options()
    assert spread["max_replicas_per_node"] == 1 and spread["ray_actor_options"]["resources"] == {"r2t2_worker": 1}
    assert "max_replicas_per_node" not in DeploymentOptions().ray_options()
    scaled = DeploymentOptions(autoscaling={"max_replicas": 3, "upscale_delay_s": 5, "downscale_delay_s": 30})
    assert AutoscalingConfig(**scaled.ray_options()["autoscaling_config"]).downscale_delay_s == 30
    for bad in ({"resources": {"r2t2 head": 1}}, {"resources": {"r2t2_head": 0}}, {"max_replicas_per_node": 0}):
        with pytest.raises(ValidationError):
            DeploymentOptions(**bad)


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
    assert cpus <= 2 and all(config.vllm_options(m).enforce_eager for m in config.models)  # no compile on 2 cores
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


def _rayservice() -> dict:
    return next(d for d in yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()) if d["kind"] == "RayService")


def test_rayservice_satisfies_kuberays_schema_and_r2t2s_config() -> None:
    assert manifest_problems(DEPLOY / "rayservice.yaml") == []


def _workers(service: dict) -> list:
    return service["spec"]["rayClusterConfig"]["workerGroupSpecs"]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: _workers(s)[0].update(replica=1), "workerGroupSpecs.0: Additional properties are not allowed"),
    (lambda s: _workers(s)[1].update(replicas="two"), "workerGroupSpecs.1.replicas: 'two' is not of type 'integer'"),
    (lambda s: s["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "rayStartParams.num-cpus: 0 is not of type 'string'"),
    (lambda s: s["spec"].update(serveConfig="{}"), "spec: Additional properties are not allowed ('serveConfig'"),
], ids=["misspelt field", "wrong type", "number where KubeRay wants a string", "unknown spec field"])
def test_a_wrong_field_in_the_rayservice_fails_kuberays_schema(change, expected: str) -> None:  # noqa: ANN001
    service = _rayservice()
    assert kuberay_problems(service) == []
    change(service)
    assert any(expected in problem for problem in kuberay_problems(service)), kuberay_problems(service)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("num_gpus: 0.25", "num_gpu: 0.25", "args.rerouter.num_gpu: Extra inputs are not permitted"),
    ("device: cuda ", "device: tpu ", "args.rerouter.device: String should match pattern"),
    ("proxy_location:", "proxy_locations:", "proxy_locations: not a field of Ray Serve's ServeDeploySchema"),
    ("route_prefix:", "route_prefx:", "applications.0.route_prefx: not a field of Ray Serve's"),
], ids=["misspelt r2t2 setting", "bad r2t2 value", "misspelt Serve key", "misspelt application key"])
def test_a_wrong_field_in_serve_config_v2_fails_the_check(old: str, new: str, expected: str) -> None:
    text = _rayservice()["spec"]["serveConfigV2"]
    assert old in text and serve_config_problems(text) == []
    problems = serve_config_problems(text.replace(old, new, 1))
    assert any(expected in problem for problem in problems), problems


def test_skeleton_config_serves_the_tail_on_two_cores() -> None:
    """The real-widths skeleton's config: its re-router holds only the language model's tail (the app is built
    here, not started: starting it writes the 6 GB skeleton, which the benchmark does)."""
    config = ServerConfig.from_yaml(DEPLOY / "qwen3vl-a3b-skeleton.yaml")
    (model,) = config.models
    assert model.pipeline == {"checkpoint": "qwen3vl-a3b-skeleton-L4", "weights": "tail"}
    assert config.rerouter_options(model).dtype == "bfloat16" and config.backend == "vllm"
    cpus = config.ingress.num_cpus + config.indexes.num_cpus + config.rerouter_options(model).num_cpus \
        + config.generator_options(model).num_cpus
    assert cpus <= 2
    assert app_builder({"config_path": str(DEPLOY / "qwen3vl-a3b-skeleton.yaml")}) is not None
