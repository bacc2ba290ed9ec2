"""NGD's early stop: a request whose next step would barely move its routing stops there, with the routing the
fixed step count would reach, and the requests descending beside it go on exactly as they would alone."""

import torch

from r2t2.routing.descent import projected_adam

STEPS = 10
# Request 0 is pulled into a corner of the simplex fast (large learning rate): once there the projection
# undoes every further step. Request 1 circles an inner point and is still moving at step 10.
TARGETS = torch.tensor([[[1.0, 0.0, 0.0]], [[0.5, 0.3, 0.2]]])
LR, LR_MIN = torch.tensor([0.5, 0.1]), torch.tensor([1e-5, 1e-5])


def descend(picked: list[int], tolerance: float | None, evaluated: list[list[int]] | None = None) -> list:
    targets = TARGETS[picked]

    def objective(routings: torch.Tensor, live: list[int]) -> torch.Tensor:
        if evaluated is not None:
            evaluated.append(list(live))
        return (routings - targets).pow(2).sum((-2, -1))

    starts = torch.full((len(picked), 1, 3), 1 / 3)
    tolerances = None if tolerance is None else torch.full((len(picked),), tolerance)
    return projected_adam(objective, starts, STEPS, LR[picked], LR_MIN[picked], tolerance=tolerances)


def test_a_settled_request_stops_where_the_fixed_step_count_would_end() -> None:
    evaluated: list[list[int]] = []
    early, fixed = descend([0, 1], 1e-3, evaluated), descend([0, 1], None)
    settled, moving = early
    assert settled.fallback is None and 0 < settled.steps < STEPS
    assert len(settled.losses) == settled.steps + 1  # a loss for every iterate it reached, the last included
    assert torch.allclose(settled.final, fixed[0].final, atol=1e-6, rtol=0)
    assert torch.allclose(settled.final, TARGETS[0], atol=1e-6, rtol=0)
    assert moving.steps == STEPS and torch.equal(moving.final, fixed[1].final)
    # The objective is told who is still descending, so it can skip the settled request's work.
    assert evaluated[0] == [0, 1] and evaluated[-1] == [1]


def test_each_request_stops_as_it_would_alone() -> None:
    together = descend([0, 1], 1e-3)
    for q in (0, 1):
        alone = descend([q], 1e-3)[0]
        assert alone.steps == together[q].steps and torch.equal(alone.final, together[q].final)


def test_a_zero_tolerance_takes_every_step() -> None:
    assert [d.steps for d in descend([0, 1], 0.0)] == [STEPS, STEPS]
