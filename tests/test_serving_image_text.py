"""The Qwen3-VL-MoE family served by the real Ray Serve app and vLLM: its engine is fed the chat text and the
image through vLLM's own multimodal processor, and a re-routed request's LM rows are applied inside vLLM,
which answers as the transformers path does under the same rows.

Its own small server (one model, a 300-reference index), up for this module only: the session's shared
server serves the two composed families, whose tests assume vision rows.
"""
from __future__ import annotations

import base64
import io
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import torch
from PIL import Image

if TYPE_CHECKING:
    from conftest import Cases

pytestmark = pytest.mark.slow
MODEL = "r2t2-qwen3vl"
KERNEL = {"strategy": "kernel", "guard": False, "answer_check": False}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    from indexes.embedders import MiniLMEmbedder
    from indexes.specs import build_from_spec
    from indexes.store import IndexStore
    from r2t2.model import load_model
    from serving.config import ServerConfig
    from serving.run import deploy

    index_dir = tmp_path_factory.mktemp("indexes")
    build_from_spec("qwen3vl", {"source": "builtin", "split": "reference", "limit": 300}, load_model("qwen3vl"),
                    MiniLMEmbedder(), IndexStore(index_dir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    small = {"num_cpus": 0.1, "max_ongoing_requests": 32}
    config = ServerConfig.model_validate({
        "backend": "vllm", "vllm": {"kv_cache_gib": 1, "dtype": "float32"}, "index_dir": str(index_dir),
        "models": [{"name": MODEL, "pipeline": {"checkpoint": "qwen3vl"}}],
        "ingress": small, "rerouter": small, "generator": small, "indexes": {"num_cpus": 0.1}})
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(config, name="qwen3vl", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_kernel_rerouting_moves_the_lm_experts_inside_vllm_as_transformers_does(served: str,
                                                                               easy_vqa_cases: Cases) -> None:
    import openai

    from r2t2.model import load_model

    client = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0, timeout=300)
    (card,) = client.models.list().data
    assert card.model_extra["lm_routing"] is True and card.model_extra["r2t2_defaults"]["target"] == "lm"
    model = load_model("qwen3vl")
    experts = model.routing_layout.rows[0].experts
    moved = 0
    for question, _, url in easy_vqa_cases(8):
        reply = client.chat.completions.create(
            model=MODEL, max_tokens=2, temperature=0, extra_body={"r2t2": KERNEL},
            messages=[{"role": "user", "content": [{"type": "text", "text": question},
                                                   {"type": "image_url", "image_url": {"url": url}}]}])
        record = reply.model_extra["r2t2"]
        assert record["strategy"] == "kernel" and len(record["neighbours"]) == 5
        if not record["lm_routing"]["applied"]:  # the line search kept the router's routing
            assert all(layer["engine_experts"] is None for layer in record["lm_routing"]["layers"])
            continue
        moved += 1
        rows = torch.zeros(model.routing_shape)
        for i, layer in enumerate(record["lm_routing"]["layers"]):
            assert layer["engine_experts"] == [entry["expert"] for entry in layer["routing"][:2]]  # its top-2
            assert layer["engine_tokens"] >= 1
            for entry in layer["routing"]:
                rows[i, experts.index(entry["expert"])] = entry["weight"]
        query = model.encode_query(_image(url), question).batch
        expected = model.answer(query, rows, pinned=(True,) * len(rows))[0]
        assert reply.choices[0].message.content.strip() == expected
    assert moved >= 2


def test_a_question_without_an_image_is_answered_by_vllm_as_by_transformers(served: str) -> None:
    import openai

    from serving.pipeline.record import NO_IMAGE
    from r2t2.model import load_model

    client = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0, timeout=300)
    question = "what color is the shape?"
    reply = client.chat.completions.create(model=MODEL, max_tokens=2, temperature=0, extra_body={"r2t2": KERNEL},
                                           messages=[{"role": "user", "content": question}])
    record = reply.model_extra["r2t2"]
    assert (record["strategy"], record["fallback"], record["lm_routing"], record["neighbours"]) == \
        ("none", NO_IMAGE, None, [])
    model = load_model("qwen3vl")
    prompt = model.question_prompt(question)
    assert reply.usage.prompt_tokens == prompt.tokens
    inputs = model.processor(text=[prompt.text], return_tensors="pt")
    output = model.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    expected = model.processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    assert reply.choices[0].message.content.strip() == expected.strip() != ""
