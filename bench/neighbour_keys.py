"""Which neighbour key finds the right neighbours? Purity and accuracy per key, on one split.

Every key searches the same references (the family's default index: same rows, routings and cached
batches); only the vectors neighbours are found and weighed by change, so the comparison isolates the
key. Keys: `minilm` (today's question embedding), `mpnet` (all-mpnet-base-v2, a stronger sentence
embedder, from a local directory), `answers` (the model's own signal: its answer-token distribution
under the base routing, as square-root probabilities, so the cosine is the Bhattacharyya coefficient),
`hidden` (the LM's hidden state at the last prompt token, the position LM rows govern, after decoder layer
`--hidden-layer`, under the base routing; composed families), `routes` (the model's own LM routing there:
each LM row's router distribution, as square-root probabilities; every family with LM rows, read from the
index's stored routings), and concatenations such as `minilm+answers` (each part
unit length, weighted by an optional `w*` prefix, e.g. `minilm+0.5*answers`). (The image+question embedder needs reference images, which an index does not
keep: compare it with `r2t2 index build --embedder image+question` and `r2t2 eval --index`.)

Strategies are variants as `r2t2 eval` takes them (`kernel:target=lm:lm_positions=first`); the guard is off
unless a variant turns it on, and an LM-row variant's answer applies its moved LM rows, as the server's does.

Usage: python -m bench.neighbour_keys --model embedded --split paraphrase-val --limit 300 --seed 7 \
    --keys minilm,answers,minilm+answers [--strategies none,kernel,ngd] [--mpnet-dir DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from r2t2.compat import install_torchvision_fix

install_torchvision_fix()  # before the imports below load open_clip and transformers, which import torchvision

from indexes.embedders import MiniLMEmbedder  # noqa: E402
from r2t2.data import load_split  # noqa: E402
from r2t2.data.answers import same_answer  # noqa: E402
from serving.pipeline.diagnostics import fixed_broken, purity  # noqa: E402
from serving.pipeline.evaluate import parse_variant, split_variants  # noqa: E402
from serving.pipeline.factory import load_pipeline  # noqa: E402
from serving.pipeline.neighbours import neighbour_answers  # noqa: E402
from r2t2.routing import Needs, Neighbourhood, RerouteRequest, reroute_many, strategy  # noqa: E402
from r2t2.routing.block import answer_pins  # noqa: E402

_BATCH = 128


@torch.no_grad()
def answer_distribution(model, batch, routing: torch.Tensor) -> np.ndarray:
    """[B, V] square-root first-answer-token probabilities of the LM under `routing` (unit rows)."""
    prompts = model.prompt_embeds(batch, routing)
    lengths = torch.as_tensor([len(p) for p in prompts])
    mask = pad_sequence([torch.ones(len(p), dtype=torch.long) for p in prompts], batch_first=True)
    logits = model.lm(inputs_embeds=pad_sequence(prompts, batch_first=True), attention_mask=mask).logits
    probs = logits[torch.arange(len(prompts)), lengths - 1].float().softmax(-1)
    return F.normalize(probs.sqrt(), dim=-1).numpy()


@torch.no_grad()
def hidden_state(model, batch, routing: torch.Tensor, layer: int) -> np.ndarray:
    """[B, H] the LM's hidden state at the last prompt token after decoder layer `layer`, under `routing`."""
    prompts = model.prompt_embeds(batch, routing)
    lengths = torch.as_tensor([len(p) for p in prompts])
    mask = pad_sequence([torch.ones(len(p), dtype=torch.long) for p in prompts], batch_first=True)
    states = model.lm(inputs_embeds=pad_sequence(prompts, batch_first=True), attention_mask=mask,
                      output_hidden_states=True).hidden_states[layer + 1]
    return F.normalize(states[torch.arange(len(prompts)), lengths - 1].float(), dim=-1).numpy()


def lm_routes(layout, routings: np.ndarray) -> np.ndarray:
    """[N, sum of LM rows' experts] square-root LM-row distributions of routings [N, L, E]."""
    rows = [routings[:, i, :len(row.experts)] for i, row in enumerate(layout.rows) if row.kind == "lm"]
    if not rows:
        raise ValueError("the routes key needs a model with LM routing rows")
    return np.sqrt(np.clip(np.concatenate(rows, axis=1), 0, None)).astype(np.float32)


