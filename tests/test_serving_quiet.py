"""The quiet log: expected third-party messages are dropped, here and in child interpreters; others still show."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from serving.lifecycle.quiet import ENVIRONMENT, EXPECTED, QUIET_ENV, install, quiet_logs


def test_expected_messages_are_dropped_and_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    install()
    loader = logging.getLogger("vllm.model_executor.models.utils")
    with caplog.at_level(logging.WARNING):
        loader.warning("Attempted to load weight %s with dtype %s into parameter with dtype %s", "norm.weight",
                       "torch.float32", "torch.bfloat16")
        loader.warning("Attempted to load weight %s with dtype %s into parameter with dtype %s", "norm.weight",
                       "torch.float16", "torch.float32")  # not what the checkpoints hold: a real surprise
        loader.error("the weights do not fit")
    assert [record.getMessage() for record in caplog.records] == [
        "Attempted to load weight norm.weight with dtype torch.float16 into parameter with dtype torch.float32",
        "the weights do not fit"]
    assert all(len(expected.why) > 20 for expected in EXPECTED)


def test_verbose_changes_nothing_and_quiet_marks_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (QUIET_ENV, *ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)
    quiet_logs(verbose=True)
    assert not {QUIET_ENV, *ENVIRONMENT} & set(os.environ)
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")  # a user's own setting wins
    quiet_logs(verbose=False)
    assert os.environ[QUIET_ENV] == "1" and os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"


def test_a_child_interpreter_drops_them_before_any_library_logs() -> None:
    """This process is prepared as a server's (conftest's `pytest_configure`): its children start with the child
    site (serving/lifecycle/child_site), which reads the quiet mark."""
    code = ("import logging, sys; log = logging.getLogger('vllm.platforms.cpu')\n"
            "log.warning('Triton is not installed. triton-cpu is expected on x86 CPUs.')\n"
            "log.warning('kept'); print('torch' in sys.modules)")
    for quiet, expected in (("1", "kept\n"), ("", "Triton is not installed. triton-cpu is expected on x86 CPUs.\nkept\n")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, QUIET_ENV: quiet})
        assert done.returncode == 0 and done.stderr == expected, done.stderr
        assert done.stdout.strip() == "False"  # the hook that runs first imports nothing heavy
