"""torchvision must import beside the CPU torch build, and open_clip must work on top of it, once an entry point
applied the fix (in this process conftest's `pytest_configure` did)."""
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from conftest import without_child_site

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a new interpreter that got no fix from this one."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=without_child_site())


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


def test_an_entry_points_one_call_makes_open_clip_importable() -> None:
    code = ("import sys\n"
            "from r2t2.compat import install_torchvision_fix\n"
            "install_torchvision_fix()\n"
            "import open_clip\n"
            "print('torch' in sys.modules and 'torchvision' in sys.modules)")
    done = run_fresh(code)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]


def test_a_server_process_hands_the_fix_to_every_interpreter_it_starts() -> None:
    """vLLM and Ray start fresh interpreters that import transformers' Mixtral before any r2t2 code runs there."""
    child = "from transformers import MixtralForCausalLM; import open_clip; print('ok')"
    code = ("import subprocess, sys\n"
            "from serving.lifecycle.child_env import prepare_server_process\n"
            "prepare_server_process()\n"
            f"sys.exit(subprocess.run([sys.executable, '-c', {child!r}]).returncode)")
    done = run_fresh(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
