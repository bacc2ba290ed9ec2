"""A bad multi-model config is refused at start-up with an error naming the field and file, never a
half-started server: config validation, the driver-side checks (serving.lifecycle.preflight), the registry's
handling of another model's indexes, and one real Serve start-up whose generator cannot load its LM.
"""
from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import pytest

from indexes.build import build_index
from indexes.layout import PAYLOAD_FILE
from indexes.registry import ForeignIndexError, IndexRegistry
from indexes.store import IndexStore
from serving.config import ConfigFileError, ServerConfig
from serving.lifecycle.preflight import StartupError, check_models
from serving.lifecycle.supervisor import SERVER_PROCESS
from serving.run import main
from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(text)
    return path


# --- config -----------------------------------------------------------------------------------------
def test_default_config_serves_the_embedded_family_only() -> None:
    (entry,) = ServerConfig().models
    assert (entry.name, entry.pipeline, entry.pipeline_factory) == (
        "r2t2-embedded", {"checkpoint": "embedded"}, "serving.pipeline.factory:load_pipeline")


def test_per_model_sections_override_the_server_wide_ones(tmp_path: Path) -> None:
    config = ServerConfig.from_yaml(write(tmp_path, (
        "index_dir: /srv/idx\ngenerator: {num_cpus: 0.5}\nvllm: {kv_cache_gib: 2}\nmodels:\n"
        "  - {name: a, pipeline: {checkpoint: embedded}, r2t2_defaults: {strategy: none}}\n"
        "  - {name: b, pipeline: {checkpoint: quartet}, generator: {num_gpus: 0.5}, vllm: {kv_cache_gib: 1}}\n")))
    a, b = config.models
    assert config.pipeline_config(a) == {"checkpoint": "embedded", "model_name": "a", "index_dir": "/srv/idx",
                                         "r2t2": {"strategy": "none"}}
    assert (config.generator_options(a).num_cpus, config.generator_options(b).num_gpus) == (0.5, 0.5)
    assert (config.vllm_options(a).kv_cache_gib, config.vllm_options(b).kv_cache_gib) == (2, 1)
    assert config.rerouter_options(b) == config.rerouter


@pytest.mark.parametrize("text,field,fragment", [
    ("models: [{name: a}, {name: b}, {name: a}]\n", "models", "'a' appears twice"),
    ("models: [{name: a, checkpoint: quartet}]\n", "models.0.checkpoint", "unknown field"),
    ("models: []\n", "models", "at least 1 item"),
    ("models: [{name: 'has space'}]\n", "models.0.name", "should match pattern"),
    ("models: [{name: a, pipeline: {index_dir: /x}}]\n", "models.0", "index_dir (top level)"),
    ("models: [{name: a, pipeline: {model_name: b}}]\n", "models.0", "set name instead"),
    ("pipeline: {checkpoint: embedded}\n", "pipeline", "unknown field"),  # the old single-model shape
])
def test_bad_model_entries_name_file_and_field(tmp_path: Path, text: str, field: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        ServerConfig.from_yaml(path)
    assert str(caught.value).startswith(f"{path}: {field}") and fragment in str(caught.value), str(caught.value)


# --- driver-side checks -------------------------------------------------------------------------------
def test_missing_checkpoint_exits_with_one_line_naming_file_and_entry(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_PROCESS, "1")  # the server process's own checks, here (not in a child)
    path = write(tmp_path, f"index_dir: {tmp_path}\nmodels: [{{name: r2t2-bad, pipeline: {{checkpoint: nope}}}}]\n")
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(path)])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}: models.0 (r2t2-bad): checkpoint: 'nope' is neither"), lines[0]


def test_checkpoint_that_does_not_load_names_its_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "broken"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{not json")
    config = ServerConfig(index_dir=str(tmp_path), models=[{"name": "r2t2-broken",
                                                            "pipeline": {"checkpoint": str(checkpoint)}}])
    with pytest.raises(StartupError) as caught:
        check_models(config)
    assert str(caught.value).startswith(f"models.0 (r2t2-broken): {checkpoint / 'config.json'}: config: not valid JSON")


def test_bad_config_file_exits_with_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "models: [{name: a}, {name: a}]\n")
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(path)])
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: models: each name must be unique, 'a' appears twice"


