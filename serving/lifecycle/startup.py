"""Start-up work that can overlap: importing the model libraries while Ray and Serve start.

Importing what the start-up checks and the deployments' code need (torch, open_clip, transformers, the
models' pipeline factories: several seconds on 2 cores) does not depend on Ray, and starting Ray and
Serve (several seconds too) does not depend on those libraries. The imports run in a thread while the
main thread starts Ray (which wants the main thread for its signal handling).
"""
from __future__ import annotations

import importlib
import threading

from serving.config import ServerConfig

APP_MODULE = "serving.deployments.app"  # the deployments' code, which the driver pickles for Serve


def import_in_background(config: ServerConfig) -> threading.Thread:
    """Start importing the application and every model's pipeline factory module; join before using them."""
    modules = [APP_MODULE, *dict.fromkeys(entry.pipeline_factory.split(":")[0] for entry in config.models)]

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 (the start-up checks import it again and report it for its model)
                continue

    thread = threading.Thread(target=run, name="r2t2-imports", daemon=True)
    thread.start()
    return thread
