"""Shared fixtures for the serving tests."""
from __future__ import annotations

import base64
import functools
import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.lifecycle.child_env import CHILD_SITE, prepare_server_process

TINY_WORDS = [f"w{i}" for i in range(60)]
REAL_SERVER = "real_server"
Cases = Callable[[int], list[tuple[str, str, str]]]  # n -> (question, answer, PNG data URL) of easy-VQA test


def pytest_configure(config: pytest.Config) -> None:
    """The suite is an entry point like `r2t2 serve`: the torchvision fix, in this process before any test module
    imports open_clip or transformers, and in every interpreter a test starts (Ray's workers, vLLM's engine core,
    servers and commands run as subprocesses)."""
    prepare_server_process()


def without_child_site() -> dict[str, str]:
    """This process's environment less the child site `pytest_configure` put on PYTHONPATH: an interpreter started
    with it is as fresh as one a user starts, with no torchvision fix unless it applies one."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(CHILD_SITE)]
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    return {**env, "PYTHONPATH": os.pathsep.join(paths)} if paths else env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the shared real server run last: its Ray cluster lives until the session ends, so it must
    start after every other test module has shut its own cluster down."""
    items.sort(key=lambda item: REAL_SERVER in getattr(item, "fixturenames", ()))


EMBEDDED, QUARTET = "r2t2-embedded", "r2t2-quartet"  # the served ids of the two shipped families


def quartet_shipped() -> bool:
    """Whether the second shipped family's checkpoint exists yet (tests that need it skip until then)."""
    from r2t2.model import shipped_families

    return "quartet" in shipped_families()


@dataclass(frozen=True)
class RealServer:
    base: str  # the vLLM app (every served model); the torch-backend app (embedded only) is under base + "/torch"
    model: str  # the embedded model's id, which every single-model test uses
    models: tuple[str, ...]  # every model the vLLM app serves, in config order
    admin_token: str
    feedback_token: str  # a feedback token named "labeller" (the vLLM app takes verified answers)
    data_dir: Path  # where JSONL rebuild specs may point
    index_dir: Path  # the store every model shares
    refresh_interval_s: float


JOB_TIMEOUT_S = 600


def wait_for_job(server: RealServer, job_id: str) -> dict:
    """Poll an index job until it succeeds or fails."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.base}/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S}s")


def param_hash(model) -> str:  # noqa: ANN001 (any torch module)
    """Hash of every parameter and buffer: equal before and after means nothing was modified."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The real shipped models served by vLLM at / (embedded, and quartet once it ships) and the embedded one by
    the torch backend at /torch, started once per session.

    Indexes live in a temporary directory, so rebuilds and deletions never touch a developer's indexes.
    """
    import ray
    from ray import serve

    from indexes.embedders import MiniLMEmbedder
    from indexes.specs import build_from_spec
    from indexes.store import IndexStore
    from r2t2.model import load_model
    from serving.pipeline.factory import DEFAULT_INDEX_SPEC
    from serving.config import ServerConfig
    from serving.run import deploy

    families = ["embedded", "quartet"] if quartet_shipped() else ["embedded"]
    index_dir, data_dir = tmp_path_factory.mktemp("indexes"), tmp_path_factory.mktemp("data")
    # Each family's default index (named after it), built once here rather than by the apps' re-routers at
    # start-up. The embedded one is built as `make serve` builds it (about 30 s), so the documents' example
    # outputs (tests/test_docs_examples.py) are what a user sees; the quartet's from 1000 reference samples.
    for family in families:
        small = {"source": "builtin", "split": "reference", "limit": 1000}
        spec = DEFAULT_INDEX_SPEC if family == "embedded" else small
        build_from_spec(family, spec, load_model(family), MiniLMEmbedder(), IndexStore(index_dir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    small = {"num_cpus": 0.1, "max_ongoing_requests": 32}
    token, feedback, interval = "test-admin-token", "test-feedback-token", 1.0

    def config(backend: str, served: list[str]) -> ServerConfig:
        return ServerConfig.model_validate({
            # max_model_len: both shipped LMs have 128 positions (the backends cap the limit there anyway).
            "backend": backend, "max_model_len": 128, "vllm": {"kv_cache_gib": 1, "dtype": "float32"},
            # The torch app runs as a server started without R2T2_ADMIN_TOKEN: its admin calls are off.
            "admin_token": token if backend == "vllm" else None, "index_dir": str(index_dir),
            "feedback_tokens": {"labeller": feedback} if backend == "vllm" else {},
            "models": [{"name": f"r2t2-{family}", "pipeline": {"checkpoint": family}} for family in served],
            "ingress": small, "rerouter": small, "generator": small,
            "indexes": {"refresh_interval_s": interval, "data_dir": str(data_dir), "num_cpus": 0.1},
        })

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(config("vllm", families), name="vllm", route_prefix="/")
        deploy(config("torch", ["embedded"]), name="torch", route_prefix="/torch")
        yield RealServer(f"http://127.0.0.1:{port}", EMBEDDED, tuple(f"r2t2-{f}" for f in families), token, feedback,
                         data_dir, index_dir, interval)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def easy_vqa_cases() -> Cases:
    """`cases(n)`: the first n (question, answer, PNG data URL) of the easy-VQA test split."""
    import easy_vqa

    @functools.cache
    def cases(count: int) -> list[tuple[str, str, str]]:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
        found = []
        for question, answer, image_id in list(zip(questions, answers, image_ids))[:count]:
            with open(paths[image_id], "rb") as handle:
                found.append((question, answer, "data:image/png;base64," + base64.b64encode(handle.read()).decode()))
        return found

    return cases


@pytest.fixture(scope="session")
def tiny_mixtral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Mixtral checkpoint with its own WordLevel tokenizer, in HF format.

    hidden 128, 2 heads of 64 (the CPU attention kernels need head_dim 64), 2 layers, 4 experts
    top-2. A wide initialiser keeps logits far apart, so greedy decoding is not decided by
    rounding noise between engines.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "</s>", *TINY_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="</s>")
    config = MixtralConfig(
        vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=512, initializer_range=0.2,
        eos_token_id=vocab["</s>"], pad_token_id=vocab["[PAD]"], bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MixtralForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny-mixtral")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    GenerationConfig(eos_token_id=vocab["</s>"], pad_token_id=vocab["[PAD]"]).save_pretrained(out)
    return out
