"""torchvision must import beside the CPU torch build, and open_clip must work on top of it."""
import r2t2  # noqa: F401  (applies the fix)

import torch
from PIL import Image


def test_open_clip_creates_model_and_preprocesses_pil_image() -> None:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms("RN50", pretrained=None)
    pixels = preprocess(Image.new("RGB", (64, 48), (200, 30, 30))).unsqueeze(0)
    assert pixels.shape == (1, 3, 224, 224)
    with torch.no_grad():
        features = model.encode_image(pixels)
    assert features.shape == (1, 1024) and torch.isfinite(features).all()


def test_transformers_mixtral_imports() -> None:
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=32, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=1, num_key_value_heads=1, num_local_experts=4)
    assert MixtralForCausalLM(config).num_parameters() > 0


def test_fix_is_idempotent() -> None:
    from r2t2.compat import ensure_torchvision

    first = ensure_torchvision()
    assert ensure_torchvision() == first


def test_child_interpreters_get_the_fix() -> None:
    """vLLM and Ray start fresh interpreters; they must import transformers' Mixtral without help."""
    import subprocess
    import sys

    code = "import torchvision, transformers; from transformers import MixtralForCausalLM; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
