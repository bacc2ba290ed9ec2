"""A model class defined in the test suite (tests/adapter_model.py) served through the real Ray Serve app, with a
strategy defined in the test suite too (tests/toy_strategy.py, named in the config's `strategies`).

The model implements only the adapter protocol and the strategy only its registry entry, so this proves the
pipeline, the index builder and the server need nothing more. Generation uses the torch backend to keep this
server cheap; vLLM is covered by the shared real server.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
MODEL = "per-token"
NAME = "halfway"  # tests/toy_strategy.py, which the server imports; this process does not (its registry stays built-in)


@pytest.fixture(scope="module")
def adapter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    from adapter_model import PerTokenRouting
    from indexes.embedders import MiniLMEmbedder
    from indexes.specs import build_from_spec
    from indexes.store import IndexStore
    from r2t2.model import load_model
    from serving.deployments.app import build_app
    from serving.config import ServerConfig

    index_dir = tmp_path_factory.mktemp("adapter-indexes")
    build_from_spec(MODEL, {"source": "builtin", "split": "reference", "limit": 300},
                    PerTokenRouting(load_model("embedded")), MiniLMEmbedder(), IndexStore(index_dir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    small = {"num_cpus": 0.1, "max_ongoing_requests": 8}
    config = ServerConfig.model_validate({
        "backend": "torch", "index_dir": str(index_dir), "ingress": small, "generator": small,
        "rerouter": {**small, "max_batch_size": 8},
        "indexes": {"num_cpus": 0.1}, "strategies": ["toy_strategy"],
        "models": [{"name": MODEL, "pipeline_factory": "adapter_model:load_pipeline",
                    "pipeline": {"build_default_index": False}, "r2t2_defaults": {"lr": 0.2}}],
    })
    # Ray's workers import the factory's and the strategy's modules: they inherit the environment of this process.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config), name="adapter", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_adapter_model_is_listed_answers_and_is_rerouted(adapter_server: str, easy_vqa_cases) -> None:
    models = httpx.get(adapter_server + "/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in models] == [MODEL]
    assert models[0]["routing_shape"] == [4, 3] and models[0]["lm_routing"] is False
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": MODEL, "max_tokens": 4, "r2t2": {"strategy": "ngd", "k": 5},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = httpx.post(adapter_server + "/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    record = reply.json()["r2t2"]
    assert list(record["routing"]) == ["token-1", "token-2", "token-3", "token-4"]
    for row in record["routing"].values():
        assert list(row) == ["vit-rgb32", "resnet-rgb64", "resnet-gray64"]
        assert abs(sum(row.values()) - 1) < 1e-4
    assert len(record["neighbours"]) == 5 and record["index"]["name"] == MODEL
    assert record["routing"] != record["base_routing"]  # NGD moved the rows
    assert reply.json()["choices"][0]["message"]["content"].strip()


def test_a_model_without_lm_rows_refuses_to_reroute_them(adapter_server: str, easy_vqa_cases) -> None:
    card = httpx.get(adapter_server + "/v1/models", timeout=30).json()["data"][0]
    assert card["lm_routing"] is False and {row["kind"] for row in card["routing_rows"]} == {"vision"}
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": MODEL, "max_tokens": 4, "r2t2": {"strategy": "kernel", "target": "lm"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = httpx.post(adapter_server + "/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == ("r2t2.target", "lm_routing_unavailable")
    assert "has no LM routing rows" in error["message"]


def test_a_strategy_registered_by_a_module_of_the_config_is_served(adapter_server: str, easy_vqa_cases) -> None:
    document = httpx.get(adapter_server + "/openapi.json", timeout=30).json()
    offered = document["components"]["schemas"]["R2T2Options"]["properties"]["strategy"]
    assert NAME in offered["anyOf"][0]["enum"] and f"{NAME}: half-way" in offered["description"]
    question, _, url = easy_vqa_cases(1)[0]
    body = {"model": MODEL, "max_tokens": 4, "r2t2": {"strategy": NAME},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = httpx.post(adapter_server + "/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    record = reply.json()["r2t2"]
    assert record["strategy"] == NAME and record["neighbours"] == []
    for name, row in record["routing"].items():
        for expert, weight in row.items():
            assert weight == pytest.approx((record["base_routing"][name][expert] + 1 / len(row)) / 2, abs=1e-5)
    assert record["explanation"].startswith("Half-way moved ")
