"""r2t2: test-time re-routing (R2-T2) for multimodal mixture-of-experts models."""
from r2t2.compat import ensure_torchvision

# Before any submodule can import open_clip or transformers (both import torchvision).
ensure_torchvision()

__version__ = "0.1.0"
