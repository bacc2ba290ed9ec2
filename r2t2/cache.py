"""Where r2t2 keeps what it makes on first use and finds again: $R2T2_CACHE, default ~/.cache/r2t2."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache directory (not created here)."""
    return Path(os.environ.get("R2T2_CACHE") or Path.home() / ".cache" / "r2t2")
