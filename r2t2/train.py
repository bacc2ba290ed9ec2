"""Train a multimodal MoE family from its config, from scratch, on 2 CPU cores.

Two stages, as in mixture-of-vision-experts models:
1. each vision expert is pre-trained alone on its own skills (so experts are specialists and routing
   matters), with a throw-away answer head; an expert whose config names a weights file starts from
   those weights and skips this stage, like a pretrained tower;
2. experts are frozen; the router, projectors and the sparse-MoE LM are trained together on every
   task. The LM learns from the router's mixture; the router learns from the answer loss and from a
   target per routing row that says under which single expert the current LM answers best when only
   that row changes (a soft-min over the per-expert losses, the other rows kept at the router's own
   output). That target keeps every expert in play early (all losses alike: a soft target) and makes
   the router commit once the LM can read the experts, instead of collapsing onto one.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from r2t2.data import load_split
from r2t2.data.sample import Sample
from r2t2.model.batches import LabelledBatch
from r2t2.model.checkpoint import save_model
from r2t2.model.config import ModelConfig, load_config
from r2t2.model.mmoe import MultimodalMoE, images_to_pixels
from r2t2.model.tokenizer import build_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    expert_steps: int = 500
    expert_batch: int = 128
    expert_lr: float = 2e-3
    mix_epochs: int = 4
    mix_batch: int = 128
    mix_lr: float = 2e-3
    router_weight: float = 1.0
    router_temperature: float = 0.2  # nats: how sharply the router target prefers the best expert
    threads: int = 2


class _ImageTable:
    """Unique images of a sample list as one uint8 tensor, so each is decoded and resized once."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        index: dict[int, int] = {}
        images = []
        self.rows = []
        for sample in samples:
            key = id(sample.image)
            if key not in index:
                index[key] = len(images)
                images.append(sample.image)
            self.rows.append(index[key])
        chunks = [(images_to_pixels(images[i:i + 512]) * 255).round().to(torch.uint8)
                  for i in range(0, len(images), 512)]
        self.pixels = torch.cat(chunks)

    def batch(self, rows: Tensor) -> Tensor:
        return self.pixels[rows].float().div_(255.0)


