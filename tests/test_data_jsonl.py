"""User JSONL: file, data-URL and base64 images round-trip; every malformed line names its number."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from r2t2.data import load_jsonl


def _png(color: tuple[int, int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 6), color if mode == "RGB" else color + (128,)).save(buffer, format="PNG")
    return buffer.getvalue()


def _noisy_png() -> bytes:
    """A 64 x 64 photo-like (incompressible) PNG: its base64 is ~16 kB, with '/'-free runs longer than a file
    name may be."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
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
        "mine/1", "what is it?", "Cat", "user", "user", "jsonl")
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
    ({"image": base64.b64encode(_png((1, 2, 3))).decode(), "question": "q?", "answer": "?!"},
     "not empty once normalised"),
    ({"image": "x.png", "question": "q?", "answer": "a", "task": "ocr"}, "unknown task"),
    ({"image": "missing.png", "question": "q?", "answer": "a"}, "'missing.png' is neither a file"),
    ({"image": "/nonexistent/dir/x.png", "question": "q?", "answer": "a"}, "'/nonexistent/dir/x.png' is neither a file"),
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


def test_bare_base64_of_an_ordinary_image_loads(tmp_path: Path) -> None:
    """Bare base64 is first looked up as a file name; one too long for the file system is base64, not an error."""
    png = _noisy_png()
    b64 = base64.b64encode(png).decode()
    assert max(len(piece) for piece in b64.split("/")) > 255  # longer than any file name may be
    (sample,) = load_jsonl(_write(tmp_path / "big.jsonl", [{"image": b64, "question": "q?", "answer": "noise"}]))
    with Image.open(io.BytesIO(png)) as original:
        assert sample.image.size == (64, 64) and sample.image.tobytes() == original.convert("RGB").tobytes()


def test_absolute_and_relative_paths_and_data_urls(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(_png((10, 20, 30)))
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(_png((40, 50, 60)))
    (tmp_path / "data").mkdir()
    path = _write(tmp_path / "data" / "mine.jsonl", [
        {"image": "../pics/a.png", "question": "q?", "answer": "a"},
        {"image": str(elsewhere), "question": "q?", "answer": "b"},
        {"image": "data:image/png;base64," + base64.b64encode(_noisy_png()).decode(), "question": "q?", "answer": "c"},
    ])
    relative, absolute, url = load_jsonl(path)
    assert relative.image.getpixel((0, 0)) == (10, 20, 30) and absolute.image.getpixel((0, 0)) == (40, 50, 60)
    assert url.image.size == (64, 64)


def test_answers_of_several_words_load_as_written(tmp_path: Path) -> None:
    image = "data:image/png;base64," + base64.b64encode(_png((1, 2, 3))).decode()
    answers = ["fire hydrant", " Tennis Racket ", "2.5", "The Fire-Hydrant."]
    path = _write(tmp_path / "vqa.jsonl", [{"image": image, "question": "q?", "answer": a} for a in answers])
    assert [s.answer for s in load_jsonl(path)] == ["fire hydrant", "Tennis Racket", "2.5", "The Fire-Hydrant."]