@pytest.mark.parametrize("text", [None, "models: [a\n"])  # missing file, broken YAML
def test_unreadable_config_file_exits_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    text: str | None) -> None:
    path = tmp_path / "server.yaml" if text is None else write(tmp_path, text)
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(path)])
    error = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and error.startswith(f"error: {path}: ") and "\n" not in error, error


def test_default_index_of_another_model_is_refused(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    build_index("embedded", toy_samples(20), ToyEncoder(), ToyEmbedder(), store, {"toy": 20}, progress=False)
    config = ServerConfig(index_dir=str(tmp_path))  # the embedded family; its default index is "embedded"
    with pytest.raises(StartupError) as caught:
        check_models(config)
    message = str(caught.value)
    assert message.startswith("models.0 (r2t2-embedded): default_index 'embedded'") and "toy-model-1" in message
    assert store.current_version("embedded") == 1  # never overwritten: it may be another served model's


def test_the_same_model_twice_is_refused(tmp_path: Path) -> None:
    entry = {"pipeline": {"checkpoint": "embedded", "build_default_index": False}}
    config = ServerConfig(index_dir=str(tmp_path), models=[{"name": "a", **entry}, {"name": "b", **entry}])
    with pytest.raises(StartupError, match=r"^models.1 \(b\): the same model \(fingerprint \w+\) as models.0 \(a\)"):
        check_models(config)


# --- the registry skips other models' indexes -----------------------------------------------------
def test_registry_skips_other_models_indexes_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = IndexStore(tmp_path)
    build_index("mine", toy_samples(30), ToyEncoder("toy-model-1"), ToyEmbedder(), store, {"n": 30}, progress=False)
    build_index("theirs", toy_samples(30), ToyEncoder("toy-model-2"), ToyEmbedder(), store, {"n": 30}, progress=False)
    payload = store.version_dir("theirs", 1) / PAYLOAD_FILE
    payload.write_bytes(b"")  # if the registry read or verified their files, it would log this corruption
    registry = IndexRegistry(store, expected_fingerprint="toy-model-1", expected_embedder=ToyEmbedder.name)
    with caplog.at_level(logging.INFO, logger="indexes.registry"):
        assert registry.refresh() == {"mine": 1}
        assert registry.refresh() == {}
    assert registry.names() == ["mine"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    with pytest.raises(ForeignIndexError) as caught:
        registry.get("theirs")
    assert caught.value.fingerprint == "toy-model-2" and "another model" in str(caught.value)
    # Rebuilt for this registry's model, the name is served at the next refresh.
    build_index("theirs", toy_samples(25), ToyEncoder("toy-model-1"), ToyEmbedder(), store, {"n": 25}, progress=False)
    assert registry.refresh() == {"theirs": 2}


# --- a real start-up failure ---------------------------------------------------------------------------
@pytest.mark.slow
def test_generator_that_cannot_load_its_lm_fails_start_up(tmp_path: Path) -> None:
    """The checkpoint loads (preflight passes) but names an LM architecture vLLM does not know: `deploy`
    must raise naming the failed generator instead of Serve retrying it forever."""
    import ray
    from ray import serve

    from r2t2.model import resolve_checkpoint
    from serving.run import deploy

    checkpoint = tmp_path / "broken-lm"
    shutil.copytree(resolve_checkpoint("embedded"), checkpoint)
    lm_config = checkpoint / "lm" / "config.json"
    lm_config.write_text(json.dumps({**json.loads(lm_config.read_text()), "architectures": ["NoSuchMoeForCausalLM"]}))
    small = {"num_cpus": 0.1}
    config = ServerConfig.model_validate({
        "index_dir": str(tmp_path / "indexes"), "ingress": small, "rerouter": small, "generator": small,
        "indexes": {"num_cpus": 0.1}, "vllm": {"kv_cache_gib": 1},
        "models": [{"name": "r2t2-broken", "pipeline": {"checkpoint": str(checkpoint), "build_default_index": False}}],
    })
    check_models(config)  # the checkpoint itself is fine
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        with pytest.raises(StartupError) as caught:
            deploy(config, name="broken")
    finally:
        serve.shutdown()
        ray.shutdown()
    message = str(caught.value)
    assert message.startswith("deployment Generator-r2t2-broken failed to start:") and "\n" not in message, message
    assert "vllm backend cannot load" in message and "NoSuchMoeForCausalLM" in message, message