def _pretrain_expert(expert: nn.Module, table: _ImageTable, rows: Tensor, question_ids: Tensor,
                     answers: Tensor, num_answers: int, vocab: int, pad_id: int, feature_dim: int,
                     cfg: TrainConfig, log: Callable) -> None:
    """Train one expert (plus a throw-away head reading its features and the question) on its skills.

    rows: image-table row of each training sample; question_ids/answers aligned with rows.
    """
    words = nn.EmbeddingBag(vocab, 64, mode="mean", padding_idx=pad_id)
    head = nn.Sequential(nn.Linear(feature_dim + 64, 256), nn.GELU(), nn.Linear(256, num_answers))
    params = [*expert.parameters(), *words.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.expert_lr, weight_decay=0.01)
    rng = torch.Generator().manual_seed(cfg.seed)
    expert.train()
    correct = seen = 0
    for step in range(cfg.expert_steps):
        lr = cfg.expert_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.expert_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        pick = torch.randint(len(rows), (cfg.expert_batch,), generator=rng)
        logits = head(torch.cat([expert(table.batch(rows[pick])), words(question_ids[pick])], dim=-1))
        loss = F.cross_entropy(logits, answers[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log(f"    {expert.spec.name} step {step + 1}/{cfg.expert_steps}: loss {loss.item():.3f}")
        if step >= cfg.expert_steps - 50:
            correct += int((logits.argmax(-1) == answers[pick]).sum())
            seen += len(pick)
    expert.eval()
    log(f"  {expert.spec.name}: skills {expert.spec.skills}, last-50-step train accuracy {correct / seen:.3f}")


def router_targets(model: MultimodalMoE, batch: LabelledBatch, routing: Tensor, temperature: float) -> Tensor:
    """[B, L, E]: per row, a soft-min over the answer losses with that row set to each single expert and
    the other rows left at the router's own (detached) output."""
    current = routing.detach()
    rows, experts = current.shape[1:]
    losses = torch.empty_like(current)
    with torch.no_grad():
        for row in range(rows):
            for expert in range(experts):
                probe = current.clone()
                probe[:, row] = F.one_hot(torch.tensor(expert), experts).to(current.dtype)
                losses[:, row, expert] = model.routing_loss(batch, probe)
    return torch.softmax(-losses / temperature, dim=-1)


def train(out_dir: Path, cfg: TrainConfig = TrainConfig(), model_config: ModelConfig | None = None,
          limit: int | None = None, log: Callable[[str], None] = print,
          config_dir: Path | None = None) -> dict:
    """Train from scratch and save a checkpoint to `out_dir`; returns a small report.

    `model_config` defaults to the embedded family; `config_dir` is where relative expert weight files
    are looked up (the config file's directory).
    """
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    samples = load_split("train", limit=limit, seed=cfg.seed)
    log(f"train samples: {len(samples)}")
    tokenizer = build_tokenizer([s.question for s in samples] + [s.answer for s in samples])
    model_config = model_config or load_config("embedded")
    model = MultimodalMoE(model_config, tokenizer, root=config_dir)
    table = _ImageTable(samples)
    question_ids, question_lengths = model.tokenize_questions([s.question for s in samples])
    answer_ids = model.tokenize_answers([s.answer for s in samples])
    log(f"vocabulary {len(tokenizer)} words, {len(table.pixels)} unique images "
        f"({time.perf_counter() - started:.0f}s)")

    # Stage 1: specialists.
    answer_words = sorted({s.answer for s in samples})
    answer_index = torch.as_tensor([answer_words.index(s.answer) for s in samples])
    for expert in model.experts.experts:
        if expert.spec.weights is not None:
            log(f"  {expert.spec.name}: starts from {expert.spec.weights}, not pre-trained here")
            continue
        chosen = torch.as_tensor([i for i, s in enumerate(samples) if s.task in expert.spec.skills],
                                 dtype=torch.long)
        if len(chosen) == 0:
            raise ValueError(f"no training samples for expert {expert.spec.name}'s skills {expert.spec.skills}")
        _pretrain_expert(expert, table, torch.as_tensor(table.rows)[chosen], question_ids[chosen],
                         answer_index[chosen], len(answer_words), len(tokenizer), tokenizer.pad_token_id,
                         model_config.feature_dim, cfg, log)
    log(f"experts pre-trained ({time.perf_counter() - started:.0f}s)")

    # Stage 2: frozen experts, cached features; router + projectors + LM end to end.
    model.experts.requires_grad_(False)
    with torch.no_grad():
        unique = torch.cat([model.experts(table.batch(torch.arange(i, min(i + 256, len(table.pixels)))))
                            for i in range(0, len(table.pixels), 256)])
    features = unique[torch.as_tensor(table.rows)]
    unique_questions = sorted({s.question for s in samples})
    sentence = model.embed_questions(unique_questions)
    row = {q: i for i, q in enumerate(unique_questions)}
    sentences = sentence[torch.as_tensor([row[s.question] for s in samples])]
    data = LabelledBatch(features, question_ids, question_lengths, answer_ids, sentences)
    params = [*model.router.parameters(), *model.projectors.parameters(), *model.question_proj.parameters(),
              *model.lm.parameters()]
    steps_per_epoch = math.ceil(len(samples) / cfg.mix_batch)
    opt = torch.optim.AdamW(params, lr=cfg.mix_lr, weight_decay=0.01)
    steps = cfg.mix_epochs * steps_per_epoch
    rng = torch.Generator().manual_seed(cfg.seed + 1)
    model.train()
    step = 0
    for epoch in range(cfg.mix_epochs):
        order = torch.randperm(len(samples), generator=rng)
        total = 0.0
        for start in range(0, len(samples), cfg.mix_batch):
            lr = cfg.mix_lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr
            batch = data[order[start:start + cfg.mix_batch]]
            routing = model.route(batch)
            answer_loss = model.answer_loss(batch, routing).mean()
            target = router_targets(model, batch, routing, cfg.router_temperature)
            router_loss = -(target * routing.clamp_min(1e-9).log()).sum(-1).mean()
            loss = answer_loss + cfg.router_weight * router_loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total += answer_loss.item() * len(batch)
            step += 1
        log(f"  epoch {epoch + 1}/{cfg.mix_epochs}: answer loss {total / len(samples):.4f} "
            f"({time.perf_counter() - started:.0f}s)")
    model.eval().requires_grad_(False)
    seconds = time.perf_counter() - started
    report = {"seconds": seconds, "samples": len(samples), "vocabulary": len(tokenizer)}
    report["fingerprint"] = save_model(model, out_dir, card=model_card(model_config, cfg, report))
    log(f"saved to {out_dir} in {seconds:.0f}s (fingerprint {report['fingerprint']})")
    return report


def model_card(config: ModelConfig, cfg: TrainConfig, report: dict) -> str:
    """A checkpoint's card as training leaves it; benchmark figures are added by hand after `r2t2 eval`."""
    rows, experts = config.routing_shape
    lines = [f"# r2t2 model card: {config.name}", "",
             f"A multimodal MoE trained by `r2t2 train` from its family config (seed {cfg.seed}) on "
             f"{report['samples']} training questions in {report['seconds'] / 60:.1f} minutes.", "",
             "| part | what |", "|---|---|"]
    for spec in config.experts:
        base = f"open_clip `{spec.architecture}` tower" if spec.architecture else "open_clip tower"
        tower = ", ".join(f"{k}={v}" for k, v in spec.tower.items())
        lines.append(f"| expert `{spec.name}` | {base} with {tower}; {spec.image_size} px {spec.color}, "
                     f"pre-trained on {', '.join(spec.skills) or 'nothing'} |")
    lines += [f"| router | inputs {', '.join(config.router.inputs)}; routing [{rows}, {experts}]: "
              + "; ".join(f"row `{r.name}` mixes {r.tokens} soft tokens" for r in config.router.rows) + " |",
              f"| question encoder | {config.question_encoder} (frozen), one soft token |",
              f"| language model | {config.lm_architecture}, hidden {config.lm['hidden_size']}, "
              f"{config.lm['num_hidden_layers']} layers, vocabulary {report['vocabulary']} words |", ""]
    return "\n".join(lines)

