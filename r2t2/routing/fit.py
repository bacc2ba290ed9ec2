"""The routing a verified answer adds to an index: found for its answer, so that it answers it with a margin.

A reference row is only useful if its routing answers its own question: a request re-routed toward it borrows that
routing. Every verified answer is fitted, whether or not the served answer was right. The vision rows, with the
language model's routers left alone (as a request with `target: vision` uses them): from the best of the router's
routing and each expert alone (one batched forward), then projected Adam on the answer's own loss until it is below
`margin_loss`. The router's own vision mixture is what fails on a new wording, even where it happened to answer this
one sample, while a decisive expert choice carries over to the wording's other questions. The LM rows keep the
router's own distribution (`lm_steps` 0): an LM row spreads over many experts and the router's is mostly right, and
on paraphrase-val LM rows moved to a margin (from vertices or from the router's) left NGD on the LM rows no better
while the router's, where they answer, lifted it. A sample that the fitted vision rows and the router's LM rows do
not answer is refused. The rule and its settings were chosen on paraphrase-val (docs/method.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.engine_prompt import LmPositions
from r2t2.routing.descent import projected_adam
from r2t2.routing.layout import RoutingLayout
from r2t2.routing.protocol import ReferenceBatch, RoutedModel
from r2t2.routing.simplex import one_hot_starts

STARTS: tuple[str, ...] = ("neighbours", "vertices", "router")


@dataclass(frozen=True)
class FitSettings:
    """How hard a verified answer's routing is searched for."""

    steps: int = 20  # Adam steps of the vision stage, at most
    lr: float = 0.1
    lr_min: float = 1e-5
    margin_loss: float = 0.1  # the answer's mean token loss to reach: each token about 90 % likely or more
    # Where each stage starts, vision rows (`starts`) and LM rows (`lm_starts`): vertices, the best of r0 and each
    # expert alone (a vision mixture is a choice among a few experts, which carries over to other wordings); router,
    # r0 alone (an LM row spreads over many experts, and the router's is mostly right); neighbours, the index's
    # neighbours' kernel-weighted routing when it answers with the margin, else as vertices.
    starts: str = "vertices"
    lm_starts: str = "router"
    # Adam steps of the LM stage. 0 (chosen on paraphrase-val): LM rows keep the router's own distribution, and a
    # sample it does not answer is refused; LM rows moved to a margin made NGD on the LM rows no better there.
    lm_steps: int = 0
    stop_at_margin: bool = True  # False: take every step and keep the lowest loss seen

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lm_steps < 0 or self.lr <= 0 or self.margin_loss <= 0 or {self.starts, self.lm_starts} - set(STARTS):
            raise ValueError(f"bad fit settings {self}")


@dataclass(frozen=True)
class Fitted:
    """One sample's fitted routing [L, E], its answer loss there and under the router's routing, and the steps."""

    routing: Tensor
    loss: float
    base_loss: float
    steps: int
    pinned: tuple[bool, ...] | None  # the rows the model applies to answer under `routing` (None: its default)


def _stages(layout: RoutingLayout, settings: FitSettings) -> list[str]:
    """The row kinds that move: vision rows, and LM rows when their stage has steps (else the routers answer)."""
    return [kind for kind in ("vision", "lm") if layout.has(kind) and (kind == "vision" or settings.lm_steps > 0)]


def _pins(layout: RoutingLayout, fitted: set[str]) -> tuple[bool, ...] | None:
    """The rows the model applies while LM rows are fitted (every vision row, and the LM rows); None otherwise."""
    if "lm" not in fitted or not layout.has("lm"):
        return None
    return tuple(True for _ in layout.rows)


def _loss(model: RoutedModel, batch: ReferenceBatch, routings: Tensor, pinned: tuple[bool, ...] | None,
          lm_positions: LmPositions) -> Tensor:
    if pinned is None:
        return model.routing_loss(batch, routings)
    return model.routing_loss(batch, routings, pinned=pinned, lm_positions=lm_positions)


