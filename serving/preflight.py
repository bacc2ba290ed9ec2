"""Start-up checks in the driver, before any deployment starts.

A model entry that cannot load (missing or broken checkpoint, a default index built for another model)
is refused here with one error naming the entry, instead of a server whose re-router replicas fail and
restart. Building each pipeline once here also builds a missing default index once, before several
re-router replicas could race to build it.
"""
from __future__ import annotations

from serving.config import ServerConfig
from serving.pipelines import build_pipeline


class StartupError(Exception):
    """The server cannot start as configured; the message names the config field at fault."""


def check_models(config: ServerConfig) -> None:
    """Build every model's pipeline as its re-router will; StartupError naming `models.<i>` on failure.

    Two entries with the same weights are refused too: an index belongs to a model's weights, so the
    index API could not say which of the two an index is for.
    """
    seen: dict[str, str] = {}  # fingerprint -> the entry that has it
    for number, entry in enumerate(config.models):
        where = f"models.{number} ({entry.name})"
        try:
            fingerprint = build_pipeline(config, entry).info()["fingerprint"]
        except Exception as err:  # noqa: BLE001 (whatever the factory raises, the entry is at fault)
            raise StartupError(f"{where}: {err}") from err
        if fingerprint in seen:
            raise StartupError(f"{where}: the same model (fingerprint {fingerprint}) as {seen[fingerprint]}; "
                               f"serve each model once")
        seen[fingerprint] = where
