"""Every example in README.md and docs/ runs against the session's real server, read from the documents
themselves: a changed example is a tested one (tests/doc_examples.py says how blocks are read).

Each document's bash examples run in order as one shell session and its python examples in order in one
namespace, each in a fresh folder, as a reader following the document would run them. What the documents
write for a server on this machine is adapted to the session's server: its address, its data directory, and
the example index, which each session gets a name of its own (so the two sessions of one document do not
meet). An example passes when it ends without an error, no reply it prints is an OpenAI error object, and
it prints exactly the output the document shows under it, where it shows one.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from doc_examples import EXAMPLE_LANGUAGES, Block, blocks, examples
from serving.config import ServerConfig

if TYPE_CHECKING:
    from conftest import RealServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the documents write for a server started with `make serve` and the configs they show.
DOC_BASE, DOC_DATA_DIR, DOC_INDEX = "http://127.0.0.1:8000", "/srv/r2t2-data", "my-refs"
OPENAI_ERROR = re.compile(r"""["']error["']:\s*\{""")
TRACKS = [(document, language) for document in DOCUMENTS for language in EXAMPLE_LANGUAGES
          if examples(document, language)]
BASH_TIMEOUT_S = 600


def adapted(text: str, server: RealServer, index: str) -> str:
    return text.replace(DOC_BASE, server.base).replace(DOC_DATA_DIR, str(server.data_dir)).replace(DOC_INDEX, index)


def check_output(block: Block, printed: str, output: Block | None) -> None:
    assert not OPENAI_ERROR.search(printed), f"{block.where}: a call was refused:\n{printed}"
    if output is not None:
        assert printed.rstrip() == output.text.rstrip(), (
            f"{block.where} prints something else than {output.where} shows:\n{printed}")


def run_bash(pairs: list[tuple[Block, Block | None]], server: RealServer, index: str, folder: Path) -> None:
    marker = "@@doc-example {}@@"
    script = ["set -eo pipefail"]
    for number, (block, _) in enumerate(pairs):
        script += [f"echo '{marker.format(number)}'", adapted(block.text, server, index)]
    env = {**os.environ, "R2T2_ADMIN_TOKEN": server.admin_token,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=BASH_TIMEOUT_S)
    printed = re.split(r"^@@doc-example (\d+)@@\n", done.stdout, flags=re.MULTILINE)
    outputs = {int(number): text for number, text in zip(printed[1::2], printed[2::2])}
    if done.returncode != 0:
        failed = pairs[max(outputs, default=0)][0]
        pytest.fail(f"{failed.where} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for number, (block, output) in enumerate(pairs):
        check_output(block, outputs.get(number, ""), output)


def run_python(pairs: list[tuple[Block, Block | None]], server: RealServer, index: str,
               monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(ROOT))  # examples import from the repository as a reader's checkout does
    monkeypatch.setenv("R2T2_ADMIN_TOKEN", server.admin_token)
    namespace: dict[str, object] = {"__name__": "__doc_example__"}
    for block, output in pairs:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(adapted(block.text, server, index), block.where, "exec"), namespace)  # noqa: S102
        check_output(block, printed.getvalue(), output)


@pytest.mark.parametrize("document,language", TRACKS, ids=[f"{d.name}-{lang}" for d, lang in TRACKS])
def test_the_examples_run_as_documented(document: Path, language: str, real_server: RealServer,
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pairs = examples(document, language)
    index = f"{DOC_INDEX}-{document.stem.lower()}-{language}"
    if language == "bash":
        run_bash(pairs, real_server, index, tmp_path)
    else:
        run_python(pairs, real_server, index, monkeypatch, tmp_path)


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_every_block_is_an_example_a_config_or_an_illustration(document: Path) -> None:
    for block in blocks(document):
        if block.language == "yaml":  # a server config, or a part of one
            ServerConfig.model_validate(yaml.safe_load(block.text))
        elif block.language in EXAMPLE_LANGUAGES and block.not_run is not None:
            assert len(block.not_run) > 10, f"{block.where}: say why the example is not run"
        elif block.is_output:
            assert block.language in ("", "text"), f"{block.where}: an output block has no language or `text`"
