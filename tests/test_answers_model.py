"""Answers of several words and VQA spellings through the shipped models: which references count as answered
right, relabelling a query with such answers (answer-space descent), and index builds from a user's JSONL."""
import json
from pathlib import Path

import pytest
import torch

from indexes.build import build_index
from indexes.errors import IndexBuildError
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from r2t2.data import load_jsonl, load_split
from r2t2.data.sample import Sample
from r2t2.model import load_model
from tests.index_toys import ToyEmbedder

NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}
PHRASES = ["fire hydrant", "the big red fire hydrant", "tennis racket", "two slices of pizza"]


@pytest.fixture(scope="module", params=["embedded", "qwen3vl"])
def model(request: pytest.FixtureRequest):
    return load_model(request.param)


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return load_split("test", limit=8, seed=1)


def _vqa_spelling(answer: str) -> str:
    """The same answer as a VQA annotator might write it: "circle" -> "The Circle.", "3" -> "The Three."."""
    return f"The {NUMBER_WORDS.get(answer, answer).title()}."


def _jsonl(path: Path, samples: list[Sample], answers: list[str]) -> list[Sample]:
    """`samples` with these answers, written to a JSONL file beside their images and loaded back."""
    lines = []
    for i, (sample, answer) in enumerate(zip(samples, answers, strict=True)):
        sample.image.save(path.parent / f"{path.stem}-{i}.png")
        lines.append(json.dumps({"image": f"{path.stem}-{i}.png", "question": sample.question, "answer": answer,
                                 "task": sample.task}))
    path.write_text("\n".join(lines) + "\n")
    return load_jsonl(path)


def test_vqa_spellings_of_right_answers_count_as_right(model, samples, tmp_path: Path) -> None:
    built_in = model.encode_references(samples).correct
    spelt = _jsonl(tmp_path / "spelt.jsonl", samples, [_vqa_spelling(s.answer) for s in samples])
    assert spelt[0].answer == _vqa_spelling(samples[0].answer)  # stored as written
    assert built_in.any() and list(model.encode_references(spelt).correct) == list(built_in)


def test_answers_of_several_words_encode_and_relabel_a_query(model, samples, tmp_path: Path) -> None:
    """The model answers one word, so it gets none of these right; nothing fails on the way."""
    phrased = _jsonl(tmp_path / "phrased.jsonl", samples[:4], PHRASES)
    encoded = model.encode_references(phrased)
    assert not encoded.correct.any()
    query = model.encode_query(samples[4].image, samples[4].question, "the fire hydrant").batch
    neighbours = model.reference_batch(encoded.payload)
    relabelled = query.with_answers_of(neighbours)
    assert len(relabelled) == 4 and torch.equal(relabelled.answer_ids, neighbours.answer_ids)
    loss = model.routing_loss(relabelled, model.base_routing(query))
    assert loss.shape == (4,) and torch.isfinite(loss).all()


def test_an_index_from_a_jsonl_keeps_the_right_answers_as_written(model, samples, tmp_path: Path) -> None:
    spelt = _jsonl(tmp_path / "spelt.jsonl", samples, [_vqa_spelling(s.answer) for s in samples])
    phrased = _jsonl(tmp_path / "phrased.jsonl", samples[:4], PHRASES)
    right = {s.id for s, ok in zip(spelt, model.encode_references(spelt).correct) if ok}
    store = IndexStore(tmp_path / "indexes")
    manifest = build_index("mine", spelt + phrased, model, ToyEmbedder(), store, {"source": "jsonl"},
                           progress=False)
    index = ReferenceIndex.load(store, "mine")
    records = [index.record(row) for row in range(index.size)]
    assert manifest.seen == 12 and {r["id"] for r in records} == right
    assert all(r["answer"].startswith("The ") for r in records)
    with pytest.raises(IndexBuildError, match="answered none of the 4 samples correctly"):
        build_index("none-right", phrased, model, ToyEmbedder(), store, {"source": "jsonl"}, progress=False)
