"""The embedded multimodal MoE: vision experts, router, projectors, and the MoE language model."""

from r2t2.model.checkpoint import DEFAULT_CHECKPOINT, load_model, save_model
from r2t2.model.mmoe import MultimodalMoE


def load_default_model() -> MultimodalMoE:
    """The checkpoint shipped inside the package (r2t2/assets/embedded)."""
    return load_model(DEFAULT_CHECKPOINT)


__all__ = ["DEFAULT_CHECKPOINT", "MultimodalMoE", "load_default_model", "load_model", "save_model"]
