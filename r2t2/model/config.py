"""Architecture of the embedded multimodal MoE, as plain data saved beside its weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ExpertSpec:
    """One vision expert: an open_clip tower plus the way it looks at the image."""

    name: str
    tower: dict  # open_clip CLIPVisionCfg fields
    image_size: int  # the expert's input resolution
    grayscale: bool  # colour handling: some specialists see luminance only
    skills: tuple[str, ...]  # tasks it is pre-trained on, which make it a specialist


@dataclass(frozen=True)
class ModelConfig:
    experts: tuple[ExpertSpec, ...]
    feature_dim: int = 128  # pooled output of every expert tower
    soft_tokens: int = 4  # visual tokens handed to the language model
    router_hidden: int = 128
    question_embedding_dim: int = 384  # the frozen sentence embedder the LM reads the question through
    lm: dict = field(default_factory=dict)  # MixtralConfig fields (vocab_size filled in from the tokenizer)
    max_question_tokens: int = 24
    max_answer_tokens: int = 2  # one word + end of sequence

    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.experts]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        experts = tuple(ExpertSpec(**{**e, "skills": tuple(e["skills"])}) for e in data["experts"])
        return cls(**{**data, "experts": experts})


def embedded_config() -> ModelConfig:
    """The small model r2t2 ships: three heterogeneous specialists (a colour ViT at 32 px, an RGB ResNet and
    a luminance-only ResNet at 64 px) and a 2-layer top-2-of-4 Mixtral."""
    return ModelConfig(
        experts=(
            ExpertSpec(
                name="vit-rgb32",
                tower={"layers": 3, "width": 96, "head_width": 48, "patch_size": 4, "image_size": 32},
                image_size=32, grayscale=False, skills=("color", "presence"),
            ),
            ExpertSpec(
                name="resnet-rgb64",
                tower={"layers": (1, 1, 1, 1), "width": 8, "head_width": 64, "image_size": 64},
                image_size=64, grayscale=False, skills=("shape", "spatial"),
            ),
            ExpertSpec(
                name="resnet-gray64",
                tower={"layers": (1, 1, 1, 1), "width": 16, "head_width": 64, "image_size": 64},
                image_size=64, grayscale=True, skills=("count", "digit"),
            ),
        ),
        lm={
            "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 64,
            "num_local_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        },
    )
