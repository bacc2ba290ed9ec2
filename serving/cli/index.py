"""`r2t2 index build|list|inspect|rm` (and the verified answers' verbs, serving/cli/feedback.py): manage reference
indexes from the command line."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from serving.cli import feedback


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `index` verb and its sub-verbs to the top-level CLI parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index-dir", default=None, help="index root (default: $R2T2_INDEX_DIR or <repo>/var/indexes)")
    index = subparsers.add_parser("index", help="build, list, inspect and remove reference indexes")
    verbs = index.add_subparsers(dest="index_verb", required=True)

    build = verbs.add_parser("build", parents=[common], help="build a new version from a data set")
    build.add_argument("--name", required=True)
    build.add_argument("--model", default="embedded", help="checkpoint directory or shipped family name")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--split", default=None, help="built-in split (default: reference)")
    source.add_argument("--jsonl", default=None, metavar="PATH", help="samples from a JSONL file")
    build.add_argument("--tasks", default=None, help="comma-separated tasks of the built-in split")
    build.add_argument("--limit", type=int, default=None, help="samples drawn from the built-in split")
    build.add_argument("--embedder", default="minilm", help="minilm (all-MiniLM-L6-v2) or image+question")
    build.add_argument("--index-type", default="auto", help="auto, flat, hnsw or ivf (FAISS)")
    build.add_argument("--cap", type=int, default=5000, help="most correctly answered samples kept")
    build.add_argument("--batch-size", type=int, default=64)
    build.set_defaults(func=_build)

    listing = verbs.add_parser("list", parents=[common], help="indexes, or the versions of one index")
    listing.add_argument("name", nargs="?")
    listing.set_defaults(func=_list)

    inspect = verbs.add_parser("inspect", parents=[common], help="manifest of one version (CURRENT by default)")
    inspect.add_argument("name")
    inspect.add_argument("--version", type=int, default=None)
    inspect.add_argument("--verify", action="store_true", help="also check every file's checksum by loading it")
    inspect.set_defaults(func=_inspect)

    rm = verbs.add_parser("rm", parents=[common], help="remove one version (--version) or a whole index (--all)")
    rm.add_argument("name")
    target = rm.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", type=int)
    target.add_argument("--all", action="store_true")
    rm.add_argument("--force", action="store_true", help="allow removing the CURRENT version")
    rm.set_defaults(func=_rm)
    feedback.register(verbs, common)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def _build(args: argparse.Namespace) -> None:
    from indexes.store import IndexStore, validate_name
    from indexes.vectors import INDEX_TYPES

    validate_name(args.name)  # before the slow part: loading data and model
    if args.index_type not in ("auto", *INDEX_TYPES):
        raise ValueError(f"--index-type: {args.index_type!r} is not one of auto, {', '.join(INDEX_TYPES)}")
    if args.jsonl and (args.tasks or args.limit):
        raise ValueError("--tasks and --limit apply to built-in splits, not to --jsonl")
    from indexes.build import build_index
    from indexes.embedders import neighbour_embedder
    from r2t2.model import load_model

    samples, spec = _samples(args)
    model = load_model(args.model)
    embedder = neighbour_embedder(args.embedder, model)
    manifest = build_index(args.name, samples, model, embedder, IndexStore(args.index_dir), spec,
                           index_type=args.index_type, batch_size=args.batch_size, cap=args.cap)
    print(f"built {manifest.name} v{manifest.version}: kept {manifest.kept} of {manifest.seen} samples "
          f"({manifest.index_type}, {manifest.build_seconds:.1f}s); now CURRENT")


def _samples(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    if args.jsonl:
        from r2t2.data import load_jsonl

        path = Path(args.jsonl).resolve()
        return load_jsonl(path), {"source": "jsonl", "path": str(path)}
    from r2t2.data import load_split

    split = args.split or "reference"
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    spec = {"source": "builtin", "split": split, "tasks": tasks, "limit": args.limit}
    return load_split(split, tasks=tasks, limit=args.limit), spec


def _list(args: argparse.Namespace) -> None:
    from indexes.store import IndexStore

    store = IndexStore(args.index_dir)
    if args.name is None:
        rows = []
        for name in store.names():
            current = store.current_version(name)
            m = store.manifest(name, current) if current is not None else None
            rows.append([name, current, len(store.versions(name)), m and m.kept, m and m.index_type,
                         m and m.embedder_name, m and m.model_fingerprint[:12], m and m.created_at])
        print(_table(["NAME", "CURRENT", "VERSIONS", "SIZE", "TYPE", "EMBEDDER", "MODEL", "CREATED"], rows)
              if rows else f"no indexes in {store.root}")
        return
    current = store.current_version(args.name)
    rows = []
    for version in store.versions(args.name):
        m = store.manifest(args.name, version)
        rows.append([f"{'*' if version == current else ' '}v{version}", m.kept, m.seen, m.index_type,
                     f"{m.build_seconds:.1f}", m.created_at, _dataset(m.dataset)])
    print(_table(["VERSION", "SIZE", "SEEN", "TYPE", "BUILD_S", "CREATED", "DATASET"], rows)
          if rows else f"index {args.name!r} has no finished versions")


def _dataset(spec: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in spec.items() if v is not None)


def _inspect(args: argparse.Namespace) -> None:
    from indexes.errors import UnknownIndexError
    from indexes.reference_index import ReferenceIndex
    from indexes.store import IndexStore

    store = IndexStore(args.index_dir)
    version = args.version if args.version is not None else store.current_version(args.name)
    if version is None:
        raise UnknownIndexError(f"index {args.name!r} has no CURRENT version; pass --version")
    m = store.manifest(args.name, version)
    fields = [
        ("name", m.name), ("version", f"v{m.version}"), ("current", version == store.current_version(args.name)),
        ("model fingerprint", m.model_fingerprint), ("embedder", f"{m.embedder_name} (dim {m.embedder_dim})"),
        ("dataset", _dataset(m.dataset)), ("samples seen", m.seen), ("kept (correct)", m.kept),
        ("index type", m.index_type), ("routing shape", "x".join(map(str, m.routing_shape))),
        ("payload fields", ", ".join(m.payload_fields)), ("build seconds", m.build_seconds),
        ("created at", m.created_at), ("directory", store.version_dir(args.name, version)),
    ]
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in fields))
    _, state = feedback.read_state(args)
    print("\n".join(feedback.summary(state)))
    print()
    print(_table(["FILE", "BYTES", "SHA256"], [[f, r.bytes, r.sha256] for f, r in sorted(m.files.items())]))
    if args.verify:
        ReferenceIndex.load(store, args.name, version)
        print("\nverified: every checksum matches and the index loads")


def _rm(args: argparse.Namespace) -> None:
    from indexes.store import IndexStore

    store = IndexStore(args.index_dir)
    if args.all:
        store.remove_index(args.name)
        print(f"removed index {args.name}")
    else:
        store.remove_version(args.name, args.version, force=args.force)
        print(f"removed {args.name} v{args.version}")
