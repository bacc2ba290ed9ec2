"""Keeping routings on the probability simplex: the projection optimisers use after every step, the
rescaling that confines a borrowed routing to the entries a request may move, and the vertices descents
start from."""
from __future__ import annotations

import torch
from torch import Tensor


def project_to_simplex(points: Tensor, movable: Tensor | None = None) -> Tensor:
    """Closest point (Euclidean) on the probability simplex for each row along the last dimension.

    Sort-based: after sorting a row descending as u, the active set is the longest prefix with
    u_j > (sum_{i<=j} u_i - m) / j; subtracting that prefix's threshold and clipping at zero is the
    projection onto {x >= 0, sum x = m}. Exact in O(E log E) per row, differentiable almost everywhere,
    any leading shape.

    With `movable` (bool, broadcastable to `points`) only those entries are projected, onto the simplex of
    the mass the row's other entries leave (m = 1 - their sum); the other entries are returned unchanged.
    """
    if points.ndim == 0 or points.shape[-1] == 0:
        raise ValueError(f"cannot project a tensor of shape {tuple(points.shape)} onto the simplex")
    if not torch.isfinite(points).all():
        raise ValueError("cannot project non-finite values onto the simplex")
    if movable is None:
        return (points - _threshold(points, torch.ones((), dtype=points.dtype, device=points.device))).clamp_min(0)
    movable = movable.expand_as(points)
    mass = (1 - torch.where(movable, 0.0, points).sum(-1, keepdim=True)).clamp_min(0)
    threshold = _threshold(torch.where(movable, points, -torch.inf), mass)
    return torch.where(movable, (points - threshold).clamp_min(0), points)


def _threshold(points: Tensor, mass: Tensor) -> Tensor:
    """The shift that puts each row's entries (-inf: left out) on {x >= 0, sum x = mass}, [..., 1]."""
    size = points.shape[-1]
    ordered = torch.sort(points, dim=-1, descending=True).values
    present = torch.isfinite(ordered)
    excess = torch.where(present, ordered, 0.0).cumsum(-1) - mass
    ranks = torch.arange(1, size + 1, dtype=points.dtype, device=points.device)
    # >= 1 in exact arithmetic (the top entry always qualifies); the floor holds it there when rows of
    # huge magnitude lose the precision to show it, and for rows with no entry left to project.
    active = ((ordered - excess / ranks > 0) & present).sum(-1, keepdim=True).clamp_min(1)
    return excess.gather(-1, active - 1) / active.to(points.dtype)


def confine(target: Tensor, base: Tensor, movable: Tensor | None) -> Tensor:
    """`target` on the movable entries, `base` elsewhere: a valid routing that moves only what may move.

    The movable entries of each row are scaled to the mass `base` gives them, keeping `target`'s shape of
    the distribution among them (a row where `target` puts no weight on them keeps `base`).
    """
    if movable is None:
        return target
    movable = movable.expand_as(base)
    fixed = torch.where(movable, 0.0, base)
    mass = 1 - fixed.sum(-1, keepdim=True)
    wanted = torch.where(movable, target, 0.0)
    total = wanted.sum(-1, keepdim=True)
    scaled = torch.where(total > 0, wanted * (mass / total.clamp_min(torch.finfo(base.dtype).tiny)),
                         torch.where(movable, base, 0.0))
    return fixed + scaled


def one_hot_starts(r0: Tensor, movable: Tensor | None = None) -> Tensor:
    """r0 and, for each layer and expert, r0 with that layer's row made one-hot: [1 + L * E, L, E].

    For L = 1 these are r0 and every vertex of the simplex; for deeper routings the full vertex set
    (E ** L points) is too large, so one layer changes at a time. With `movable` ([L, E] bool) a vertex
    puts the row's movable mass on one movable expert (the other entries keep r0); entries that may not
    move give no start.
    """
    layers, experts = r0.shape
    starts = r0.expand(layers * experts, layers, experts).clone()
    eye = torch.eye(experts, dtype=r0.dtype, device=r0.device)
    if movable is None:
        for layer in range(layers):
            starts[layer * experts:(layer + 1) * experts, layer] = eye
        return torch.cat([r0.unsqueeze(0), starts])
    fixed = torch.where(movable, 0.0, r0)
    mass = 1 - fixed.sum(-1)
    for layer in range(layers):
        starts[layer * experts:(layer + 1) * experts, layer] = fixed[layer] + eye * mass[layer]
    keep = movable.reshape(-1)
    return torch.cat([r0.unsqueeze(0), starts[keep]])
