"""What the rows of a model's routing are: one [L, E] matrix whose rows may mix different things.

A row either mixes vision experts (a group of soft visual tokens, R2-T2) or stands for one MoE layer of
the language model at the answer position (C3PO's pathway): the router's distribution over that layer's
experts for the last prompt token and every generated token. Rows may have different expert counts; the
matrix is as wide as the widest row and a narrower row's extra columns are always zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ROW_KINDS: tuple[str, ...] = ("vision", "lm")
# A request's `target` names the row kinds it re-routes.
TARGETS: dict[str, tuple[str, ...]] = {"vision": ("vision",), "lm": ("lm",), "both": ("vision", "lm")}


@dataclass(frozen=True)
class LayoutRow:
    """One routing row: its name, what it mixes, its experts (columns, in order) and, for an LM row, the
    index of the language model's decoder layer whose router it replaces."""

    name: str
    kind: str
    experts: tuple[str, ...]
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ROW_KINDS:
            raise ValueError(f"routing row {self.name!r}: kind must be one of {', '.join(ROW_KINDS)}, got {self.kind!r}")
        if not self.experts:
            raise ValueError(f"routing row {self.name!r} has no experts")
        if (self.layer is None) != (self.kind == "vision"):
            raise ValueError(f"routing row {self.name!r}: an lm row names its layer, a vision row does not")


@dataclass(frozen=True)
class RoutingLayout:
    """The named rows of a routing matrix, in order."""

    rows: tuple[LayoutRow, ...]

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("a routing layout needs at least one row")
        names = [row.name for row in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"routing row names must be unique, got {names}")

    @property
    def shape(self) -> tuple[int, int]:
        """(L, E): rows, and the widest row's expert count."""
        return len(self.rows), max(len(row.experts) for row in self.rows)

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def indices(self, kinds: tuple[str, ...]) -> list[int]:
        """Positions of the rows of these kinds, in order."""
        return [i for i, row in enumerate(self.rows) if row.kind in kinds]

    def has(self, kind: str) -> bool:
        return any(row.kind == kind for row in self.rows)

    def support(self, device: torch.device | str = "cpu") -> Tensor:
        """[L, E] bool: True where a row has an expert (False on a narrower row's padding)."""
        width = self.shape[1]
        return torch.tensor([[e < len(row.experts) for e in range(width)] for row in self.rows], device=device)

    def to_dict(self) -> list[dict]:
        """JSON-ready rows (what an index manifest and /v1/models record)."""
        return [{"name": row.name, "kind": row.kind, "experts": list(row.experts), "layer": row.layer}
                for row in self.rows]


def vision_layout(row_names: list[str], expert_names: list[str]) -> RoutingLayout:
    """The layout of a model whose every row mixes the same vision experts (every adapter before LM rows)."""
    return RoutingLayout(tuple(LayoutRow(name, "vision", tuple(expert_names)) for name in row_names))
