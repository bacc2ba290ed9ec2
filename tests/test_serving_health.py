"""The /healthz verdict: 503 only when a model cannot answer; a part below strength is named, with a 200."""
from __future__ import annotations

from serving.deployments.health import Strength, health

DEPLOYMENTS = {"m re-router": "ReRouter-m", "m generator": "Generator-m", "index manager": "IndexManager"}
FULL = {"ReRouter-m": Strength(2, 2), "Generator-m": Strength(1, 1), "IndexManager": Strength(1, 1)}
ALL_ANSWER = {"m re-router": None, "m generator": None, "index manager": None}


def test_every_part_at_strength_is_healthy() -> None:
    verdict = health(ALL_ANSWER, DEPLOYMENTS, FULL)
    assert verdict.down == [] and verdict.degraded == []


def test_a_lost_replica_of_a_spread_deployment_is_degraded_not_down() -> None:
    # The call landed on the lost replica, which Serve's table still counts as running.
    verdict = health(ALL_ANSWER | {"m re-router": "ActorDiedError"}, DEPLOYMENTS, FULL)
    assert verdict.down == []
    assert verdict.degraded == ["m re-router: ActorDiedError; 2 of 2 replicas running"]
    # Once the table knows, a call that landed on the survivor still names the missing replica.
    verdict = health(ALL_ANSWER, DEPLOYMENTS, FULL | {"ReRouter-m": Strength(1, 2)})
    assert verdict.down == [] and verdict.degraded == ["m re-router: 1 of 2 replicas running"]


def test_a_single_replica_that_fails_its_call_is_down() -> None:
    verdict = health(ALL_ANSWER | {"m generator": "no answer within 0.8 s"}, DEPLOYMENTS, FULL)
    assert verdict.down == ["m generator: no answer within 0.8 s (1 of 1 replicas running)"]
    restarting = health(ALL_ANSWER | {"m generator": "RayActorError"}, DEPLOYMENTS,
                        FULL | {"Generator-m": Strength(0, 1)})
    assert restarting.down == ["m generator: RayActorError (0 of 1 replicas running)"]


def test_without_serves_table_the_health_calls_decide() -> None:
    assert health(ALL_ANSWER, DEPLOYMENTS, None).down == []
    verdict = health(ALL_ANSWER | {"index manager": "TimeoutError"}, DEPLOYMENTS, None)
    assert verdict.down == ["index manager: TimeoutError"] and verdict.degraded == []
