"""The `vllm.general_plugins` entry point: registers r2t2's routable model classes in every vLLM process."""
from __future__ import annotations

# vLLM architecture name -> the routable class of the same model (lazy "module:class": nothing is imported
# until an engine actually builds one).
ROUTABLE = {
    "MixtralForCausalLM": "R2T2MixtralForCausalLM",
    "OlmoeForCausalLM": "R2T2OlmoeForCausalLM",
    "Qwen3MoeForCausalLM": "R2T2Qwen3MoeForCausalLM",
    "Qwen3VLMoeForConditionalGeneration": "R2T2Qwen3VLMoeForConditionalGeneration",
}


def register() -> None:
    from vllm import ModelRegistry

    for name in ROUTABLE.values():
        ModelRegistry.register_model(name, f"serving.vllm_plugin.models:{name}")
