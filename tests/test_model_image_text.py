"""Image-text families: the config layer's refusals, the chat tokenizer, a tiny Qwen3-VL-MoE trained by r2t2
and written in the published tensor layout, read back by transformers alone, and its routing readout."""
import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import r2t2
from r2t2.model import ImageTextConfig, ModelConfigError, load_config, load_model, read_config
from r2t2.model.hf_checkpoint import FAMILY, WEIGHTS
from r2t2.model.image_text_model import ImageTextModel
from r2t2.model.qwen3vl import answer_routing, build_model, chat_inputs, generate_answers, load_checkpoint, prompt
from r2t2.model.tokenizer import build_chat_tokenizer
from r2t2.train_image_text import ImageTextTrainConfig, train_image_text

SHIPPED = json.loads((Path(r2t2.__file__).parent / "model" / "configs" / "qwen3vl.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """The shipped family's config, trained for 2 steps on 64 questions: a real checkpoint, quickly."""
    out = tmp_path_factory.mktemp("qwen3vl") / "ckpt"
    report = train_image_text(out, load_config("qwen3vl"), ImageTextTrainConfig(epochs=1, batch=32, eval_limit=12),
                              limit=64, log=lambda _: None)
    return out, report


def test_shipped_config_is_an_image_text_family_and_round_trips() -> None:
    config = load_config("qwen3vl")
    assert isinstance(config, ImageTextConfig) and config.architecture == "Qwen3VLMoeForConditionalGeneration"
    assert ImageTextConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.to_dict() == {**SHIPPED, "image_text_model": {**SHIPPED["image_text_model"], "vision_config": {
        **SHIPPED["image_text_model"]["vision_config"], "out_hidden_size": 128}}}
    assert config.text_config["norm_topk_prob"] is True and config.moe_layers == 4


def _text(data: dict) -> dict:
    return data["image_text_model"]["text_config"]


def _vision(data: dict) -> dict:
    return data["image_text_model"]["vision_config"]


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["image_text_model"].update(architecture="AriaForConditionalGeneration"),
     "image_text_model.architecture"),
    (lambda d: _text(d).update(moe_intermediate_size=64), "image_text_model.text_config.moe_intermediate_size"),
    (lambda d: _text(d).update(moe_intermediate_size=128), "image_text_model.text_config.moe_intermediate_size"),
    (lambda d: _text(d).update(norm_topk_prob=False), "image_text_model.text_config.norm_topk_prob"),
    (lambda d: _text(d).update(vocab_size=500), "image_text_model.text_config.vocab_size"),
    (lambda d: _text(d).update(num_experts_per_tok=9), "image_text_model.text_config.num_experts_per_tok"),
    (lambda d: _text(d)["rope_parameters"].update(mrope_section=[8, 8, 8]),
     "image_text_model.text_config.rope_parameters.mrope_section"),
    (lambda d: _text(d).pop("num_experts"), "image_text_model.text_config.num_experts"),
    (lambda d: _vision(d).update(out_hidden_size=64), "image_text_model.vision_config.out_hidden_size"),
    (lambda d: _vision(d).update(deepstack_visual_indexes=[3]),
     "image_text_model.vision_config.deepstack_visual_indexes"),
    (lambda d: d.update(image_pixels=100), "image_pixels"),
    (lambda d: d.update(experts=[]), "experts"),
    (lambda d: d["image_text_model"].update(processor={}), "image_text_model.processor"),
])
def test_bad_image_text_configs_are_refused_naming_the_field(edit, field: str, tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelConfigError) as caught:
        load_config(path)
    assert caught.value.field == field and str(path) in str(caught.value)


def test_a_field_the_architecture_does_not_have_is_refused_when_the_model_is_built(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    _text(data)["num_expert"] = 3
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelConfigError, match="image_text_model.text_config.num_expert: is not a field"):
        build_model(load_config(path), build_chat_tokenizer(["what color is it?", "red"]))


def test_the_chat_tokenizer_keeps_specials_whole_and_templates_one_image_turn() -> None:
    from r2t2.model.qwen3vl import build_processor

    tokenizer = build_chat_tokenizer(["what color is the shape?", "red"])
    text = prompt(build_processor(load_config("qwen3vl"), tokenizer), "what color is the shape?")
    assert text == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>what color is the shape?"
                    "<|im_end|>\n<|im_start|>assistant\n")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text + "red<|im_end|>").input_ids)
    assert tokens == ["<|im_start|>", "user", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "what", "color",
                      "is", "the", "shape", "?", "<|im_end|>", "<|im_start|>", "assistant", "red", "<|im_end|>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a teal square").input_ids) == ["[UNK]", "[UNK]", "[UNK]"]