class MPNet:
    """all-mpnet-base-v2 mean-pooled, unit-length sentence embeddings (a local model directory)."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), 64):
            tokens = self.tokenizer(texts[start:start + 64], padding=True, truncation=True, return_tensors="pt")
            states = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            parts.append(F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy())
        return np.concatenate(parts)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _part(text: str) -> tuple[float, str]:
    """"0.5*answers" -> (0.5, "answers"); "minilm" -> (1.0, "minilm")."""
    weight, sep, name = text.rpartition("*")
    return (float(weight) if sep else 1.0), name


def _combined(vectors: dict[str, np.ndarray], key: str) -> np.ndarray:
    """Parts unit length, scaled by their weight, concatenated, renormalised: cosine = weighted mean of cosines."""
    return _unit(np.concatenate([w * _unit(vectors[name]) for w, name in map(_part, key.split("+"))], axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--split", default="paraphrase-val")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keys", default="minilm,answers,minilm+answers")
    parser.add_argument("--strategies", default="none,kernel,ngd")
    parser.add_argument("--mpnet-dir", default=None)
    parser.add_argument("--hidden-layer", type=int, default=-1, help="the decoder layer whose output `hidden` is "
                                                                      "(default: the last)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    pipeline = load_pipeline({"checkpoint": args.model})
    model = pipeline.model
    index = pipeline.reference_index()
    refs = index.take(np.arange(index.size))
    samples = load_split(args.split, limit=args.limit, seed=args.seed)
    encoded = [model.encode_query(s.image, s.question, s.answer).batch for s in samples]
    r0s = [model.base_routing(b) for b in encoded]
    parts = {_part(p)[1] for key in args.keys.split(",") for p in key.split("+")}
    tick = time.perf_counter()
    ref_keys: dict[str, np.ndarray] = {}
    query_keys: dict[str, np.ndarray] = {}
    if "minilm" in parts:
        ref_keys["minilm"] = refs.embeddings if index.manifest.embedder_name == MiniLMEmbedder.name \
            else MiniLMEmbedder().embed_texts(list(refs.questions))
        query_keys["minilm"] = MiniLMEmbedder().embed_texts([s.question for s in samples])
    if "mpnet" in parts:
        mpnet = MPNet(args.mpnet_dir)
        ref_keys["mpnet"] = mpnet.embed_texts(list(refs.questions))
        query_keys["mpnet"] = mpnet.embed_texts([s.question for s in samples])
    if "answers" in parts:
        rows = []
        for start in range(0, index.size, _BATCH):
            chunk = index.take(np.arange(start, min(start + _BATCH, index.size)))
            rows.append(answer_distribution(model, model.reference_batch(chunk.payload),
                                            torch.from_numpy(chunk.routings).float()))
        ref_keys["answers"] = np.concatenate(rows)
        query_keys["answers"] = np.concatenate([answer_distribution(model, b, r) for b, r in zip(encoded, r0s)])
    if "hidden" in parts:
        rows = []
        for start in range(0, index.size, _BATCH):
            chunk = index.take(np.arange(start, min(start + _BATCH, index.size)))
            rows.append(hidden_state(model, model.reference_batch(chunk.payload),
                                     torch.from_numpy(chunk.routings).float(), args.hidden_layer))
        ref_keys["hidden"] = np.concatenate(rows)
        query_keys["hidden"] = np.concatenate([hidden_state(model, b, r, args.hidden_layer) for b, r in zip(encoded, r0s)])
    if "routes" in parts:
        ref_keys["routes"] = lm_routes(pipeline.layout, refs.routings)
        query_keys["routes"] = lm_routes(pipeline.layout, torch.stack(r0s).numpy())
    print(f"keys computed in {time.perf_counter() - tick:.0f} s", flush=True)

    strategies = split_variants(args.strategies)
    # Keys are compared without the evidence guard (unless a variant asks), so purity decides what strategies see.
    configs = {s: pipeline.config_for({"guard": False, **parse_variant(s)}) for s in strategies}
    report: dict = {"split": args.split, "limit": args.limit, "seed": args.seed, "model": args.model, "keys": {}}
    spaces = any(Needs.NEIGHBOUR_ANSWERS in {strategy(n).needs for n in c.strategies} for c in configs.values())
    for key in args.keys.split(","):
        ref = _combined(ref_keys, key)
        qry = _combined(query_keys, key)
        ref_t = torch.from_numpy(ref)
        correct: dict[str, list[bool]] = {s: [] for s in strategies}
        purities = []
        for q, sample in enumerate(samples):
            sims = ref @ qry[q]
            k = configs[strategies[-1]].k
            wanted = max(max(c.space_k for c in configs.values()) if spaces else 0, k)
            rows = np.argsort(-sims, kind="stable")[:wanted]
            found = index.take(rows)
            purities.append(purity(sample.task, list(found.tasks)[:k]))
            hood = Neighbourhood(ids=found.ids, embeddings=ref_t[rows], routings=torch.from_numpy(found.routings).float(),
                                 batch=model.reference_batch(found.payload))
            for name, config in configs.items():
                target = neighbour_answers(encoded[q], hood, list(found.answers[:config.space_k]), name) \
                    if Needs.NEIGHBOUR_ANSWERS in {strategy(n).needs for n in config.strategies} else None
                request = RerouteRequest(r0s[q], config, query_embedding=torch.from_numpy(qry[q]), neighbourhood=hood,
                                         target=target)
                routing = reroute_many(model, [request])[0].routing
                pinned = answer_pins(pipeline.layout, config.target, r0s[q], routing, config.lm_layers)
                answer = model.answer(encoded[q], routing) if pinned is None else \
                    model.answer(encoded[q], routing, pinned=pinned, lm_positions=config.lm_positions)
                correct[name].append(same_answer(answer[0], sample.answer))
        entry = {"purity": 100 * float(np.mean(purities)),
                 "purity_per_task": {t: 100 * float(np.mean([p for p, s in zip(purities, samples) if s.task == t]))
                                     for t in sorted({s.task for s in samples})}}
        for name in strategies:
            fixed, broken = fixed_broken(correct["none"], correct[name]) if "none" in correct else (None, None)
            entry[name] = {"accuracy": 100 * float(np.mean(correct[name])), "fixed": fixed, "broken": broken}
        report["keys"][key] = entry
        print(key, json.dumps(entry), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)


if __name__ == "__main__":
    main()
