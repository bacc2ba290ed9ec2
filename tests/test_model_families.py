"""Model families from configs: round trips, refusals naming the field, a tiny trained family with a
multi-row routing, the OLMoE prefix-cached loss, local expert weights, and the model layer's isolation."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import param_hash
from r2t2.data import load_split
from r2t2.model import ModelConfig, ModelConfigError, load_config, load_model, read_config, resolve_checkpoint
from r2t2.model.checkpoint import shipped_families
from r2t2.model.experts import VisionExpert
from r2t2.routing import Neighbourhood, RerouteConfig, is_valid_routing, reroute
from r2t2.train import TrainConfig, train

TINY_LM = {"architecture": "OlmoeForCausalLM", "hidden_size": 128, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
           "max_position_embeddings": 64}


def tiny_config() -> dict:
    """Three small experts (ViT, timm ConvNeXt, ResNet), three routing rows, a one-layer OLMoE."""
    return {
        "name": "tiny",
        "experts": [
            {"name": "vit", "architecture": "ViT-B-32", "image_size": 32, "skills": ["color", "presence"],
             "tower": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32}},
            {"name": "convnext", "architecture": "convnext_tiny", "image_size": 32, "skills": ["shape", "spatial"],
             "tower": {"timm_model_name": "test_convnext", "timm_pool": "avg", "timm_drop_path": 0.0,
                       "image_size": 32}},
            {"name": "resnet", "architecture": "RN50", "image_size": 32, "color": "gray",
             "skills": ["count", "digit"],
             "tower": {"layers": [1, 1, 1, 1], "width": 8, "head_width": 32, "image_size": 32}},
        ],
        "router": {"inputs": ["words", "image", "sentence"], "hidden": 32,
                   "rows": [{"name": "a", "tokens": 1}, {"name": "b", "tokens": 2}, {"name": "c", "tokens": 1}]},
        "feature_dim": 32,
        "lm": dict(TINY_LM),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-family")
    (out / "tiny.json").write_text(json.dumps(tiny_config()))
    config = load_config(out / "tiny.json")
    train(out / "ckpt", TrainConfig(expert_steps=3, expert_batch=16, mix_epochs=1, mix_batch=64),
          model_config=config, limit=160, log=lambda _: None)
    return load_model(out / "ckpt")


@pytest.fixture(scope="module")
def samples():
    return load_split("test", limit=8, seed=2)


def _batch(model, samples):
    return model.labelled_batch([s.image for s in samples], [s.question for s in samples], [s.answer for s in samples])


@pytest.mark.parametrize("family", ["embedded", "quartet"])
def test_shipped_config_round_trips_and_matches_its_checkpoint(family: str) -> None:
    config = load_config(family)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert read_config(resolve_checkpoint(family)) == config
    assert family in shipped_families()


def test_tiny_family_trains_loads_routes_and_answers(tiny, samples) -> None:
    assert tiny.routing_shape == (4, 4) and tiny.routing_layout.names == ["a", "b", "c", "lm.layer0"]
    assert (tiny.checkpoint_dir / "MODEL_CARD.md").read_text().startswith("# r2t2 model card: tiny")
    assert (tiny.checkpoint_dir / "FINGERPRINT").read_text().strip() == tiny.fingerprint
    batch = _batch(tiny, samples)
    routing = tiny.route(batch)
    assert routing.shape == (8, 3, 3) and all(is_valid_routing(r) for r in routing)
    answers = tiny.answer(batch, routing)
    assert len(answers) == 8 and all(isinstance(a, str) for a in answers)
    query = tiny.encode_query(samples[0].image, samples[0].question)
    assert query.question_embedding.shape == (384,) and len(query.batch) == 1
    assert torch.allclose(tiny.base_routing(query.batch)[:3, :3], routing[0], atol=1e-6)


def test_prefix_cached_loss_equals_the_full_forward_for_olmoe(tiny, samples) -> None:
    batch = _batch(tiny, samples)
    routing = torch.softmax(torch.randn(8, 3, 3, generator=torch.Generator().manual_seed(1)), -1)
    assert torch.allclose(tiny.routing_loss(batch, routing), tiny.answer_loss(batch, routing), atol=1e-4)


@pytest.mark.parametrize("strategy", ["ngd", "kernel", "meanshift", "oracle"])
def test_every_strategy_keeps_each_row_on_the_simplex_and_weights_unchanged(tiny, samples, strategy) -> None:
    batch = _batch(tiny, samples)
    before = param_hash(tiny)
    neighbours = batch[[1, 2, 3, 4, 5, 6]]
    hood = Neighbourhood(ids=[str(i) for i in range(6)], embeddings=torch.eye(6, 8),
                         routings=tiny.full_routing(neighbours, torch.softmax(
                             torch.randn(6, 3, 3, generator=torch.Generator().manual_seed(0)), -1)), batch=neighbours)
    config = RerouteConfig(strategy=strategy, steps=4, oracle_steps=4, lr=0.2, k=4)
    r0 = tiny.base_routing(batch[[0]])
    result = reroute(tiny, r0, config, query_embedding=torch.eye(8)[0], neighbourhood=hood,
                     pool_routings=hood.routings, target=batch[[0]])
    assert result.routing.shape == (4, 4) and is_valid_routing(result.routing)
    assert result.fallback is None
    assert param_hash(tiny) == before


def test_expert_starts_from_a_local_weights_file(tmp_path) -> None:
    spec = load_config("embedded").experts[0]
    source = VisionExpert(spec, 16)
    save_file({k: v.contiguous() for k, v in source.tower.state_dict().items()}, str(tmp_path / "tower.safetensors"))
    loaded = VisionExpert(dataclasses.replace(spec, weights="tower.safetensors"), 16, root=tmp_path)
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.equal(source.eval()(pixels), loaded.eval()(pixels))
    with pytest.raises(ModelConfigError, match=r"experts\[0\]\.weights"):
        VisionExpert(dataclasses.replace(spec, weights="tower.safetensors"), 24, root=tmp_path)


def _refusal(edit, field: str, tmp_path: Path) -> None:
    data = tiny_config()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelConfigError) as caught:
        from r2t2.model import MultimodalMoE
        from r2t2.model.tokenizer import build_tokenizer

        MultimodalMoE(load_config(path), build_tokenizer(["a question", "yes"]))
    assert caught.value.field == field, str(caught.value)
    assert field in str(caught.value)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["experts"][1].update(architecture="no-such-clip"), "experts[1].architecture"),
    (lambda d: d["experts"][0]["tower"].update(colour="red"), "experts[0].tower"),
    (lambda d: d["experts"][2].update(color="sepia"), "experts[2].color"),
    (lambda d: d["lm"].update(architecture="NoSuchForCausalLM"), "lm.architecture"),
    (lambda d: d["lm"].update(num_expert=3), "lm.num_expert"),
    (lambda d: d["lm"].update(hidden_size=100, num_attention_heads=3), "lm.hidden_size"),
    (lambda d: d["router"].update(rows=[]), "router.rows"),
    (lambda d: d["router"].update(inputs=["words", "pixels"]), "router.inputs"),
    (lambda d: d.update(feature_dims=12), "feature_dims"),
    (lambda d: d.pop("lm"), "lm"),
    (lambda d: d.update(r2t2_defaults={"lm_positions": "last"}), "r2t2_defaults"),
    (lambda d: d.update(r2t2_defaults={"no_such_option": 1}), "r2t2_defaults"),
    (lambda d: d.update(r2t2_defaults=["first"]), "r2t2_defaults"),
])
def test_bad_configs_are_refused_naming_the_field(edit, field: str, tmp_path: Path) -> None:
    _refusal(edit, field, tmp_path)


def test_a_checkpoint_whose_config_does_not_match_its_weights_is_refused(tiny, tmp_path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny.checkpoint_dir, broken)
    data = json.loads((broken / "config.json").read_text())
    data["feature_dim"] = 48
    (broken / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelConfigError, match="does not match the config"):
        load_model(broken)
    with pytest.raises(ModelConfigError, match="neither a checkpoint directory nor a shipped family"):
        resolve_checkpoint("no-such-family")


def test_the_model_layer_imports_nothing_from_indexes_or_serving() -> None:
    code = ("import sys, r2t2.model, r2t2.routing, r2t2.train, r2t2.data; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('indexes', 'serving')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
