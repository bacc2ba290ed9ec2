"""The server's health verdict: can every model answer, and which parts are below strength.

A load balancer drops a server that answers 503, so 503 must mean "a model cannot answer", not "a replica of a
spread deployment was lost while the others serve". Each component's verdict joins two facts: its own health
call (a handle call lands on one replica, which may be the lost one) and Serve's replica table (how many of the
replicas it wants are running; the table lags a loss by a few seconds, so a replica it still counts as running
may be the one whose call just failed).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serving.deployments.placement import controller

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

TIMEOUT_S = 0.8  # /healthz answers within a second even while a replica restarts


@dataclass(frozen=True)
class Strength:
    """A deployment's running replicas against the number Serve wants."""

    running: int
    target: int


@dataclass
class Health:
    """The verdict: components that cannot answer (`down`) and those that answer below strength (`degraded`)."""

    down: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)


def strengths(details: dict[str, Any], app: str) -> dict[str, Strength]:
    """Deployment name -> its Strength, from the Serve controller's `get_serve_instance_details()`."""
    from ray.serve.schema import ServeInstanceDetails

    application = ServeInstanceDetails.model_validate(details).applications.get(app)
    found = {}
    for name, deployment in (application.deployments if application else {}).items():
        running = sum(1 for replica in deployment.replicas if str(replica.state.value) == "RUNNING")
        found[name] = Strength(running, deployment.target_num_replicas)
    return found


def health(problems: dict[str, str | None], deployments: dict[str, str],
           known: dict[str, Strength] | None) -> Health:
    """Join each component's health-call problem (None: it answered) with its deployment's strength.

    `deployments` maps a component to its deployment's name; `known` is None when Serve's table could not be
    read in time, and then only the health calls count.
    """
    verdict = Health()
    for component, problem in problems.items():
        strength = None if known is None else known.get(deployments[component])
        if strength is None:
            if problem:
                verdict.down.append(f"{component}: {problem}")
            continue
        # A failed call may have landed on a replica the table still counts as running: discount it.
        answering = strength.running - 1 if problem else max(strength.running, 1)
        counted = f"{strength.running} of {strength.target} replicas running"
        if answering < 1:
            verdict.down.append(f"{component}: {problem or 'no replica running'} ({counted})")
        elif problem or strength.running < strength.target:
            cause = f"{problem}; " if problem else ""
            verdict.degraded.append(f"{component}: {cause}{counted}")
    return verdict


async def health_of(components: dict[str, DeploymentHandle], app: str) -> Health:
    """The verdict on `app`'s components (name -> handle), from their health calls and Serve's replica table,
    both asked at once, each with a timeout."""
    problems, known = await asyncio.gather(asyncio.gather(*(_problem(handle) for handle in components.values())),
                                           _strengths(app))
    deployments = {component: handle.deployment_name for component, handle in components.items()}
    return health(dict(zip(components, problems)), deployments, known)


async def _problem(handle: DeploymentHandle) -> str | None:
    """None when the component's check_health answers in time, else what went wrong."""
    try:
        await asyncio.wait_for(handle.check_health.remote(), TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {TIMEOUT_S} s (starting or restarting)"
    except Exception as err:  # noqa: BLE001 (any failure means unhealthy)
        return type(err).__name__
    return None


async def _strengths(app: str) -> dict[str, Strength] | None:
    """Serve's replica table for `app`; None if the controller did not answer in time (the health calls alone
    then decide)."""
    try:
        details = await asyncio.wait_for(controller().get_serve_instance_details.remote(), TIMEOUT_S)
    except Exception:  # noqa: BLE001 (a slow or lost controller must not make /healthz fail)
        return None
    return strengths(details, app)
