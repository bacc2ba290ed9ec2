"""Server configuration: one validated object, built from defaults, a YAML file and the environment.

Every deployment receives the same `ServerConfig`, so limits and defaults cannot drift between the ingress, the
re-router and the generator. One module per group of sections: deployments.py (replicas, resources, the
re-router's batching), limits.py (images, the vLLM engine, generation defaults), indexes.py (hot swap, rebuilds,
verified answers), models.py (the served models), server.py (the whole config and its loading).
"""
from serving.config.deployments import Autoscaling, DeploymentOptions, ReRouterOptions, Resources, actor_options
from serving.config.indexes import FeedbackOptions, IndexOptions
from serving.config.limits import GenerationDefaults, ImageLimits, VllmOptions
from serving.config.models import DEFAULT_FACTORY, EMBEDDED_DEFAULT, MODEL_NAME_PATTERN, ModelEntry
from serving.config.server import ADMIN_TOKEN_ENV, FEEDBACK_TOKEN_ENV, ConfigFileError, ServerConfig

__all__ = ["ADMIN_TOKEN_ENV", "DEFAULT_FACTORY", "EMBEDDED_DEFAULT", "FEEDBACK_TOKEN_ENV", "MODEL_NAME_PATTERN",
           "Autoscaling", "ConfigFileError", "DeploymentOptions", "FeedbackOptions", "GenerationDefaults",
           "ImageLimits", "IndexOptions", "ModelEntry", "ReRouterOptions", "Resources", "ServerConfig",
           "VllmOptions", "actor_options"]
