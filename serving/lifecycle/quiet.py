"""A quiet server log: third-party messages that are expected and harmless on this set-up are dropped.

Each entry below says why the message is harmless here; anything else a library logs still shows, and
`r2t2 serve --verbose` shows these too. The server's own process installs the filters, and marks the
environment (`QUIET_ENV`) so that every child interpreter it starts (Ray's workers, vLLM's engine core)
installs them first thing too: `serving/lifecycle/child_site/sitecustomize.py` calls `install()` there (on
PYTHONPATH once `serving.lifecycle.child_env.prepare_server_process` ran). A filter is attached to the logger
that emits the message, so it works whoever configures the handlers, and before they are configured (vLLM logs
some of these while it is being imported).
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass

QUIET_ENV = "R2T2_QUIET_LOGS"


@dataclass(frozen=True)
class Expected:
    """A message `logger` emits that tells an r2t2 user nothing about the server's health."""

    logger: str
    pattern: str  # matched (re.match) against the formatted message
    why: str


EXPECTED: tuple[Expected, ...] = (
    Expected("vllm.model_executor.models.utils",
             r"Attempted to load weight \S+ with dtype torch\.float32 into parameter with dtype "
             r"torch\.(bfloat16|float16)",
             "the shipped checkpoints are stored in float32 and served in `vllm.dtype` (bfloat16 by default): vLLM "
             "casts each tensor as it loads it, one line per tensor"),
    Expected("vllm.v1.engine.input_processor", r"Passing raw prompts to InputProcessor is deprecated",
             "the generator hands AsyncLLM.generate a prompt dict ({prompt_embeds}, or {prompt, multi_modal_data}) "
             "as vLLM 0.32's engine API documents; vLLM says once per engine that it plans another input type"),
    Expected("vllm.v1.worker.cpu_worker", r"lib(tcmalloc|iomp) is not found in LD_PRELOAD",
             "allocator and OpenMP advice for large models on CPU; the shipped language models are a few MB"),
    Expected("vllm.platforms.cpu", r"Triton is not installed\. triton-cpu is expected",
             "Triton kernels are optional on CPU; without them vLLM uses its native kernels"),
    Expected("vllm.triton_utils.importing", r"Triton is installed, but doesn't include CPU backend",
             "the same: the Triton wheel that comes with torch has no CPU backend, so vLLM does not use it"),
    Expected("vllm.config.vllm", r"Model Runner V2 requires Triton",
             "follows from the above: vLLM's V1 model runner serves these models"),
    Expected("vllm.config.vllm", r"Enforce eager set",
             "r2t2 asks for eager mode (`vllm.enforce_eager`): compiling graphs costs start-up time and gains "
             "nothing for models this small"),
    Expected("vllm.config.vllm", r"Inductor compilation was disabled by user settings", "follows from eager mode"),
    Expected("vllm.engine.arg_utils", r"The global random seed is set to \d+\. Since VLLM_ENABLE_V1_MULTIPROCESSING",
             "vLLM's engine core runs in its own process in any case (AsyncLLM); the variable only keeps its model "
             "worker in that process (serving/backends/vllm_process.py), so this process's random state is untouched"),
    Expected("ray._private.authentication.authentication_token_setup", r"Token authentication is enabled",
             "Ray's default; docs/operations.md says where the token lives and how to turn it off"),
    Expected("ray._private.worker", r"Started a local Ray instance",
             "r2t2's own start-up line says when Ray started, with its seconds"),
    Expected("ray.serve", r'Started Serve in namespace "serve"',
             "r2t2's own start-up line says when Serve started, with its seconds"),
    Expected("ray.serve", r"Started <ray\.serve\._private\.router\.SharedRouterLongPollClient",
             "the repr of an internal connection object, logged by every replica at start-up"),
    Expected("ray.serve", r'Connecting to existing Serve app in namespace "serve"',
             "r2t2 starts Serve itself (to set the HTTP address) before it deploys the application"),
)

# Python warnings (category, message pattern, why).
EXPECTED_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"`torch\.distributed\.reduce_op` is deprecated",
     "vLLM's Triton helpers look at every attribute of torch.distributed while importing, this deprecated alias too"),
)

# Environment for the whole process tree: vLLM's INFO lines (its configuration, step by step) give way to
# r2t2's own start-up lines, and transformers' per-file weight-loading bars are left out (loads take < 1 s).
ENVIRONMENT = {"VLLM_LOGGING_LEVEL": "WARNING", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class _DropExpected(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self._pattern.match(record.getMessage()) is None


def install() -> None:
    """Drop the expected messages in this process (idempotent)."""
    patterns: dict[str, list[str]] = {}
    for expected in EXPECTED:
        patterns.setdefault(expected.logger, []).append(expected.pattern)
    for name, found in patterns.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) for f in logger.filters):
            logger.addFilter(_DropExpected(found))
    for category, pattern, _ in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def quiet_logs(verbose: bool) -> None:
    """In the server's process, before Ray starts: quiet this process and every child it starts, unless
    `verbose` (then nothing is dropped or lowered anywhere)."""
    if verbose:
        return
    os.environ[QUIET_ENV] = "1"
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # a user's own setting wins
    install()
