"""A random-weights Qwen3-VL-30B-A3B skeleton, at small widths here: written as the published checkpoint is
(sharded, bfloat16, published layout), loaded by transformers and the adapter, cached by config and seed,
resolved by name, and its own reference set kept whole by the default index build."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from r2t2.data import load_jsonl
from r2t2.model import ModelConfigError, load_model, resolve_checkpoint
from r2t2.model import skeleton
from r2t2.model.checkpoint import ASSETS
from r2t2.model.fingerprint import FINGERPRINT
from r2t2.model.hf_checkpoint import REFERENCES, SHARD_INDEX, fingerprint, weight_files
from r2t2.model.skeleton import PUBLISHED_VOCAB, skeleton_dir, write_skeleton

# Small widths (head width 64, as vLLM's CPU kernels need), 8 experts; the published vocabulary stays.
TINY = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 2,
        "head_dim": 64, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 96,
        "max_position_embeddings": 512, "image_pixels": 64 * 64,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12],
                            "mrope_interleaved": True}}
LAYERS, REFERENCE_COUNT = 2, 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_skeleton(tmp_path_factory.mktemp("skeletons") / "tiny", LAYERS, seed=0,
                          references=REFERENCE_COUNT, **TINY)


def test_loads_with_transformers_and_the_adapter(tiny: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny)
    text = model.config.text_config
    assert (text.vocab_size, text.num_experts, text.num_hidden_layers) == (PUBLISHED_VOCAB, 8, LAYERS)
    assert model.dtype == torch.bfloat16
    adapter = load_model(tiny)
    assert adapter.family == "qwen3vl-a3b-skeleton-L2" and adapter.routing_shape == (LAYERS, 8)
    assert adapter.fingerprint == (tiny / FINGERPRINT).read_text().strip()
    assert adapter.r2t2_defaults == {"strategy": "ngd"}


def test_shards_and_their_index_agree(tiny: Path) -> None:
    index = json.loads((tiny / SHARD_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-{n:05d}-of-{LAYERS + 1:05d}.safetensors" for n in range(1, LAYERS + 2)]
    assert [p.name for p in weight_files(tiny)] == shards and not (tiny / "model.safetensors").exists()
    found, total = {}, 0
    for shard in shards:
        with safe_open(str(tiny / shard), "pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                assert tensor.dtype == torch.bfloat16
                found[name] = shard
                total += tensor.numel() * tensor.element_size()
    assert found == index["weight_map"] and total == index["metadata"]["total_size"]
    layer_one = {name for name, shard in found.items() if shard == shards[2]}
    assert layer_one and all(".layers.1." in name for name in layer_one)  # one shard per decoder layer


def test_tensors_are_in_the_published_layout(tiny: Path) -> None:
    tokenizer_words = len(json.loads((tiny / "tokenizer.json").read_text())["model"]["vocab"])
    index = json.loads((tiny / SHARD_INDEX).read_text())["weight_map"]

    def tensor(name: str) -> torch.Tensor:
        with safe_open(str(tiny / index[name]), "pt") as handle:
            return handle.get_tensor(name)

    experts = "model.language_model.layers.0.mlp.experts."
    assert tensor(experts + "gate_up_proj").shape == (8, 128, 2 * 96)  # [experts, hidden, 2 x intermediate]
    assert tensor(experts + "down_proj").shape == (8, 96, 128)  # [experts, intermediate, hidden]
    assert torch.all(tensor("model.language_model.norm.weight") == 1)
    head = tensor("lm_head.weight")
    assert head.shape == (PUBLISHED_VOCAB, 128) and torch.all(head[tokenizer_words:] == 0)
    assert 0.015 < head[:tokenizer_words].float().std() < 0.025
    assert json.loads((tiny / "config.json").read_text())["text_config"]["num_experts"] == 8


def test_the_same_seed_writes_the_same_bytes_and_is_found_again(tiny: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    again = write_skeleton(tmp_path / "again", LAYERS, seed=0, references=0, **TINY)
    other = write_skeleton(tmp_path / "other", LAYERS, seed=1, references=0, **TINY)
    assert fingerprint(again) == fingerprint(tiny) != fingerprint(other)
    monkeypatch.setattr(skeleton, "_write", lambda *args: pytest.fail("a cached skeleton was written again"))
    assert write_skeleton(tiny, LAYERS, seed=0, references=REFERENCE_COUNT, **TINY) == tiny
    with pytest.raises(FileExistsError):  # the same directory, another seed: never overwritten
        write_skeleton(tiny, LAYERS, seed=1, references=REFERENCE_COUNT, **TINY)


def test_an_interrupted_write_leaves_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draw = skeleton._draw
    monkeypatch.setattr(skeleton, "_draw", lambda name, *args: draw(name, *args) if ".layers." not in name
                        else (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_skeleton(tmp_path / "cut", 1, references=0, **TINY)
    assert not (tmp_path / "cut").exists()
    monkeypatch.setattr(skeleton, "_draw", draw)
    written = write_skeleton(tmp_path / "cut", 1, references=0, **TINY)
    assert (written / FINGERPRINT).is_file() and [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_the_shipped_single_file_fingerprint_is_unchanged() -> None:
    shipped = ASSETS / "qwen3vl"
    assert weight_files(shipped) == [shipped / "model.safetensors"]
    assert fingerprint(shipped) == (shipped / FINGERPRINT).read_text().strip()


def test_resolve_checkpoint_generates_a_named_skeleton_into_the_cache(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R2T2_CACHE", str(tmp_path))
    written = []

    def fake_write(directory: Path, layers: int, seed: int = 0) -> Path:
        written.append((directory, layers, seed))
        return directory

    monkeypatch.setattr(skeleton, "write_skeleton", fake_write)
    assert resolve_checkpoint("qwen3vl-a3b-skeleton-L4") == tmp_path / "skeletons" / "qwen3vl-a3b-L4-s0"
    assert resolve_checkpoint("qwen3vl-a3b-skeleton-L2-s7") == skeleton_dir(2, 7)
    assert written == [(skeleton_dir(4, 0), 4, 0), (skeleton_dir(2, 7), 2, 7)]
    for name in ("qwen3vl-a3b-skeleton-L0", "qwen3vl-a3b-skeleton-L4x", "qwen3vl-a3b-skeleton"):
        with pytest.raises(ModelConfigError, match="skeleton"):
            resolve_checkpoint(name)


def test_the_cli_prints_the_skeleton_and_its_size(tiny: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from serving.cli.main import main

    monkeypatch.setattr(skeleton, "write_skeleton", lambda directory, layers, seed: tiny)
    main(["skeleton", "--layers", "2", "--out", str(tiny)])
    assert capsys.readouterr().out.startswith(f"{tiny}  (0.08 GB)")


def test_its_references_are_its_own_answers_and_the_default_index_keeps_them(tiny: Path, tmp_path: Path) -> None:
    from indexes.embedders import neighbour_embedder
    from indexes.store import IndexStore
    from serving.pipeline.factory import default_index_spec, ensure_default_index

    references = load_jsonl(tiny / REFERENCES)
    assert 0.75 * REFERENCE_COUNT <= len(references) <= REFERENCE_COUNT and all(s.answer for s in references)
    model = load_model(tiny, dtype=torch.bfloat16)  # answered as they were labelled
    assert model.encode_references(references).correct.all()
    assert default_index_spec(model) == ({"source": "jsonl", "path": REFERENCES}, tiny)
    store = IndexStore(tmp_path)
    ensure_default_index(model, neighbour_embedder(None, model), store, model.family)
    manifest = store.manifest(model.family, store.current_version(model.family))
    assert manifest.kept == len(references) and manifest.dataset["path"] == str(tiny / REFERENCES)


@pytest.mark.slow
def test_vllm_serves_the_skeleton_beside_transformers(tiny: Path) -> None:
    """vLLM accepts a vocabulary larger than the tokenizer and answers with the tokenizer's words, as
    transformers does (float32 in both)."""
    from bench.qwen3vl_agreement import transformers_answers, vllm_answers

    samples = load_jsonl(tiny / REFERENCES)[:4]
    images, questions = [s.image for s in samples], [s.question for s in samples]
    got, _ = vllm_answers(tiny, images, questions, max_tokens=2)
    assert got == transformers_answers(tiny, images, questions, max_tokens=2)
