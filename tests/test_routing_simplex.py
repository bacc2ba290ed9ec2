"""Simplex projection: valid output, idempotent, identity on the simplex, and truly the closest point."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2t2.routing import is_valid_routing, project_to_simplex

seeds = st.integers(0, 2**31 - 1)
shapes = st.tuples(st.integers(1, 5), st.integers(1, 7))


@settings(max_examples=80, deadline=None)
@given(seed=seeds, shape=shapes, scale=st.floats(1e-3, 1e3))
def test_projection_is_valid_and_idempotent(seed: int, shape: tuple[int, int], scale: float) -> None:
    points = scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    projected = project_to_simplex(points)
    assert is_valid_routing(projected, atol=1e-9)
    torch.testing.assert_close(project_to_simplex(projected), projected)


@settings(max_examples=80, deadline=None)
@given(seed=seeds, shape=shapes)
def test_points_on_the_simplex_are_their_own_projection(seed: int, shape: tuple[int, int]) -> None:
    on_simplex = torch.softmax(3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                                               dtype=torch.float64), dim=-1)
    torch.testing.assert_close(project_to_simplex(on_simplex), on_simplex)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, experts=st.integers(2, 6))
def test_projection_is_closer_than_any_other_simplex_point(seed: int, experts: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    point = 2 * torch.randn(experts, generator=generator, dtype=torch.float64)
    others = torch.distributions.Dirichlet(torch.full((experts,), 0.5, dtype=torch.float64)).sample((500,))
    others = torch.cat([others, torch.eye(experts, dtype=torch.float64)])
    best = (project_to_simplex(point) - point).norm()
    assert (best <= (others - point).norm(dim=-1) + 1e-12).all()


def test_known_projection() -> None:
    torch.testing.assert_close(project_to_simplex(torch.tensor([[2.0, 0.0, 0.0], [0.5, 0.5, 0.5]])),
                               torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]))


def test_non_finite_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        project_to_simplex(torch.tensor([1.0, float("nan")]))
