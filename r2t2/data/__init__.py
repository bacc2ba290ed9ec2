"""Data sets and the one sample format they share."""
from r2t2.data.jsonl import load_jsonl
from r2t2.data.sample import SPLITS, TASKS, Sample
from r2t2.data.splits import load_samples, load_split
from r2t2.data.vocabulary import training_vocabulary

__all__ = ["SPLITS", "TASKS", "Sample", "load_jsonl", "load_samples", "load_split", "training_vocabulary"]
