"""Neighbour losses from cached states against from images, and what a tail-only re-router holds.

    .venv/bin/python -m bench.tail_bench --model qwen3vl --references 32 --calls 5

For a Hugging Face image-text checkpoint: encodes `--references` reference samples (as an index build does,
keeping their states at the first routed layer), then times, side by side and `--repeats` times each, what
re-routing a batch of them costs: the first pass (everything before the answer positions, once per batch) and
`--calls` loss calls with their backward pass (NGD's steps), once from the images (the whole model) and once
from the cached states (the tail). Prints the medians, their ratio, the bytes of weights each way of loading
the model allocates (`weights: full` and `weights: tail`), and the cached states' bytes per reference.
"""
from __future__ import annotations

import argparse
import statistics
import time

from r2t2.compat import install_torchvision_fix

STATE_FIELDS = ("states", "positions", "deepstack")


def allocated_bytes(module) -> int:  # noqa: ANN001 (a torch module)
    """Bytes of the module's parameters that are allocated (meta tensors hold none)."""
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.device.type != "meta")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen3vl")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--references", type=int, default=32)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    install_torchvision_fix()
    import torch

    from r2t2.data import load_split
    from r2t2.model import load_model

    dtype = getattr(torch, args.dtype)
    model = load_model(args.model, dtype)
    samples = load_split("reference", limit=args.references, seed=0)
    encoded = model.encode_references(samples)
    routing = torch.from_numpy(encoded.routings)
    pinned = (True,) * routing.shape[1]
    payloads = {"images": {k: v for k, v in encoded.payload.items() if k not in STATE_FIELDS},
                "states": encoded.payload}
    seconds: dict[str, dict[str, list[float]]] = {name: {"first": [], "call": []} for name in payloads}
    for _ in range(args.repeats):
        for name, payload in payloads.items():  # side by side, alternating
            batch = model.reference_batch(payload)
            moved = routing.clone().requires_grad_(True)
            started = time.perf_counter()
            model.routing_loss(batch, moved, pinned).sum().backward()  # the first pass, then one call
            first = time.perf_counter() - started
            calls = []
            for _ in range(args.calls):
                started = time.perf_counter()
                model.routing_loss(batch, moved, pinned).sum().backward()
                calls.append(time.perf_counter() - started)
            seconds[name]["call"].append(statistics.median(calls))
            seconds[name]["first"].append(first - seconds[name]["call"][-1])
    print(f"{args.model} ({args.dtype}), {args.references} references per batch, {args.repeats} repeats, medians:")
    for name in payloads:
        print(f"  from {name:<6}: first pass {statistics.median(seconds[name]['first']) * 1000:8.1f} ms, "
              f"loss call + backward {statistics.median(seconds[name]['call']) * 1000:8.1f} ms")
    ratio = {part: statistics.median(seconds["states"][part]) / statistics.median(seconds["images"][part])
             for part in ("first", "call")}
    print(f"  states / images: first pass {ratio['first']:.2f}, loss call {ratio['call']:.2f}")
    states = sum(encoded.payload[f].nbytes for f in STATE_FIELDS if f in encoded.payload) / len(samples)
    print(f"  cached states per reference: {states / 1024:.1f} KiB")
    tail = type(model)(model.lm_path, dtype=dtype, weights="tail")
    print(f"  weights allocated: full {allocated_bytes(model.model) / 1e9:.3f} GB, "
          f"tail {sum(allocated_bytes(m) for m in (tail._tail.text, tail._tail.head)) / 1e9:.3f} GB "
          f"(from lm.layer{model.routed_layers[0]} of {model.model.config.text_config.num_hidden_layers} layers)")


if __name__ == "__main__":
    main()
