"""One entry point for every built-in split: which source serves which task, and balanced subsets."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from r2t2.data import digits, easyvqa, scenes
from r2t2.data.jsonl import load_jsonl
from r2t2.data.paraphrase import paraphrase_sample, rephrased_sample, validation_sample
from r2t2.data.sample import SPLITS, TASKS, Sample


@dataclass(frozen=True)
class _Source:
    tasks: tuple[str, ...]
    load: Callable[[str], tuple[Sample, ...]]  # takes "train", "reference" or "test"


_SOURCES: tuple[_Source, ...] = (
    _Source(easyvqa.TASKS, easyvqa.load_easyvqa),
    _Source(scenes.TASKS, scenes.load_scenes),
    _Source(digits.TASKS, digits.load_digits),
)


@cache
def _paraphrased(source: _Source) -> tuple[Sample, ...]:
    return tuple(paraphrase_sample(sample) for sample in source.load("test"))


@cache
def _rephrased(source: _Source) -> tuple[Sample, ...]:
    return tuple(rephrased_sample(sample) for sample in source.load("test"))


@cache
def _validation(source: _Source) -> tuple[Sample, ...]:
    return tuple(validation_sample(sample) for sample in source.load("train"))


def _source_split(source: _Source, split: str) -> tuple[Sample, ...]:
    if split == "paraphrase":
        return _paraphrased(source)
    if split == "rephrased":
        return _rephrased(source)
    return _validation(source) if split == "paraphrase-val" else source.load(split)


def _checked_tasks(tasks: Iterable[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return TASKS
    if isinstance(tasks, str):
        tasks = (tasks,)
    chosen = tuple(dict.fromkeys(tasks))
    unknown = [task for task in chosen if task not in TASKS]
    if unknown or not chosen:
        raise ValueError(f"unknown or no tasks {unknown or list(chosen)}; valid: {TASKS}")
    return chosen


def _quotas(available: dict[str, int], limit: int) -> dict[str, int]:
    """Split `limit` as evenly as the tasks allow; what a small task cannot fill goes to the others."""
    quotas = {}
    remaining = limit
    by_size = sorted(available, key=lambda task: (available[task], task))
    for i, task in enumerate(by_size):
        quotas[task] = min(available[task], remaining // (len(by_size) - i))
        remaining -= quotas[task]
    return quotas


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def load_split(
    split: str, tasks: Iterable[str] | None = None, limit: int | None = None, seed: int = 0
) -> list[Sample]:
    """Samples of a split for the given tasks (default all).

    With `limit`, a seeded draw of at most `limit` samples, balanced across the requested tasks and
    shuffled; without it, every sample in a fixed order. The same arguments always give the same list.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    wanted = _checked_tasks(tasks)
    _check_limit(limit)
    samples = [
        sample
        for source in _SOURCES if set(source.tasks) & set(wanted)
        for sample in _source_split(source, split) if sample.task in wanted
    ]
    return samples if limit is None else _draw(samples, wanted, limit, seed)


def _draw(samples: list[Sample], tasks: Iterable[str], limit: int, seed: int) -> list[Sample]:
    """A seeded, shuffled draw of at most `limit` samples, balanced across `tasks`."""
    by_task: dict[str, list[Sample]] = {task: [] for task in tasks}
    for sample in samples:
        by_task[sample.task].append(sample)
    rng = random.Random(seed)
    quotas = _quotas({task: len(items) for task, items in by_task.items()}, limit)
    drawn = [sample for task in by_task for sample in rng.sample(by_task[task], quotas[task])]
    rng.shuffle(drawn)
    return drawn


def load_samples(split: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
    """A built-in split by name, or a user's JSONL file by a path ending in `.jsonl` (`{"image", "question",
    "answer"}` lines, see r2t2.data.jsonl): what `r2t2 eval --split` takes. `limit` draws as `load_split`
    does, balanced over the tasks the file names (all "user" unless its lines say otherwise)."""
    if not split.endswith(".jsonl"):
        return load_split(split, limit=limit, seed=seed)
    _check_limit(limit)
    samples = load_jsonl(split)
    return samples if limit is None else _draw(samples, dict.fromkeys(s.task for s in samples), limit, seed)