def test_the_checkpoint_is_in_the_published_layout_and_describes_itself(trained) -> None:
    out, report = trained
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3VLMoeForConditionalGeneration"]
    text = config["text_config"]
    assert text["num_experts"] == 8 and "num_local_experts" not in text and text["norm_topk_prob"] is True
    hidden, inner, experts = text["hidden_size"], text["moe_intermediate_size"], text["num_experts"]
    with safe_open(out / WEIGHTS, "pt") as weights:
        names = set(weights.keys())
        for layer in range(text["num_hidden_layers"]):
            prefix = f"model.language_model.layers.{layer}.mlp."
            assert weights.get_slice(prefix + "experts.gate_up_proj").get_shape() == [experts, hidden, 2 * inner]
            assert weights.get_slice(prefix + "experts.down_proj").get_shape() == [experts, inner, hidden]
            assert weights.get_slice(prefix + "gate.weight").get_shape() == [experts, hidden]
    assert "lm_head.weight" in names and any(n.startswith("model.visual.merger.") for n in names)
    assert json.loads((out / FAMILY).read_text()) == load_config("qwen3vl").to_dict()
    assert (out / "FINGERPRINT").read_text().strip() == report["fingerprint"]
    card = (out / "MODEL_CARD.md").read_text()
    assert card.startswith("# r2t2 model card: qwen3vl") and "| paraphrase |" in card
    assert set(report["accuracy"]) == {"test", "paraphrase"} and 0 <= report["accuracy"]["test"]["all"] <= 100
    with pytest.raises(ModelConfigError, match="Hugging Face"):
        read_config(out)  # the composed-family reader refuses it clearly
    assert isinstance(load_model(out), ImageTextModel)  # load_model serves it through its adapter


def test_transformers_reads_it_back_with_its_own_loader_and_answers_the_same(trained) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from r2t2.data import load_split

    out, _ = trained
    plain = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(out)
    model, _ = load_checkpoint(out)
    samples = load_split("test", limit=6, seed=4)
    images, questions = [s.image for s in samples], [s.question for s in samples]
    experts = model.model.language_model.layers[0].mlp.experts
    assert experts.gate_up_proj.shape == (8, 2 * 96, 128)  # transformers' own layout again, after its conversion
    inputs = chat_inputs(processor, images, questions)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (inputs["input_ids"] == image_pad).sum(1).tolist() == [16] * 6  # 64x64: 8x8 patches, 2x2 merged
    with torch.no_grad():
        assert torch.equal(plain(**inputs).logits, model(**inputs).logits)
    answers = generate_answers(model, processor, images, questions)
    assert generate_answers(plain, processor, images, questions) == answers and len(answers) == 6


def test_answer_routing_is_each_routers_softmax_at_the_last_prompt_token(trained) -> None:
    from r2t2.data import load_split

    out, _ = trained
    model, processor = load_checkpoint(out)
    samples = load_split("test", limit=3, seed=1)
    inputs = chat_inputs(processor, [s.image for s in samples], [s.question for s in samples])
    seen = []
    hooks = [layer.mlp.gate.register_forward_hook(lambda _m, _i, output: seen.append(output))
             for layer in model.model.language_model.layers]
    try:
        routing = answer_routing(model, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    assert routing.shape == (3, 4, 8) and torch.allclose(routing.sum(-1), torch.ones(3, 4))
    length = inputs["input_ids"].shape[1]
    for layer, (logits, scores, indices) in enumerate(seen):  # the router's own (logits, top-k weights, indices)
        last = logits.view(3, length, 8)[:, -1]
        assert torch.allclose(routing[:, layer], torch.softmax(last, -1), atol=1e-6)
        top = routing[:, layer].topk(2, dim=-1)
        chosen = indices.view(3, length, 2)[:, -1]
        assert torch.equal(top.indices.sort(-1).values, chosen.sort(-1).values)
        weights = scores.view(3, length, 2)[:, -1]
        assert torch.allclose(weights.sum(-1), torch.ones(3))  # norm_topk_prob: renormalised top-k
