"""User JSONL: file, data-URL and base64 images round-trip; every malformed line names its number."""

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from r2t2.data import load_jsonl


def _png(color: tuple[int, int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 6), color if mode == "RGB" else color + (128,)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_round_trip_of_the_three_image_forms(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(_png((10, 20, 30), mode="RGBA"))
    b64 = base64.b64encode(_png((200, 0, 0))).decode()
    path = _write(tmp_path / "mine.jsonl", [
        {"image": "pics/a.png", "question": "What is it?", "answer": "Cat"},
        "",
        {"image": "data:image/png;base64," + b64, "question": "what colour?", "answer": "red",
         "task": "color", "id": "custom"},
        {"image": b64, "question": "how many?", "answer": "3", "task": "count"},
    ])
    first, second, third = load_jsonl(path)
    assert (first.id, first.question, first.answer, first.task, first.split, first.source) == (
        "mine/1", "what is it?", "cat", "user", "user", "jsonl")
    assert first.image.mode == "RGB" and first.image.size == (8, 6)
    assert (second.id, second.task) == ("custom", "color") and second.image.getpixel((0, 0)) == (200, 0, 0)
    assert (third.id, third.answer, third.task) == ("mine/4", "3", "count")


@pytest.mark.parametrize("line, problem", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    ({"image": "x.png", "question": "q?"}, "missing field"),
    ({"image": "x.png", "question": "q?", "answer": "a", "colour": "red"}, "unknown field"),
    ({"image": "x.png", "question": "", "answer": "a"}, "non-empty string"),
    ({"image": "x.png", "question": "q?", "answer": 3}, "non-empty string"),
    ({"image": "x.png", "question": "q?", "answer": "two words"}, "single word"),
    ({"image": "x.png", "question": "q?", "answer": "a", "task": "ocr"}, "unknown task"),
    ({"image": "missing.png", "question": "q?", "answer": "a"}, "neither a file"),
    ({"image": "data:image/png,abc", "question": "q?", "answer": "a"}, "data URL"),
    ({"image": base64.b64encode(b"not an image").decode(), "question": "q?", "answer": "a"}, "could not be read"),
])
def test_malformed_line_names_line_number_and_problem(tmp_path: Path, line, problem) -> None:
    good = {"image": "data:image/png;base64," + base64.b64encode(_png((1, 2, 3))).decode(),
            "question": "q?", "answer": "a"}
    path = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{problem}"):
        load_jsonl(path)


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    image = "data:image/png;base64," + base64.b64encode(_png((1, 2, 3))).decode()
    record = {"image": image, "question": "q?", "answer": "a", "id": "same"}
    with pytest.raises(ValueError, match=r"dup.jsonl:2: id 'same' already used on line 1"):
        load_jsonl(_write(tmp_path / "dup.jsonl", [record, record]))
