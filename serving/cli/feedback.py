"""`r2t2 index feedback|feedback-rm|compact`: the references verified answers added to an index, from its log.

Listing and compaction read the log without its lock, so they work beside a running server; removal writes to it,
so it needs the log to itself (with a server running, remove over HTTP: DELETE /v1/references).
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from typing import Any


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the feedback sub-verbs to `r2t2 index`."""
    listing = verbs.add_parser("feedback", parents=[common], help="verified answers of an index and their fate")
    listing.add_argument("name")
    _filters(listing)
    listing.add_argument("--status", choices=("accepted", "added", "refused", "removed"), default=None)
    listing.set_defaults(func=_list)

    rm = verbs.add_parser("feedback-rm", parents=[common], help="take verified answers' references out of an index")
    rm.add_argument("name")
    _filters(rm)
    rm.set_defaults(func=_remove)

    compact = verbs.add_parser("compact", parents=[common],
                               help="write an index grown by verified answers out as its next version")
    compact.add_argument("name")
    compact.set_defaults(func=_compact)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", action="append", default=None, help="a verified answer's id (repeatable)")
    parser.add_argument("--source", default=None, help="the token name that sent them (admin, or a feedback token's)")
    parser.add_argument("--since", default=None, help="accepted at or after (ISO 8601 or Unix seconds)")
    parser.add_argument("--until", default=None, help="accepted before (ISO 8601 or Unix seconds)")


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise ValueError(f"a time must be ISO 8601 or Unix seconds, got {text!r}") from None


def read_state(args: argparse.Namespace) -> Any:
    """The index's store and its feedback log folded (read without the writer's lock)."""
    from indexes.feedback_log import LOG_FILE, LogTail
    from indexes.feedback_state import FeedbackState
    from indexes.store import IndexStore

    store = IndexStore(args.index_dir)
    store.versions(args.name)  # UnknownIndexError for an index that does not exist
    state = FeedbackState()
    state.fold(LogTail(store.index_dir(args.name) / LOG_FILE).read_new())
    return store, state


def _chosen(args: argparse.Namespace, state: Any) -> list[Any]:
    since, until = _when(args.since), _when(args.until)
    return [item for item in state.items.values()
            if (args.id is None or item.id in args.id) and (args.source is None or item.source.get("token") ==
                                                            args.source)
            and (since is None or item.at >= since) and (until is None or item.at < until)
            and (getattr(args, "status", None) is None or item.status == args.status)]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


def summary(state: Any) -> list[str]:
    """What `r2t2 index inspect` says of an index's verified answers: counts, and who sent them when."""
    counts = state.counts()
    if not counts["accepted"]:
        return ["verified answers  none"]
    lines = [f"verified answers  {counts['accepted']} accepted: {counts['live']} served as references, "
             f"{counts['waiting']} waiting, {counts['refused']} refused, {counts['removed']} removed"]
    by_source: dict[str, list[float]] = {}
    for item in state.items.values():
        by_source.setdefault(item.source.get("token", "?"), []).append(item.at)
    for source, times in sorted(by_source.items()):
        lines.append(f"  from {source}: {len(times)}, {_iso(min(times))} to {_iso(max(times))}")
    return lines


def _list(args: argparse.Namespace) -> None:
    _, state = read_state(args)
    items = _chosen(args, state)
    if not items:
        print("no verified answers match")
        return
    for item in items:
        why = f" ({item.reason})" if item.reason else ""
        print(f"{item.id}  {item.status}{why}  {item.source.get('token', '?')}  {_iso(item.at)}  "
              f"{item.question!r} -> {item.answer!r}")


def _remove(args: argparse.Namespace) -> None:
    from indexes.feedback_log import LOG_FILE, FeedbackLog, FeedbackLogBusy
    from indexes.feedback_state import removed

    if args.id is None and args.source is None and args.since is None and args.until is None:
        raise ValueError("say which verified answers to remove: --id, --source, --since or --until")
    store, state = read_state(args)
    live = [item.id for item in _chosen(args, state) if item.status in ("accepted", "added")]
    if not live:
        print("nothing to remove")
        return
    try:
        log = FeedbackLog.open(store.index_dir(args.name) / LOG_FILE)
    except FeedbackLogBusy:
        raise ValueError(f"a running server holds index {args.name!r}'s feedback log: remove over HTTP "
                         f"(DELETE /v1/references, docs/api.md)") from None
    try:
        log.append([removed(live, "removed", "command line")])
    finally:
        log.close()
    print(f"removed {len(live)} verified answers from {args.name} at {_iso(time.time())}")


def _compact(args: argparse.Namespace) -> None:
    from indexes.compact import compact
    from indexes.growth import grown
    from indexes.reference_index import ReferenceIndex

    store, state = read_state(args)
    version = ReferenceIndex.load(store, args.name)
    manifest = compact(store, grown(version, state), state.last_seq)
    print(f"compacted {args.name} v{version.version} and {manifest.kept - version.size} net references from verified "
          f"answers into v{manifest.version} ({manifest.kept} references); now CURRENT")
