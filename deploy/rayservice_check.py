"""Check a RayService manifest as KubeRay and r2t2 would read it, without a Kubernetes cluster.

    .venv/bin/python -m deploy.rayservice_check [deploy/rayservice.yaml]

- The RayService against KubeRay's own schema (its CRD's OpenAPI schema, vendored in deploy/kuberay/ with its
  source and version), strictly: a field the schema does not define is an error, as with kubectl's default
  (strict) field validation, except where the schema itself keeps unknown fields.
- Its `serveConfigV2` against Ray Serve's schema (`ServeDeploySchema`), and each application's `args` against
  r2t2's `ServerConfig`, so a misspelt r2t2 setting fails here and not when the cluster starts.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
SCHEMA = DEPLOY / "kuberay" / "rayservice-v1.7.0.schema.json"
KUBERAY_VERSION = "1.7.0"


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused wherever it lists an object's properties and keeps no others."""
    schema = copy.deepcopy(schema)
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return schema


def kuberay_problems(service: dict[str, Any]) -> list[str]:
    """'path: message' for each way the RayService breaks KubeRay's schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(strict(json.loads(SCHEMA.read_text())))
    return [f"{'.'.join(str(part) for part in error.absolute_path) or '(top level)'}: {error.message}"
            for error in sorted(validator.iter_errors(service), key=lambda error: list(error.absolute_path))]


def serve_config_problems(text: str) -> list[str]:
    """Problems of a `serveConfigV2`: Ray Serve's schema (which would ignore a misspelt key: here it is an
    error), then each application's args as r2t2's ServerConfig."""
    from pydantic import ValidationError
    from ray.serve.schema import HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema

    from serving.config import ServerConfig

    try:
        data = yaml.safe_load(text)
        deploy = ServeDeploySchema.model_validate(data)
    except (yaml.YAMLError, ValidationError) as err:
        return [f"serveConfigV2: {' '.join(str(err).split())}"]
    problems = _unknown_keys(data, ServeDeploySchema, "") + _unknown_keys(
        data.get("http_options") or {}, HTTPOptionsSchema, "http_options.")
    for number, application in enumerate(data["applications"]):
        problems += _unknown_keys(application, ServeApplicationSchema, f"applications.{number}.")
    for application in deploy.applications:
        if application.import_path != "serving.deployments.app:app_builder":
            problems.append(f"serveConfigV2: application {application.name} imports {application.import_path}, "
                            "not r2t2's serving.deployments.app:app_builder")
            continue
        try:
            ServerConfig.model_validate(application.args or {})
        except ValidationError as err:
            for problem in err.errors(include_url=False):
                field = ".".join(str(part) for part in problem["loc"])
                problems.append(f"serveConfigV2: application {application.name}: args.{field}: {problem['msg']}")
    return problems


def _unknown_keys(data: dict[str, Any], model: Any, where: str) -> list[str]:
    known = set(model.model_fields) | {field.alias for field in model.model_fields.values() if field.alias}
    return [f"serveConfigV2: {where}{key}: not a field of Ray Serve's {model.__name__}" for key in data
            if key not in known]


def manifest_problems(path: Path) -> list[str]:
    """Every problem of the RayService documents in a manifest file; [] when KubeRay and r2t2 accept it."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    services = [d for d in documents if d.get("kind") == "RayService"]
    if not services:
        return [f"{path}: no RayService in it"]
    problems = []
    for service in services:
        problems += [f"RayService: {problem}" for problem in kuberay_problems(service)]
        problems += serve_config_problems(service.get("spec", {}).get("serveConfigV2", ""))
    return problems


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEPLOY / "rayservice.yaml"
    problems = manifest_problems(path)
    for problem in problems:
        print(f"{path}: {problem}")
    if problems:
        raise SystemExit(1)
    print(f"{path}: a valid RayService for KubeRay {KUBERAY_VERSION}, serving a valid r2t2 ServerConfig")


if __name__ == "__main__":
    main()
