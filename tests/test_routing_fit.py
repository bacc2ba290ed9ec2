"""A verified answer's routing fit, on a model whose best routing per sample is known: it reaches the margin from
the best start, stops there, keeps a neighbours' routing that already answers, and starts where it is told."""
from __future__ import annotations

import torch

from r2t2.routing.fit import FitSettings, fit_routings
from r2t2.routing.layout import vision_layout
from tests.routing_toys import BestRoutingBatch, QuadraticModel

LAYOUT = vision_layout(["row"], ["a", "b", "c"])


def test_the_fit_reaches_the_margin_from_the_best_vertex_and_stops_there() -> None:
    best = torch.tensor([[[0.0, 1.0, 0.0]], [[0.2, 0.0, 0.8]]])
    r0 = torch.tensor([[[0.8, 0.1, 0.1]], [[0.9, 0.05, 0.05]]])
    fits = fit_routings(QuadraticModel(1, 3), BestRoutingBatch(best), r0, LAYOUT, FitSettings(margin_loss=0.05))
    assert fits[0].steps == 0 and torch.allclose(fits[0].routing, best[0])  # a vertex is the answer itself
    assert fits[1].loss <= 0.05 < fits[1].base_loss and 0 < fits[1].steps <= 20
    assert all(torch.allclose(f.routing.sum(-1), torch.ones(1)) for f in fits)


def test_from_the_router_the_fit_stays_near_it() -> None:
    best = torch.tensor([[[0.0, 1.0, 0.0]]])
    r0 = torch.tensor([[[0.5, 0.5, 0.0]]])
    near = fit_routings(QuadraticModel(1, 3), BestRoutingBatch(best), r0, LAYOUT,
                        FitSettings(starts="router", margin_loss=0.3))[0]
    assert near.loss <= 0.3 and near.routing[0, 0] > 0.05  # stopped once good enough, short of the vertex


def test_a_neighbours_routing_that_answers_is_kept() -> None:
    best = torch.tensor([[[0.0, 1.0, 0.0]]])
    guess = torch.tensor([[[0.1, 0.9, 0.0]]])  # loss 0.02: within the margin
    fit = fit_routings(QuadraticModel(1, 3), BestRoutingBatch(best), torch.tensor([[[1.0, 0.0, 0.0]]]), LAYOUT,
                       FitSettings(starts="neighbours", margin_loss=0.05), guesses=guess)[0]
    assert torch.allclose(fit.routing, guess[0]) and fit.steps == 0
