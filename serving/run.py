"""Start the server on this machine: `python -m serving.run [--config server.yaml]`."""
from __future__ import annotations

import argparse
import signal
import threading

import r2t2  # noqa: F401  (torchvision fix before anything imports transformers)

from serving.app import build_app
from serving.config import ServerConfig


def run_server(config: ServerConfig, num_cpus: int | None = None) -> None:
    """Run until SIGINT/SIGTERM, then shut the deployments (and their engines) down."""
    import ray
    from ray import serve

    ray.init(num_cpus=num_cpus)
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        serve.run(build_app(config), name="r2t2", route_prefix="/")
        print(f"r2t2 serving on http://{config.host}:{config.port}/v1", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="YAML server config (defaults apply when left out)")
    parser.add_argument("--host", help="override the config's host (a container needs 0.0.0.0)")
    parser.add_argument("--port", type=int, help="override the config's port")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    config = ServerConfig.from_yaml(args.config, **overrides) if args.config else ServerConfig(**overrides)
    run_server(config, args.num_cpus)


if __name__ == "__main__":
    main()
