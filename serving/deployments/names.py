"""Deployment names: per model, so that a replica can find its model's other deployments by name."""


def deployment_name(kind: str, model: str) -> str:
    """Deployments are per model, so their names carry the model id (unique by config validation)."""
    return f"{kind}-{model}"
