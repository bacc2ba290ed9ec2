"""Start-up checks in the driver, before any deployment starts.

A model entry that cannot load (missing or broken checkpoint, a default index built for another model)
is refused here with one error naming the entry, instead of a server whose re-router replicas fail and
restart. Building each pipeline once here also builds a missing default index once, before several
re-router replicas could race to build it. What the checks learn (each model's `info()`) goes to the
deployments, so that a generator can start its engine without waiting for its re-router.
"""
from __future__ import annotations

import ctypes
import gc
import time
from typing import Any

from indexes.store import IndexStore
from serving.config import ServerConfig
from serving.lifecycle.progress import StartupProgress


class StartupError(Exception):
    """The server cannot start as configured; the message names the config field at fault."""


def check_models(config: ServerConfig, progress: StartupProgress | None = None) -> dict[str, dict[str, Any]]:
    """Build every model's pipeline as its re-router will; StartupError naming `models.<i>` on failure, or
    naming the module of `strategies` that cannot be imported (checked first: the models' defaults may name
    its strategies).

    Returns each model's `info()` by model id. Two entries with the same weights are refused too: an
    index belongs to a model's weights, so the index API could not say which of the two an index is for.
    """
    # Here, not at the top: the process that only supervises the server imports this module and no model code.
    from r2t2.routing import import_strategies
    from serving.model_pipelines import build_pipeline, whole_model

    try:
        import_strategies(config.strategies)
    except ValueError as err:
        raise StartupError(f"strategies: {err}") from err
    seen: dict[str, str] = {}  # fingerprint -> the entry that has it
    infos: dict[str, dict[str, Any]] = {}
    for number, entry in enumerate(config.models):
        where = f"models.{number} ({entry.name})"
        if progress is not None:
            progress.line(f"loading model {entry.name} (a first start also builds its default reference index: "
                          f"about a minute on 2 cores)")
        tick = time.monotonic()
        try:
            pipeline = build_pipeline(config, entry, dtype=config.rerouter_options(entry).dtype, **whole_model(entry))
            info = infos[entry.name] = pipeline.info()
            pipeline.close()
        except Exception as err:  # noqa: BLE001 (whatever the factory raises, the entry is at fault)
            raise StartupError(f"{where}: {err}") from err
        finally:
            pipeline = None
            _release_memory()  # the server process keeps running: a large model must not stay resident in it
        if info["fingerprint"] in seen:
            raise StartupError(f"{where}: the same model (fingerprint {info['fingerprint']}) as "
                               f"{seen[info['fingerprint']]}; serve each model once")
        seen[info["fingerprint"]] = where
        if progress is not None:
            progress.line(f"model {entry.name} loaded in {time.monotonic() - tick:.1f} s; "
                          f"{_default_index(config, info['default_index'])}")
    return infos


def _release_memory() -> None:
    """Free what a checked pipeline held: collect its cycles, and hand freed heap pages back to the system."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the pages stay with the process until reused
        pass


def _default_index(config: ServerConfig, name: str) -> str:
    """What a start-up line says of a model's default index: its version and size, or that there is none."""
    store = IndexStore(config.index_dir)
    version = store.current_version(name) if name in store.names() else None
    if version is None:
        return f"default index {name}: none"
    return f"default index {name} v{version} ({store.manifest(name, version).kept:,} references)"
