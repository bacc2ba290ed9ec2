"""Neighbourhood selection (kNN, epsilon-ball) and kernel weighting, with their fallbacks."""

import pytest
import torch

from r2t2.routing import RerouteConfig
from r2t2.routing.neighbours import NoUsableNeighbours, select, select_epsilon, select_knn, weigh

POINTS = torch.tensor([[0.0, 3.0], [1.0, 0.0], [0.0, -2.0], [5.0, 5.0], [0.5, 0.0]])
QUERY = torch.zeros(2)


def test_knn_takes_the_k_nearest_nearest_first() -> None:
    chosen = select_knn(QUERY, POINTS, 3)
    assert chosen.indices.tolist() == [4, 1, 2]
    torch.testing.assert_close(chosen.distances, torch.tensor([0.5, 1.0, 2.0]))
    assert select_knn(QUERY, POINTS, 50).indices.tolist() == [4, 1, 2, 0, 3]


def test_epsilon_ball_keeps_everything_within_epsilon_inclusive() -> None:
    assert select_epsilon(QUERY, POINTS, 2.0).indices.tolist() == [4, 1, 2]
    assert select_epsilon(QUERY, POINTS, 0.1).indices.numel() == 0
    config = RerouteConfig(neighbourhood="epsilon", epsilon=3.0, k=1)
    assert select(QUERY, POINTS, config).indices.tolist() == [4, 1, 2, 0]  # k does not cap the ball


def test_weights_are_normalised_and_use_the_median_bandwidth() -> None:
    chosen = weigh(QUERY, POINTS, select_knn(QUERY, POINTS, 3), "gaussian", None)
    assert chosen.bandwidth == pytest.approx(1.0)
    expected = torch.exp(-torch.tensor([0.5, 1.0, 2.0]) ** 2 / 2)
    torch.testing.assert_close(chosen.weights, expected / expected.sum())
    assert [n.id for n in chosen.describe(["a", "b", "c", "d", "e"])] == ["e", "b", "c"]


def test_empty_selection_and_zero_mass_raise_fallbacks() -> None:
    with pytest.raises(NoUsableNeighbours, match="empty neighbourhood"):
        weigh(QUERY, POINTS, select_epsilon(QUERY, POINTS, 0.1), "gaussian", None)
    far = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(NoUsableNeighbours, match="total weight"):
        weigh(torch.tensor([1.0, 1.0]), far, select_knn(QUERY, far, 2), "linear", None)
    with pytest.raises(NoUsableNeighbours, match="total weight"):
        weigh(QUERY, POINTS, select_knn(QUERY, POINTS, 2), "gaussian", 1e-6)
