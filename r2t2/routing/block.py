"""The part of a routing one request re-routes, and how the model is to apply the routing.

A request may re-route only some rows (e.g. the language model's rows, `target: lm`), and within them only
some experts (C3PO's core experts). Strategies then work on the block of those rows, as wide as the widest
of them: with every entry movable they see exactly the tensors they would see on a model that had only
those rows, which keeps re-routing the vision rows of a model with LM rows identical to re-routing a model
without them. Entries outside the block keep the request's base routing; inside it, `movable` marks what may
change (None: everything).

`pinned` tells the model which rows of a routing it must apply. A model applies its vision rows always (a
soft-token mixture has no other source), but an LM row only when a request re-routes it; otherwise the
layer keeps its own router. None means the model's default. `lm_positions` says at which answer tokens a
pinned LM row applies (RerouteConfig.lm_positions).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from r2t2.engine_prompt import LmPositions
from r2t2.routing.layout import TARGETS, RoutingLayout


@dataclass(frozen=True)
class RoutingBlock:
    rows: tuple[int, ...]  # positions of the re-routed rows in the full routing
    width: int  # the block's columns: the first `width` experts of each of those rows
    pinned: tuple[bool, ...] | None = None  # per full-routing row: the model applies it (None: model default)
    movable: Tensor | None = None  # [len(rows), width] bool; None: every entry of the block may move
    lm_positions: LmPositions = "answer"  # where the pinned LM rows apply

    def __post_init__(self) -> None:
        if not self.rows or self.width < 1:
            raise ValueError(f"a routing block needs rows and a width >= 1, got rows={self.rows} width={self.width}")
        if self.movable is not None and tuple(self.movable.shape) != (len(self.rows), self.width):
            raise ValueError(f"movable must be [{len(self.rows)}, {self.width}], got {list(self.movable.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.width

    def group_key(self) -> tuple:
        """Requests whose blocks share this key are re-routed together: the same block shape, and all with movable
        entries marked or none (a group's masks are stacked, and an all-true mask takes another float path than
        none, which would make a request's routing depend on its group)."""
        return self.rows, self.width, self.pinned, self.lm_positions, self.movable is None

    def fits(self, shape: tuple[int, int]) -> bool:
        """Whether the block lies inside a routing of this (L, E) shape."""
        layers, experts = shape
        return max(self.rows) < layers and min(self.rows) >= 0 and self.width <= experts and (
            self.pinned is None or len(self.pinned) == layers)

    def take(self, routing: Tensor) -> Tensor:
        """The block [..., L', W] of full routings [..., L, E]."""
        index = torch.as_tensor(self.rows, device=routing.device)
        return routing.index_select(-2, index)[..., :self.width]

    def place(self, block: Tensor, base: Tensor) -> Tensor:
        """Full routings [..., L, E]: `base` with the block's entries replaced (differentiable in `block`)."""
        index = torch.as_tensor(self.rows, device=base.device)
        rest = base.index_select(-2, index)[..., self.width:]
        return base.index_copy(-2, index, torch.cat([block.to(base.dtype), rest], dim=-1))


def target_rows(layout: RoutingLayout, target: str, lm_layers: tuple[int, ...] | None = None) -> list[int]:
    """Positions of the rows a request with `target` (vision | lm | both) re-routes: its kinds' rows, the LM
    ones only at the decoder layers `lm_layers` names (None: every LM row).

    Raises ValueError when the layout has no row of the target's kinds, or `lm_layers` names a layer with no
    LM row."""
    rows = layout.indices(TARGETS[target])
    if not rows:
        kinds = " or ".join(TARGETS[target])
        raise ValueError(f"target {target!r} needs {kinds} routing rows; this model has "
                         f"{', '.join(sorted({row.kind for row in layout.rows}))} rows only")
    if lm_layers is None or "lm" not in TARGETS[target]:
        return rows
    have = [row.layer for row in layout.rows if row.kind == "lm"]
    missing = sorted(set(lm_layers) - set(have))
    if missing:
        raise ValueError(f"lm_layers names decoder layer(s) {missing} with no LM routing row; this model's LM rows "
                         f"are at layers {have}")
    return [i for i in rows if layout.rows[i].kind != "lm" or layout.rows[i].layer in lm_layers]


def block_for(layout: RoutingLayout, target: str, r0: Tensor, core_experts: int | None = None,
              lm_positions: LmPositions = "answer", lm_layers: tuple[int, ...] | None = None) -> RoutingBlock | None:
    """The block a request with `target` (vision | lm | both) re-routes from base routing `r0` [L, E], its LM
    rows (those at `lm_layers`, None: all) applied at `lm_positions`.

    None when that is the whole routing with nothing held back: the strategies then work on `r0` itself.
    `core_experts` n lets only each row's n experts with the largest base weight move (C3PO's core experts).
    Raises ValueError as `target_rows` does.
    """
    rows = target_rows(layout, target, lm_layers)
    width = max(len(layout.rows[i].experts) for i in rows)
    movable = layout.support(r0.device)[rows][:, :width]
    if core_experts is not None:
        weights = r0[rows][:, :width].masked_fill(~movable, -1.0)
        top = weights.topk(min(core_experts, width), dim=-1).indices
        movable = movable & torch.zeros_like(movable).scatter(-1, top, True)
    pins_lm = "lm" in TARGETS[target] and layout.has("lm")
    pinned = tuple(row.kind == "vision" or i in rows for i, row in enumerate(layout.rows)) if pins_lm else None
    whole = len(rows) == layout.shape[0] and width == layout.shape[1]
    if whole and bool(movable.all()) and pinned is None:
        return None
    return RoutingBlock(tuple(rows), width, pinned, None if bool(movable.all()) else movable, lm_positions)


def answer_pins(layout: RoutingLayout, target: str, base: Tensor, routing: Tensor,
                lm_layers: tuple[int, ...] | None = None) -> tuple[bool, ...] | None:
    """The rows the answer to a re-routed request applies: its target's LM rows (those at `lm_layers`, None:
    all) when any of them moved.

    An LM row a request did not move (the guard kept the base routing, a fallback, a target without LM rows, or
    a layer outside `lm_layers`) is left to the layer's router, so such a request is answered exactly as without
    re-routing. None: the model's default (vision rows only).
    """
    if "lm" not in TARGETS[target] or not layout.has("lm"):
        return None
    lm = [i for i in target_rows(layout, target, lm_layers) if layout.rows[i].kind == "lm"]
    if torch.equal(routing[lm], base[lm]):
        return None
    return tuple(row.kind == "vision" or i in lm for i, row in enumerate(layout.rows))
