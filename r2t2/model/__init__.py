"""The embedded multimodal MoE: vision experts, router, projectors, and the MoE language model."""
