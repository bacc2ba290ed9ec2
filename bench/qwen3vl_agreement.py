"""The shipped Qwen3-VL-MoE checkpoint read by plain transformers and by plain vLLM: engine start-up, greedy
answers of both, and on how many questions they agree.

The two loaders below use transformers and vLLM alone, as a user with the directory would; r2t2 supplies
only the torchvision fix (`r2t2.compat`, needed beside the CPU torch; `main` applies it here and, through
`serving.lifecycle.child_env`, in vLLM's engine processes) and, in `main`, the questions.
tests/test_qwen3vl_checkpoint.py runs the same two.

    .venv/bin/python -m bench.qwen3vl_agreement [--questions 120] [--checkpoint DIR] [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

import r2t2
from serving.lifecycle.child_env import prepare_server_process

CHECKPOINT = Path(r2t2.__file__).parent / "assets" / "qwen3vl"


def chat_prompt(processor, question: str) -> str:  # noqa: ANN001 (a transformers processor)
    """One user turn with one image and the question, then the assistant's turn: the checkpoint's template."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def transformers_answers(checkpoint: Path, images: Sequence[Image.Image], questions: Sequence[str],
                         max_tokens: int = 4) -> list[str]:
    """Greedy answers from `AutoModelForImageTextToText`, one question at a time (no padding, as vLLM runs)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    answers = []
    for image, question in zip(images, questions, strict=True):
        inputs = processor(images=[image], text=[chat_prompt(processor, question)], return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        answers.append(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def vllm_answers(checkpoint: Path, images: Sequence[Image.Image], questions: Sequence[str],
                 max_tokens: int = 4, dtype: str = "float32") -> tuple[list[str], float]:
    """Greedy answers from `vllm.LLM`, the image through vLLM's own multimodal processor; and the seconds
    the engine took to start."""
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    processor = AutoProcessor.from_pretrained(checkpoint)
    prompts = [{"prompt": chat_prompt(processor, q), "multi_modal_data": {"image": image}}
               for image, q in zip(images, questions, strict=True)]
    started = time.perf_counter()
    llm = LLM(model=str(checkpoint), dtype=dtype, max_model_len=256, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 1, "video": 0})
    start_seconds = time.perf_counter() - started
    try:
        outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    finally:
        del llm
    return [output.outputs[0].text.strip() for output in outputs], start_seconds


def main() -> None:
    prepare_server_process()  # transformers and vLLM's engine process import torchvision
    from r2t2.data import load_split
    from r2t2.data.answers import same_answer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=120, help="test questions, balanced over the tasks")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--dtype", default="float32", help="vLLM's weights and activations (transformers: float32)")
    args = parser.parse_args()
    samples = load_split("test", limit=args.questions, seed=11)
    images, questions = [s.image for s in samples], [s.question for s in samples]
    started = time.perf_counter()
    expected = transformers_answers(args.checkpoint, images, questions)
    hf_seconds = time.perf_counter() - started
    started = time.perf_counter()
    got, start_seconds = vllm_answers(args.checkpoint, images, questions, dtype=args.dtype)
    vllm_seconds = time.perf_counter() - started - start_seconds
    right = [s.answer for s in samples]
    print(f"questions: {len(samples)} (test split, seed 11)")
    print(f"transformers: {hf_seconds:.1f} s with loading, one question at a time; "
          f"accuracy {100 * sum(map(same_answer, expected, right)) / len(samples):.1f} %")
    print(f"vLLM ({args.dtype}): engine start {start_seconds:.1f} s, {vllm_seconds:.1f} s for all questions in one call; "
          f"accuracy {100 * sum(map(same_answer, got, right)) / len(samples):.1f} %")
    print(f"same greedy answer: {sum(a == b for a, b in zip(got, expected))} of {len(samples)}")


if __name__ == "__main__":
    main()
