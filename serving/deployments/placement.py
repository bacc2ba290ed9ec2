"""Where the replicas run: the Ray node of every replica of an application.

The facts are Serve's own (the replica table behind its REST API, `ServeInstanceDetails`), read from the Serve
controller directly so that they are there without Ray's dashboard, which r2t2 leaves off; the nodes' names and
custom resources come from Ray's node table. `deploy/local-cluster.sh` names its nodes head, rerouters and
generators; a node started without a name is named by its IP address.
"""
from __future__ import annotations

from typing import Any

R2T2_RESOURCE_PREFIX = "r2t2_"  # custom resources that pin deployments to nodes (DeploymentOptions.resources)


def nodes() -> dict[str, dict[str, Any]]:
    """Node id -> {name, ip, alive, resources (the r2t2_* ones)} for every node Ray knows, dead ones included."""
    import ray

    table = {}
    for node in ray.nodes():
        resources = {key: value for key, value in node.get("Resources", {}).items()
                     if key.startswith(R2T2_RESOURCE_PREFIX)}
        table[node["NodeID"]] = {"node_id": node["NodeID"], "name": node.get("NodeName") or node["NodeManagerAddress"],
                                 "ip": node["NodeManagerAddress"], "alive": bool(node["Alive"]),
                                 "resources": resources}
    return table


def controller() -> Any:
    """The Serve controller actor of this Ray cluster."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def placement(details: dict[str, Any], app: str, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"nodes": [...], "deployments": {deployment: [replica, ...]}} of one application.

    `details` is the controller's `get_serve_instance_details()`; `table` is `nodes()`. Each replica gives its
    id, state, pid and the node it runs on (id, name, IP).
    """
    from ray.serve.schema import ServeInstanceDetails

    application = ServeInstanceDetails.model_validate(details).applications.get(app)
    deployments: dict[str, list[dict[str, Any]]] = {}
    for name, deployment in sorted((application.deployments if application else {}).items()):
        deployments[name] = [
            {"replica": replica.replica_id, "state": str(replica.state.value), "pid": replica.pid,
             "node_id": replica.node_id, "node": table.get(replica.node_id or "", {}).get("name"),
             "node_ip": replica.node_ip}
            for replica in sorted(deployment.replicas, key=lambda replica: replica.replica_id)]
    return {"nodes": sorted(table.values(), key=lambda node: (not node["alive"], node["name"])),
            "deployments": deployments}


def current_placement(app: str) -> dict[str, Any]:
    """`placement` of `app` now (blocking: call from a driver or a thread)."""
    import ray

    return placement(ray.get(controller().get_serve_instance_details.remote()), app, nodes())


def placement_lines(found: dict[str, Any]) -> list[str]:
    """One line per replica for the start-up log: which node it runs on."""
    return [f"r2t2 replica {deployment}#{replica['replica']} ({replica['state'].lower()}) on node {replica['node']} "
            f"({replica['node_ip']}, id {(replica['node_id'] or '?')[:12]})"
            for deployment, replicas in found["deployments"].items() for replica in replicas]


def this_replica() -> dict[str, str]:
    """{"replica", "node"} of the replica calling it: its Serve replica id and the name of its Ray node."""
    import ray
    from ray import serve

    node_id = ray.get_runtime_context().get_node_id()
    node = nodes().get(node_id, {}).get("name", node_id)
    return {"replica": serve.get_replica_context().replica_id.unique_id, "node": node}
