"""The command line: a usage mistake is one line and exit status 2, found before any model loads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.cli.main import main
from serving.pipeline.evaluate import format_table


@pytest.mark.parametrize("argv,fragment", [
    (["eval", "--split", "bogus"], "unknown split 'bogus'"),
    (["eval", "--split", "test,/nonexistent/mine.jsonl"], "no such JSONL file '/nonexistent/mine.jsonl'"),
    (["eval", "--strategies", "ngd:k=0"], "k must be a positive integer"),
    (["eval", "--strategies", "magic"], "unknown strategy 'magic'"),
    (["eval", "--options", "{"], "--options is not valid JSON"),
    (["index", "inspect", "no-such-index", "--index-dir", "/nonexistent"], "no-such-index"),
])
def test_mistakes_are_one_line_and_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_table_without_none_shows_dashes_where_nothing_compares() -> None:
    entry = {"accuracy": 50.0, "fallbacks": 0, "median_ms": 10.0, "per_task": {"color": 50.0}}
    table = format_table({"splits": {"test": {"samples": 2, "strategies": {"ngd": entry}}}})
    assert "| ngd | 50.0 | - | - | - | - | - | 0 | 10.0 | - |" in table


def test_a_bad_line_of_a_jsonl_split_is_named_before_any_model_loads(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"image": "missing.png", "question": "what color is it?", "answer": "red"}\n')
    with pytest.raises(SystemExit) as caught:
        main(["eval", "--split", str(path), "--model", "/nonexistent-model"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"{path}:1: image 'missing.png' is neither a file" in err and "Traceback" not in err


# Runs the command in a fresh interpreter and prints, as it exits, how many modules it imported and which of the
# libraries that take seconds to import among them.
COUNT_IMPORTS = """
import atexit, sys
SLOW = {"torch", "numpy", "faiss", "ray", "vllm", "transformers", "open_clip", "PIL", "sklearn"}
atexit.register(lambda: print("IMPORTED", len(sys.modules), sorted(SLOW & sys.modules.keys()), file=sys.stderr))
from serving.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("argv,most", [
    (["--help"], 200), (["train", "--help"], 200), (["eval", "--help"], 200), (["index", "--help"], 200),
    (["index", "build", "--help"], 200), (["index", "list", "--help"], 200), (["index", "inspect", "--help"], 200),
    (["index", "rm", "--help"], 200), (["skeleton", "--help"], 200), (["eval", "--no-such-flag"], 200),
    (["index", "rm", "x"], 200),  # a missing required argument
    (["serve", "--help"], 500), (["serve", "--no-such-flag"], 500),  # the server's parser reads its config schema
])
def test_help_and_argument_errors_import_no_heavy_library(argv: list[str], most: int) -> None:
    """Held as a count of modules, not a timing: torch, Ray or vLLM imported for a usage line take seconds."""
    import re
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", COUNT_IMPORTS, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 2), done.stderr[-2000:]
    count, slow = re.search(r"IMPORTED (\d+) (\[.*\])", done.stderr).groups()
    assert slow == "[]" and int(count) <= most, done.stderr[-2000:]


def test_eval_refuses_questions_the_index_holds_as_references(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Evaluated on its own references, an index would find each question's own row among its neighbours."""
    from r2t2.data import load_split

    lines = []
    for i, sample in enumerate(load_split("test", limit=6)):
        sample.image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "question": sample.question, "answer": sample.answer}))
    (tmp_path / "mine.jsonl").write_text("\n".join(lines) + "\n")
    index_dir = str(tmp_path / "indexes")
    main(["index", "build", "--name", "mine", "--jsonl", str(tmp_path / "mine.jsonl"), "--index-dir", index_dir])
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(["eval", "--split", str(tmp_path / "mine.jsonl"), "--strategies", "none", "--index", "mine",
              "--index-dir", index_dir])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "holds, as references," in err and "--allow-overlap" in err
    main(["eval", "--split", str(tmp_path / "mine.jsonl"), "--strategies", "none", "--index", "mine",
          "--index-dir", index_dir, "--allow-overlap"])
    assert "WARNING: index 'mine' holds, as references," in capsys.readouterr().out
