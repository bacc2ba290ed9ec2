#!/usr/bin/env bash
# A Ray head and two worker nodes on this machine, on loopback: `deploy/local-cluster.sh up|status|down`.
# What each node is and how `down` finds every process it started: deploy/local_cluster.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
exec "$root/.venv/bin/python" -m deploy.local_cluster "$@"
