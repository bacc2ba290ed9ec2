"""`r2t2 index ...` verbs, driven through the top-level command's `main`."""
from __future__ import annotations

import pytest

import r2t2.data
import r2t2.model
from indexes.embedders import MiniLMEmbedder
from indexes.store import IndexStore
from serving.cli.main import main
from tests.index_toys import ToyEncoder, toy_samples, unit_vectors


def _run(*argv: str) -> None:
    main(list(argv))


@pytest.fixture
def root(tmp_path, monkeypatch) -> str:
    """The toy model and toy samples in place of the real ones; MiniLM's output replaced by hashed
    unit vectors of its dimension so the test does not spend seconds loading it."""
    monkeypatch.setattr(r2t2.model, "load_model", lambda checkpoint: ToyEncoder())
    monkeypatch.setattr(r2t2.data, "load_split", lambda split, tasks=None, limit=None: toy_samples(limit or 30))
    monkeypatch.setattr(MiniLMEmbedder, "embed", lambda self, samples: unit_vectors(len(samples), self.dim))
    return str(tmp_path)


def test_build_list_inspect_rm(root: str, capsys) -> None:
    _run("index", "build", "--index-dir", root, "--name", "demo", "--tasks", "color,shape", "--limit", "40",
         "--cap", "12")
    assert "built demo v1: kept 12 of" in capsys.readouterr().out
    manifest = IndexStore(root).manifest("demo", 1)
    assert manifest.dataset == {"source": "builtin", "split": "reference", "tasks": ["color", "shape"], "limit": 40}
    assert manifest.embedder_name == "all-MiniLM-L6-v2/question" and manifest.model_fingerprint == "toy-model-1"
    _run("index", "build", "--index-dir", root, "--name", "demo", "--index-type", "hnsw")

    capsys.readouterr()
    _run("index", "list", "--index-dir", root)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "CURRENT", "VERSIONS", "SIZE", "TYPE", "EMBEDDER", "MODEL", "CREATED"]
    assert lines[1].split()[:5] == ["demo", "2", "2", str(IndexStore(root).manifest("demo", 2).kept), "hnsw"]

    _run("index", "list", "demo", "--index-dir", root)
    out = capsys.readouterr().out
    assert "*v2" in out and " v1" in out and "split=reference" in out

    _run("index", "inspect", "demo", "--index-dir", root, "--verify")
    out = capsys.readouterr().out
    assert "version" in out and "v2" in out and "payload.npz" in out and "verified" in out

    with pytest.raises(SystemExit):
        _run("index", "rm", "demo", "--version", "2", "--index-dir", root)
    assert "CURRENT" in capsys.readouterr().err
    _run("index", "rm", "demo", "--version", "1", "--index-dir", root)
    _run("index", "rm", "demo", "--all", "--index-dir", root)
    _run("index", "list", "--index-dir", root)
    assert "no indexes" in capsys.readouterr().out


def test_errors_are_one_line(root: str, capsys) -> None:
    with pytest.raises(SystemExit):
        _run("index", "inspect", "missing", "--index-dir", root)
    assert capsys.readouterr().err.startswith("error: no index named 'missing'")
    with pytest.raises(SystemExit):
        _run("index", "build", "--index-dir", root, "--name", "../x")
    assert "invalid index name" in capsys.readouterr().err


def test_verified_answers_are_listed_inspected_removed_and_compacted(root: str, capsys) -> None:
    import numpy as np
    from PIL import Image

    from indexes.feedback_log import LOG_FILE, FeedbackLog
    from indexes.feedback_state import accepted, added
    from tests.index_toys import ROUTING_SHAPE

    _run("index", "build", "--index-dir", root, "--name", "demo", "--limit", "30")
    own = IndexStore(root).manifest("demo", 1)
    log = FeedbackLog.open(IndexStore(root).index_dir("demo") / LOG_FILE)
    records = []
    for i, source in enumerate(("labeller", "labeller", "admin")):
        records.append(accepted(f"v{i}", "toy", Image.new("RGB", (4, 4), (i, 0, 0)), f"asked {i}?", "red", "color",
                                {"token": source}))
        records.append(added(f"v{i}", np.eye(own.embedder_dim, dtype=np.float32)[i],
                             np.full(ROUTING_SHAPE, 0.25, dtype=np.float32),
                             {"features": np.zeros(3, np.float32), "token_ids": np.arange(5)}, {"method": "test"}))
    log.append(records)
    log.close()
    capsys.readouterr()
    _run("index", "inspect", "demo", "--index-dir", root)
    out = capsys.readouterr().out
    assert "3 accepted: 3 served as references" in out and "from labeller: 2" in out and "from admin: 1" in out
    _run("index", "feedback", "demo", "--index-dir", root, "--source", "labeller")
    assert capsys.readouterr().out.count("added") == 2
    _run("index", "feedback-rm", "demo", "--index-dir", root, "--source", "admin")
    assert "removed 1 verified answers" in capsys.readouterr().out
    _run("index", "compact", "demo", "--index-dir", root)
    assert "into v2" in capsys.readouterr().out
    compacted = IndexStore(root).manifest("demo", 2)
    assert compacted.kept == own.kept + 2 and compacted.feedback_through == 7
