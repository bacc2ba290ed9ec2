"""The shipped Qwen3-VL-MoE checkpoint is a plain Hugging Face directory: transformers and vLLM each load it
with their own code and give the same greedy answers.

The loaders (`bench/qwen3vl_agreement.py`) use transformers and vLLM alone; r2t2 supplies the torchvision
fix and the questions, nothing that loads or runs the model.
"""
import pytest

from bench.qwen3vl_agreement import CHECKPOINT, transformers_answers, vllm_answers
from r2t2.data import load_split

QUESTIONS = 12


@pytest.mark.slow
def test_transformers_and_vllm_load_the_shipped_checkpoint_and_answer_alike() -> None:
    samples = load_split("test", limit=QUESTIONS, seed=7)  # two questions of each task
    images, questions = [s.image for s in samples], [s.question for s in samples]
    expected = transformers_answers(CHECKPOINT, images, questions)
    got, _ = vllm_answers(CHECKPOINT, images, questions)
    assert got == expected
    colours = [(answer, sample.answer) for answer, sample in zip(expected, samples) if sample.task == "color"]
    assert len(colours) == 2 and all(a == b for a, b in colours)  # the trained weights were read (98.8 % on colour)