def fit_routings(model: RoutedModel, batch: ReferenceBatch, r0: Tensor, layout: RoutingLayout,
                 settings: FitSettings = FitSettings(), lm_positions: LmPositions = "answer",
                 guesses: Tensor | None = None) -> list[Fitted]:
    """Fit each sample of `batch` (labelled with its verified answer) from its router's routing r0 [B, L, E];
    `guesses` [B, L, E], the routing the index's neighbours suggest for each (starts "neighbours")."""
    count = r0.shape[0]
    routing = r0.detach().clone()
    if "neighbours" in (settings.starts, settings.lm_starts):
        if guesses is None:
            raise ValueError("fit starts 'neighbours' needs the neighbours' routing of every sample (guesses)")
        with torch.no_grad():
            guessed = _loss(model, batch, guesses, _pins(layout, set(_stages(layout, settings))), lm_positions)
        answers = (guessed <= settings.margin_loss).tolist()
    else:
        answers = [False] * count
    support = layout.support(r0.device)
    steps_taken = [0] * count
    with torch.no_grad():
        base_loss = _loss(model, batch, routing, None, lm_positions).tolist()
    fitted: set[str] = set()
    for kind in _stages(layout, settings):
        fitted.add(kind)
        rows = torch.tensor([row.kind == kind for row in layout.rows], device=r0.device)
        movable = support & rows.unsqueeze(1)
        pinned = _pins(layout, fitted)
        starts = settings.starts if kind == "vision" else settings.lm_starts
        routing = _best_starts(model, batch, routing, movable, pinned, lm_positions, starts)
        suggested = answers if starts == "neighbours" else [False] * count
        if any(suggested):  # the neighbours' routing already answers with the margin: kept as it is
            keep = torch.tensor(suggested, device=routing.device).view(-1, 1, 1) & movable
            routing = torch.where(keep, guesses.to(routing.dtype), routing)

        def objective(current: Tensor, live: list[int]) -> Tensor:
            losses = torch.zeros(count, dtype=current.dtype, device=current.device)
            if live:
                losses = losses.index_put((torch.tensor(live, device=current.device),),
                                          _loss(model, batch[live], current[live], pinned, lm_positions))
            return losses

        rates = torch.full((count,), settings.lr, dtype=routing.dtype, device=routing.device)
        margin = torch.full((count,), settings.margin_loss, dtype=routing.dtype, device=routing.device)
        steps = settings.steps if kind == "vision" else settings.lm_steps
        descents = projected_adam(objective, routing, steps, rates, torch.full_like(rates, settings.lr_min),
                                  movable.expand(count, *movable.shape),
                                  good_enough=margin if settings.stop_at_margin else None)
        routing = torch.stack([d.best for d in descents])
        steps_taken = [s + d.steps for s, d in zip(steps_taken, descents)]
    pinned = _pins(layout, fitted)
    with torch.no_grad():
        final = _loss(model, batch, routing, pinned, lm_positions).tolist()
    return [Fitted(routing[i], final[i], base_loss[i], steps_taken[i], pinned) for i in range(count)]


def _best_starts(model: RoutedModel, batch: ReferenceBatch, routing: Tensor, movable: Tensor,
                 pinned: tuple[bool, ...] | None, lm_positions: LmPositions, starts: str) -> Tensor:
    """Per sample, the lowest-loss of its routing and (`starts` vertices or neighbours) each movable expert alone."""
    if starts == "router":
        return routing  # "neighbours" starts as "vertices" for the samples its guess does not answer
    starts = [one_hot_starts(r, movable) for r in routing]  # each [S, L, E], S the same for every sample
    per = starts[0].shape[0]
    owners = [i for i in range(len(starts)) for _ in range(per)]
    with torch.no_grad():
        losses = _loss(model, batch[owners], torch.cat(starts), pinned, lm_positions).reshape(len(starts), per)
    losses = torch.where(torch.isfinite(losses), losses, torch.inf)
    best = losses.argmin(1)
    return torch.stack([s[int(b)] for s, b in zip(starts, best)])
