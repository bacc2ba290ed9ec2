"""Versioned on-disk store of reference indexes, safe for concurrent builds and many readers.

root/<name>/v000N/       finished versions (a version exists when its manifest does)
root/<name>/.tmp-<uuid>/ a build in progress; renamed to the next version when complete
root/<name>/CURRENT      the version being served; replaced atomically, read by every replica

Readers never see a half-written version: files go to a temp dir, the manifest is written last, and
the directory appears under its version name by a single rename. The directory may be shared by
several machines; nothing here relies on in-process locks.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from indexes.errors import IndexInUseError, InvalidIndexNameError, UnknownIndexError, UnknownVersionError
from indexes.manifest import MANIFEST_FILE, Manifest

INDEX_DIR_ENV = "R2T2_INDEX_DIR"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "var" / "indexes"
CURRENT_FILE = "CURRENT"
TEMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner.json"
STALE_AFTER_S = 24 * 3600  # a temp dir from another host is only presumed dead after this long
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # index names (the OpenAPI document declares it too)
_NAME_RE = re.compile(NAME_PATTERN)
_VERSION_RE = re.compile(r"^v(\d{4,})$")


def validate_name(name: str) -> str:
    """Letters, digits, '-' and '_' (starting with a letter or digit): nothing can leave the root."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidIndexNameError(
            f"invalid index name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def version_dirname(version: int) -> str:
    return f"v{version:04d}"


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f"{path.name}{TEMP_PREFIX}{uuid.uuid4().hex}")
    with temp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(temp_dir: Path) -> bool:
    """A temp dir whose builder is gone: dead pid on this host, or very old (other host, or no owner)."""
    try:
        owner = json.loads((temp_dir / OWNER_FILE).read_text())
        if owner["host"] == socket.gethostname():
            return not _pid_alive(int(owner["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return time.time() - temp_dir.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def _remove_tree(path: Path) -> None:
    """Hide the directory under a temp name first (one rename), then delete it at leisure."""
    trash = path.with_name(f"{TEMP_PREFIX}trash-{uuid.uuid4().hex}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


class IndexStore:
    """Directory of named, versioned indexes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get(INDEX_DIR_ENV) or DEFAULT_ROOT).expanduser().resolve()

    def index_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.fullmatch(p.name))

    def _existing_dir(self, name: str) -> Path:
        directory = self.index_dir(name)
        if not directory.is_dir():
            raise UnknownIndexError(f"no index named {name!r}; known: {', '.join(self.names()) or 'none'}")
        return directory

    def versions(self, name: str) -> list[int]:
        """Finished versions, oldest first (temp dirs and dirs without a manifest are not versions)."""
        directory = self._existing_dir(name)
        found = []
        for child in directory.iterdir():
            match = _VERSION_RE.fullmatch(child.name)
            if match and (child / MANIFEST_FILE).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def current_version(self, name: str) -> int | None:
        """The version CURRENT names, or None before the first successful build."""
        try:
            text = (self._existing_dir(name) / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        match = _VERSION_RE.fullmatch(text)
        if not match:
            raise UnknownVersionError(f"index {name!r}: CURRENT holds {text!r}, not a version")
        return int(match.group(1))

    def version_dir(self, name: str, version: int) -> Path:
        directory = self._existing_dir(name) / version_dirname(version)
        if not (directory / MANIFEST_FILE).is_file():
            raise UnknownVersionError(
                f"index {name!r} has no version {version}; versions: {self.versions(name) or 'none'}"
            )
        return directory

    def manifest(self, name: str, version: int) -> Manifest:
        return Manifest.read(self.version_dir(name, version))

    @contextlib.contextmanager
    def build_dir(self, name: str) -> Iterator[Path]:
        """A private temp dir for one build, removed if the build raises (or left for later cleanup if
        the process is killed). Stale temp dirs of dead builds are removed first."""
        directory = self.index_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        self.clean_stale_builds(name)
        temp = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        temp.mkdir()
        (temp / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        try:
            yield temp
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)

    def clean_stale_builds(self, name: str) -> list[Path]:
        removed = []
        for child in self.index_dir(name).iterdir():
            if child.name.startswith(TEMP_PREFIX) and child.is_dir() and _is_stale(child):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        return removed

    def publish(self, name: str, build_dir: Path, manifest: Manifest) -> Manifest:
        """Write the manifest last, then rename the build dir to the next free version number.

        Two concurrent builds may pick the same number; the loser's rename fails (the target is not
        empty), so it rewrites its manifest with the next number and tries again.
        """
        directory = self.index_dir(name)
        (build_dir / OWNER_FILE).unlink(missing_ok=True)
        while True:
            taken = [int(m.group(1)) for p in directory.iterdir() if (m := _VERSION_RE.fullmatch(p.name))]
            final = replace(manifest, name=name, version=max(taken, default=0) + 1)
            _write_atomically(build_dir / MANIFEST_FILE, final.to_json())
            try:
                os.rename(build_dir, directory / version_dirname(final.version))
            except OSError as err:
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            return final

    def set_current(self, name: str, version: int) -> None:
        self.version_dir(name, version)  # must exist
        _write_atomically(self.index_dir(name) / CURRENT_FILE, version_dirname(version) + "\n")

    def remove_version(self, name: str, version: int, force: bool = False) -> None:
        """Delete one version; the served one only with force (the index then has nothing to serve)."""
        directory = self.version_dir(name, version)
        if self.current_version(name) == version:
            if not force:
                raise IndexInUseError(f"index {name!r} v{version} is CURRENT; use force to remove it anyway")
            (self.index_dir(name) / CURRENT_FILE).unlink(missing_ok=True)
        _remove_tree(directory)

    def remove_index(self, name: str) -> None:
        _remove_tree(self._existing_dir(name))
