"""Stopping a real server each way a user or a supervisor does, and finding what it left running.

Shared by tests/test_serving_stopping.py (each way once, in CI) and bench/stop_bench.py (each way several times).
A server is `python -m serving.run` with the embedded model on vLLM: Ray, the four deployments, a vLLM engine
core with its worker and resource tracker. Every process it starts inherits a marker in its environment, so
whatever is left after a stop is found by the marker, never by name. `ray stop` stops every Ray process on the
machine, so that way runs the server in a PID namespace of its own (unshare), where `ray stop` sees only it. A
container's stop (`docker stop`, Kubernetes) sends SIGTERM to the container's first process, which is the server
(deploy/Dockerfile's CMD): that way runs the server as the first process of a PID namespace of its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from bench.faults import FAMILY, MODEL, copy_or_build_index
from deploy.local_cluster import free_port
from serving.lifecycle.stopping import tagged_processes

ROOT = Path(__file__).resolve().parents[1]
MARKER = "R2T2_STOP_WAYS"
CONTAINER = "a container's stop"
WAYS = ("Ctrl-C in a terminal", "SIGINT to the server", "SIGTERM to the server", "SIGTERM to its process group",
        "ray stop", CONTAINER)
NAMESPACED = ("ray stop", CONTAINER)  # the ways that run the server in a PID namespace of its own
START_TIMEOUT_S = 600.0
# The first process of the PID namespace does what init does: starts the server, then collects every process that
# ends in the namespace (orphans are handed to it), so an exited process is gone, not left as a zombie.
NAMESPACE_INIT = """
import os, subprocess, sys, time
subprocess.Popen(sys.argv[1:])
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


def write_config(directory: Path) -> Path:
    """A server config: the embedded model on vLLM, its default index ready in `directory`, a free port."""
    copy_or_build_index(directory / "indexes")
    small = {"num_cpus": 0.1}
    path = directory / "server.yaml"
    path.write_text(yaml.safe_dump({
        "port": free_port(), "index_dir": str(directory / "indexes"), "vllm": {"kv_cache_gib": 1},
        "models": [{"name": MODEL, "pipeline": {"checkpoint": FAMILY}}],
        "ingress": small, "rerouter": small, "generator": small, "indexes": small}))
    return path


def namespaces_allowed() -> bool:
    """Whether this machine lets us start a PID namespace (needed for the `ray stop` way)."""
    return shutil.which("unshare") is not None and shutil.which("nsenter") is not None and subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode == 0


@dataclass
class Launched:
    way: str
    process: subprocess.Popen  # the server, or for `ray stop` the `unshare` that holds its PID namespace
    marker: str
    log: Path
    terminal: int | None = None  # the terminal's controlling end, when the server runs in one

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def namespace_init(self) -> psutil.Process | None:
        """The first process of the server's PID namespace (the namespaced ways only; in a container's stop, the
        server itself); killing it ends the namespace."""
        if self.way not in NAMESPACED:
            return None
        return psutil.Process(self.process.pid).children()[0]

    def server(self) -> psutil.Process:
        init = self.namespace_init()
        if init is None:
            return psutil.Process(self.process.pid)
        if self.way == CONTAINER:
            return init
        return next(p for p in init.children() if "serving.run" in p.cmdline())

    def left(self) -> list[psutil.Process]:
        """Every running process with the marker, but those that hold the namespace (`unshare`, and for `ray stop`
        the namespace's init): they are the bench's, not the server's."""
        own = {self.process.pid}
        if self.way == "ray stop":
            own.add(self.namespace_init().pid)
        return [p for p in tagged_processes(self.marker, MARKER) if p.pid not in own]

    def after_stopped(self) -> list[str]:
        """The lines the server logged after its final "r2t2 stopped in" line (a clean stop logs none)."""
        lines = self.text().splitlines()
        last = max((i for i, line in enumerate(lines) if "r2t2 stopped in" in line), default=len(lines) - 1)
        return [line for line in lines[last + 1:] if line.strip()]

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "r2t2 serving on" not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.text()[-3000:]}")
            time.sleep(1)

    def kill(self) -> None:
        """Whatever state it is in: kill every process of this launch."""
        for process in self.left():
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(psutil.Error, IndexError):
            if (init := self.namespace_init()) is not None:
                init.kill()  # ends every process left in the namespace
        self.process.kill()
        self.process.wait()
        if self.terminal is not None:
            os.close(self.terminal)
            self.terminal = None


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "serving.run", "--config", str(config), "--num-cpus", "2"]


def _in_background() -> None:
    """What `cmd &` in a script does: SIGINT ignored; a session of its own keeps it off our terminal."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_terminal() -> None:
    """A session whose controlling terminal is the pty on stdin, as in a terminal window."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def launch(config: Path, log: Path, way: str) -> Launched:
    """Start a server the way `way` needs it started (in a terminal, in the background, in a PID namespace)."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER: marker}
    if way == "Ctrl-C in a terminal":
        log.touch()  # the copying thread opens it later: read before that, it is there and empty
        terminal, user_side = pty.openpty()
        process = subprocess.Popen(_command(config), cwd=ROOT, env=env, stdin=user_side, stdout=user_side,
                                   stderr=user_side, preexec_fn=_in_terminal)
        os.close(user_side)
        threading.Thread(target=_copy, args=(terminal, log), daemon=True).start()
        return Launched(way, process, marker, log, terminal)
    with log.open("wb") as output:
        if way in NAMESPACED:
            first = [sys.executable, "-c", NAMESPACE_INIT] if way == "ray stop" else []
            process = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--", *first, *_command(config)],
                                       cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                       preexec_fn=_in_background)
        else:
            process = subprocess.Popen(_command(config), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, preexec_fn=_in_background)
    return Launched(way, process, marker, log)


def _copy(terminal: int, log: Path) -> None:
    """Read the terminal as a terminal window does (a full pty would block the server's writes)."""
    with log.open("ab") as output:
        while True:
            try:
                data = os.read(terminal, 65536)
            except OSError:
                return
            if not data:
                return
            output.write(data)
            output.flush()


def stop(launched: Launched, within_s: float = 15.0) -> tuple[float, list[str]]:
    """Stop the server its way. Returns the seconds until none of its processes ran (`within_s` at most) and
    'pid name' of each one still running then."""
    server = launched.server()
    started = time.monotonic()
    command = None
    if launched.way == "Ctrl-C in a terminal":
        os.write(launched.terminal, b"\x03")  # the terminal sends SIGINT to its foreground process group
    elif launched.way == "SIGINT to the server":
        server.send_signal(signal.SIGINT)
    elif launched.way in ("SIGTERM to the server", CONTAINER):
        server.send_signal(signal.SIGTERM)
    elif launched.way == "SIGTERM to its process group":
        os.killpg(server.pid, signal.SIGTERM)  # systemd's stop, for a server that leads its group
    else:
        ray = Path(sys.executable).with_name("ray")
        command = subprocess.Popen(["nsenter", "-t", str(launched.namespace_init().pid), "-p", "-m", str(ray), "stop"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.monotonic() - started < within_s and launched.left():
        time.sleep(0.25)
    seconds = time.monotonic() - started
    left = [f"{p.pid} {p.name()}" for p in launched.left()]
    if command is not None and command.wait(60) != 0:
        raise RuntimeError("ray stop failed")
    return seconds, left
