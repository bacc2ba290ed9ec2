"""r2t2: test-time re-routing (R2-T2) for multimodal mixture-of-experts models."""
from r2t2.compat import fix_torchvision_on_import

# Before any submodule can import open_clip or transformers (both import torchvision).
fix_torchvision_on_import()

__version__ = "0.1.0"
