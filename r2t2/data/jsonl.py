"""User data sets as JSONL: one question per line, so users can bring their own reference sets.

Each line is an object with `image` (a path relative to the JSONL file's folder or absolute, a `data:` URL,
or bare base64 of any length), `question`, `answer` (a word or a short phrase such as "fire hydrant", kept as
written less surrounding whitespace; answers are compared normalised, see r2t2.data.answers), and optionally
`task` (default "user") and `id` (default "<file stem>/<line number>"). Any problem raises ValueError naming
the line.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from r2t2.data.sample import TASKS, USER, Sample

_REQUIRED = ("image", "question", "answer")
_OPTIONAL = ("task", "id")


def _decoded_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _is_file(path: Path) -> bool:
    """Whether `path` names a file. Bare base64 is tried as a path first, and the file system refuses to even
    look up a name longer than it allows (OSError "File name too long"): such a name is no file."""
    try:
        return path.is_file()
    except OSError:
        return False


def _image(value: str, folder: Path) -> Image.Image:
    """Open a data URL, an existing file, or bare base64, in that order."""
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ValueError("data URL must look like 'data:image/png;base64,<data>'")
        return _decoded_image(base64.b64decode(payload, validate=True))
    path = folder / value
    if _is_file(path):
        with Image.open(path) as image:
            return image.convert("RGB")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {value[:60]!r} is neither a file (a relative path is read under "
                         f"{folder}) nor base64") from None
    return _decoded_image(data)


def _sample(record: object, line: int, stem: str, folder: Path) -> Sample:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    unknown = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {list(_REQUIRED + _OPTIONAL)}")
    fields = {key: record[key] for key in _REQUIRED + _OPTIONAL if key in record}
    for key, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field {key!r} must be a non-empty string")
    task = fields.get("task", USER)
    if task not in TASKS + (USER,):
        raise ValueError(f"unknown task {task!r}; valid: {TASKS + (USER,)}")
    try:
        image = _image(fields["image"], folder)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"image could not be read: {error}") from None
    return Sample(
        id=fields.get("id", f"{stem}/{line}"), image=image, question=fields["question"].strip().lower(),
        answer=fields["answer"].strip(), task=task, split=USER, source="jsonl",
    )


def load_jsonl(path: str | Path) -> list[Sample]:
    """Samples from a JSONL file (blank lines skipped); ValueError 'path:line: problem' on bad lines."""
    path = Path(path)
    samples = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                sample = _sample(json.loads(text), line, path.stem, path.parent)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line}: invalid JSON: {error.msg}") from None
            except ValueError as error:
                raise ValueError(f"{path}:{line}: {error}") from None
            if sample.id in seen:
                raise ValueError(f"{path}:{line}: id {sample.id!r} already used on line {seen[sample.id]}")
            seen[sample.id] = line
            samples.append(sample)
    return samples
