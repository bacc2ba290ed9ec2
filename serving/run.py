"""Start the server on this machine: `python -m serving.run [--config server.yaml]`.

Start-up either completes or exits non-zero with one error line per problem: the config is validated,
every model's pipeline is built once in this process (preflight, once Ray runs), and a deployment that
still fails to start (e.g. an LM that vLLM cannot load) makes Serve report the application failed, never
a silent retry.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from contextlib import nullcontext
from typing import Any

from serving.config import ADMIN_TOKEN_ENV, ConfigFileError, ServerConfig
from serving.deployments.placement import current_placement, placement_lines
from serving.lifecycle.child_env import prepare_server_process
from serving.lifecycle.preflight import StartupError, check_models
from serving.lifecycle.progress import StartupProgress
from serving.lifecycle.quiet import quiet_logs
from serving.lifecycle.startup import import_in_background
from serving.lifecycle.supervisor import is_server_process, supervise
from serving.lifecycle.stopping import (ClusterWatch, StopRequested, catch_stop_signals, ignore_stop_signals, shut_down,
                                        stop_signals, tag_processes)

APP_NAME = "r2t2"
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception): ")


def deploy(config: ServerConfig, name: str = APP_NAME, route_prefix: str = "/",
           infos: dict[str, dict[str, Any]] | None = None, progress: StartupProgress | None = None) -> None:
    """`serve.run` the app; StartupError naming each deployment that failed to start (Serve is left running).

    `infos` are the start-up checks' findings per model (their generators then start at once); `progress`
    writes a line as each deployment becomes healthy.
    """
    from ray import serve

    from serving.deployments.app import build_app

    engines = {model: (info["lm_path"], info["engine_input"]) for model, info in (infos or {}).items()}
    try:
        with progress.deployments(name) if progress is not None else nullcontext():
            serve.run(build_app(config, engines), name=name, route_prefix=route_prefix)
    except RuntimeError as err:
        raise StartupError(_failed_deployments(name) or str(err).strip().splitlines()[-1]) from None


def _failed_deployments(app: str) -> str:
    """'Deployment: last line of its error' for every deployment Serve marks failed or unhealthy."""
    from ray import serve

    application = serve.status().applications.get(app)
    if application is None:
        return ""
    failed = []
    for name, deployment in application.deployments.items():
        if deployment.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            # Serve's message ends with the constructor's traceback: report its last exception line.
            lines = [line.strip() for line in (deployment.message or "").splitlines() if line.strip()]
            raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
            failed.append(f"deployment {name} failed to start: {(raised or lines or [deployment.status])[-1]}")
    return "; ".join(failed)


def describe(card: dict[str, Any]) -> str:
    """One start-up line per model: the limits and defaults a client would otherwise find out by surprise."""
    questions = card["max_question_tokens"]
    defaults, options = card["defaults"], card["r2t2_defaults"]
    return (f"r2t2 model {card['id']}: context {card['max_model_len']} positions (prompt + answer), questions up to "
            f"{'any length' if questions is None else f'{questions} tokens'}; defaults max_tokens "
            f"{defaults['max_tokens']}, temperature {defaults['temperature']}, strategy {options.get('strategy')}")


def ready_lines(config: ServerConfig, seconds: float) -> list[str]:
    """What is served where, once everything answers: the API, the playground, and whether admin calls work."""
    base = f"http://{config.host}:{config.port}"
    admin = (f"on (Authorization: Bearer ${ADMIN_TOKEN_ENV})" if config.admin_token is not None else
             f"off: start with {ADMIN_TOKEN_ENV} set to rebuild, activate or delete indexes (docs/api.md)")
    return [f"r2t2 serving on {base}/v1 after {seconds:.1f} s: {', '.join(config.model_names)}",
            f"r2t2 playground on {base}/playground/",
            f"r2t2 index admin {admin}"]


def run_server(config: ServerConfig, num_cpus: int | None = None, dashboard: bool = False,
               verbose: bool = False, address: str | None = None) -> None:
    """Check the models, start Ray (or attach to the cluster at `address`) and the app, and run until a stop
    signal or until the cluster is gone; then stop within seconds, leaving no process behind (serving/lifecycle/stopping.py).

    Each start-up phase is a line with its seconds (serving/lifecycle/progress.py); without `verbose`, messages of
    other libraries that are expected here are left out of the log (serving/lifecycle/quiet.py).
    """
    import ray
    from ray import serve

    quiet_logs(verbose)
    progress = StartupProgress()
    with stop_signals():
        watch, tag, reason, serving = None, None, "start-up failed", False
        imports = import_in_background(config)
        try:
            # Ray keeps its session (logs, sockets) under /tmp/ray; its dashboard (port 8265) only when asked for.
            with progress.phase("Ray started" if address is None else f"attached to the Ray cluster at {address}"):
                if address is None:
                    tag = tag_processes()  # what this server starts, it stops
                    ray.init(num_cpus=num_cpus, include_dashboard=dashboard)
                else:
                    ray.init(address=address)
            catch_stop_signals()
            watch = ClusterWatch()
            imports.join()
            infos = check_models(config, progress)  # a model that cannot load ends the start here, before Serve
            with progress.phase("Serve started"):
                serving = True
                serve.start(proxy_location=config.proxy_location,
                            http_options={"host": config.host, "port": config.port})
            deploy(config, infos=infos, progress=progress)
            for card in serve.get_app_handle(APP_NAME).models.remote().result().model_dump()["data"]:
                print(describe(card), flush=True)
            for line in placement_lines(current_placement(APP_NAME)):
                print(line, flush=True)
            for line in ready_lines(config, progress.elapsed()):
                print(line, flush=True)
            watch.wait()
            reason = "the Ray cluster is gone"
        except StopRequested as stop:
            reason = str(stop)
        finally:
            ignore_stop_signals()
            if tag is not None or watch is not None or reason != "start-up failed":  # else nothing was started
                _stop(watch, tag, reason, serving)


def _stop(watch: ClusterWatch | None, tag: str | None, reason: str, serving: bool) -> None:
    stopping = time.monotonic()
    print(f"r2t2 stopping ({reason})", flush=True)
    # Without Serve started, Serve would log it has nothing to shut down.
    left = shut_down(watch, tag, APP_NAME if serving else None)
    if left:
        print(f"r2t2 stopped {len(left)} processes it had started that were still running: {', '.join(left)}",
              flush=True)
    print(f"r2t2 stopped in {time.monotonic() - stopping:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    """`r2t2 serve`: check the arguments and the config here (a problem is one `error:` line, exit status 2),
    then run the server as a child in a session of its own and exit with its status (serving/lifecycle/supervisor.py);
    in that child, run it."""
    # Before anything imports transformers here, or Ray and vLLM start interpreters of their own.
    prepare_server_process()
    # Ray's APIs call ray.init() on first use; a Serve thread still running after ray.shutdown() would then start a
    # fresh local Ray instance while the server stops. Off, before anything imports ray (it reads this at import).
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="YAML server config (defaults apply when left out)")
    parser.add_argument("--host", help="override the config's host (a container needs 0.0.0.0)")
    parser.add_argument("--port", type=int, help="override the config's port")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    parser.add_argument("--dashboard", action="store_true", help="also start Ray's dashboard on 127.0.0.1:8265")
    parser.add_argument("--verbose", action="store_true",
                        help="log everything, also the libraries' messages that are expected here (serving/lifecycle/quiet.py)")
    parser.add_argument("--address", help="attach to a running Ray cluster instead of starting one: its head's "
                                          "HOST:PORT, or 'auto' ($RAY_ADDRESS, else the cluster `ray start` "
                                          "started on this machine)")
    args = parser.parse_args(argv)
    if args.address and (args.num_cpus is not None or args.dashboard):
        parser.error("--num-cpus and --dashboard set up the Ray instance r2t2 starts; with --address the "
                     "cluster's own settings apply")
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    source = args.config or "the default config"
    try:
        config = ServerConfig.from_yaml(args.config, **overrides) if args.config else ServerConfig(**overrides)
    except ConfigFileError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if not is_server_process():
        raise SystemExit(supervise([sys.executable, "-m", "serving.run", *(sys.argv[1:] if argv is None else argv)]))
    try:
        run_server(config, args.num_cpus, args.dashboard, args.verbose, args.address)
    except StartupError as err:
        print(f"error: {source}: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    _leave()


def _leave() -> None:
    """Exit 0 at once, once the server has stopped everything it started and said so. Finalising the interpreter
    would tear down Ray's core worker, whose threads go on logging about the processes just stopped (lines after
    the final one) and, with its cluster gone, can crash doing it (SIGSEGV: a supervisor reads a crash)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
