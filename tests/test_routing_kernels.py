"""Kernels give finite non-negative weights; distance kernels peak at 1 and decay; the bandwidth rule."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2t2.routing.kernels import KERNELS, kernel_function, median_bandwidth

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 12), dim=st.integers(1, 16), scale=st.floats(1e-3, 1e3),
       h=st.floats(1e-4, 1e4), name=st.sampled_from(KERNELS))
def test_every_kernel_gives_finite_non_negative_weights(seed: int, n: int, dim: int, scale: float, h: float,
                                                         name: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    query = scale * torch.randn(dim, generator=generator, dtype=torch.float64)
    points = scale * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    weights = kernel_function(name)(query, points, h)
    assert weights.shape == (n,)
    assert torch.isfinite(weights).all() and (weights >= 0).all()


@settings(max_examples=60, deadline=None)
@given(seed=seeds, dim=st.integers(1, 8), h=st.floats(1e-2, 1e2), name=st.sampled_from(["gaussian", "matern"]))
def test_distance_kernels_are_one_at_zero_and_decrease(seed: int, dim: int, h: float, name: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(dim, generator=generator, dtype=torch.float64)
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=generator, dtype=torch.float64), dim=0)
    radii = torch.linspace(0, 3 * h, 10, dtype=torch.float64)
    weights = kernel_function(name)(query, query + radii[:, None] * direction, h)
    assert weights[0] == pytest.approx(1.0)
    assert (weights[1:] < weights[:-1]).all()


def test_kernel_formulas_at_known_points() -> None:
    query = torch.tensor([1.0, 0.0], dtype=torch.float64)
    points = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64)
    h = 2.0
    torch.testing.assert_close(kernel_function("gaussian")(query, points, h), torch.exp(-d**2 / 8))
    s = math.sqrt(3) * d / h
    torch.testing.assert_close(kernel_function("matern")(query, points, h), (1 + s) * torch.exp(-s))
    # inner products 1, -1, 3: polynomial (1 + ip / 4)^2, base clamped at 0; linear max(ip, 0)
    torch.testing.assert_close(kernel_function("polynomial")(query, points, h),
                               torch.tensor([1.25**2, 0.75**2, 1.75**2], dtype=torch.float64))
    torch.testing.assert_close(kernel_function("polynomial")(query, points, 0.5),
                               torch.tensor([25.0, 0.0, 169.0], dtype=torch.float64))
    torch.testing.assert_close(kernel_function("linear")(query, points, h),
                               torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))


def test_median_bandwidth_is_the_median_floored() -> None:
    assert median_bandwidth(torch.tensor([3.0, 1.0, 2.0])) == pytest.approx(2.0)
    assert median_bandwidth(torch.tensor([1.0, 2.0, 3.0, 10.0])) == pytest.approx(2.5)
    assert median_bandwidth(torch.zeros(4)) == 1e-6
    with pytest.raises(ValueError):
        median_bandwidth(torch.zeros(0))


def test_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel 'rbf'"):
        kernel_function("rbf")
