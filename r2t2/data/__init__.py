"""Data sets and the one sample format they share."""
from r2t2.data.sample import SPLITS, TASKS, Sample
from r2t2.data.splits import load_split

__all__ = ["SPLITS", "TASKS", "Sample", "load_split"]
