"""The config's deployment sections: replicas (or autoscaling), CPUs, GPUs and placement of each Ray Serve deployment,
and the re-router's batching and device."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from serving.config.base import Strict


class Autoscaling(Strict):
    """Ray Serve autoscaling bounds; when set, it replaces a fixed replica count.

    The delays are Serve's own defaults: a replica is added after the load stayed above the target for
    `upscale_delay_s`, and removed after it stayed below for `downscale_delay_s`.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas must not exceed max_replicas")
        return self


# Custom resources a deployment's replicas need, e.g. {"r2t2_rerouters": 1}: on a cluster whose nodes offer them
# (`ray start --resources`), they pin the deployment to those nodes (deploy/local-cluster.sh labels its nodes so).
Resources = dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")], Annotated[float, Field(gt=0)]]


class DeploymentOptions(Strict):
    """Scale, resources and placement of one Ray Serve deployment."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(16, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: Resources = Field(default_factory=dict)
    # At most this many replicas on one node (None: no limit): 1 spreads replicas over nodes, so losing a
    # node loses one replica of the deployment, not all of them.
    max_replicas_per_node: int | None = Field(None, ge=1)

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        scale: dict[str, Any] = (
            {"autoscaling_config": self.autoscaling.model_dump()}
            if self.autoscaling is not None
            else {"num_replicas": self.num_replicas}
        )
        spread = {} if self.max_replicas_per_node is None else {"max_replicas_per_node": self.max_replicas_per_node}
        return {
            **scale,
            **spread,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": actor_options(self.num_cpus, self.num_gpus, self.resources),
        }


def actor_options(num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, Any]:
    """`ray_actor_options` of a deployment: its CPUs, GPUs and custom resources (left out when none)."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, **({"resources": dict(resources)} if resources else {})}


class ReRouterOptions(DeploymentOptions):
    """A re-router's deployment, its request batching and the device its model runs on.

    Concurrent requests are re-routed in batches (serving/deployments/batcher.py): a lone request starts at once,
    and under load everything that queued while a batch ran forms the next one, up to
    `max_batch_size` (1 turns batching off). `device` places the model, its batches, neighbour tensors
    and optimiser state: "cpu", or "cuda"/"cuda:N" with `num_gpus` > 0 so Ray grants the replica a GPU.
    """

    max_ongoing_requests: int = Field(64, ge=1)
    max_batch_size: int = Field(16, ge=1, le=256)
    batch_wait_s: float = Field(0.0, ge=0, le=1.0)  # hold a batch open this long for stragglers
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    dtype: Literal["float32", "bfloat16"] = "float32"  # the model's weights; routing and losses stay float32

    @model_validator(mode="after")
    def _gpu_for_cuda(self) -> "ReRouterOptions":
        if self.device.startswith("cuda") and self.num_gpus <= 0:
            raise ValueError(f"rerouter.device {self.device!r} needs rerouter.num_gpus > 0 (a GPU granted by Ray)")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"rerouter.max_ongoing_requests ({self.max_ongoing_requests}) must be at least "
                             f"max_batch_size ({self.max_batch_size}), or batches can never fill")
        return self
