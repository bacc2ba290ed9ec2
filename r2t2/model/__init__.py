"""Multimodal MoE models: family configs, the model they build, checkpoints, and the adapter protocol."""

from r2t2.model.checkpoint import (DEFAULT_CHECKPOINT, load_model, read_config, resolve_checkpoint, save_model,
                                   shipped_families)
from r2t2.model.config import ImageTextConfig, ModelConfig, ModelConfigError, load_config
from r2t2.model.mmoe import MultimodalMoE
from r2t2.model.protocol import EncodedBatch, EncodedQuery, RoutedQuery, ServableModel

__all__ = ["DEFAULT_CHECKPOINT", "EncodedBatch", "EncodedQuery", "ImageTextConfig", "ModelConfig", "ModelConfigError",
           "MultimodalMoE", "RoutedQuery", "ServableModel", "load_config", "load_model", "read_config", "resolve_checkpoint",
           "save_model", "shipped_families"]
