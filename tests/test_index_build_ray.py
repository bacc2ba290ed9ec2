"""With Ray initialised, build batches run as Ray tasks and give the same index as in-process."""
from __future__ import annotations

import pytest

from indexes.build import build_index
from indexes.reference_index import ReferenceIndex
from indexes.store import IndexStore
from tests.index_toys import ToyEmbedder, ToyEncoder, toy_samples

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_build_matches_in_process_build(tmp_path) -> None:
    store = IndexStore(tmp_path)
    samples = toy_samples(90)
    local = build_index("local", samples, ToyEncoder(), ToyEmbedder(), store, {}, batch_size=10, cap=40, progress=False)
    encoder = ToyEncoder()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        distributed = build_index("ray", samples, encoder, ToyEmbedder(), store, {}, batch_size=10, cap=40,
                                  progress=False)
    finally:
        ray.shutdown()
    assert encoder.batches_seen == 0  # the driver's copy never ran: the batches ran in Ray workers
    assert (distributed.kept, distributed.seen) == (local.kept, local.seen)
    a, b = ReferenceIndex.load(store, "local"), ReferenceIndex.load(store, "ray")
    assert a.take(list(range(a.size))).ids == b.take(list(range(b.size))).ids
    assert (a.all_routings == b.all_routings).all()


@pytest.mark.slow
def test_a_model_too_large_to_copy_into_tasks_builds_where_it_is_loaded(tmp_path) -> None:
    from indexes.build import SHIPPED_AT_MOST

    store = IndexStore(tmp_path)
    encoder = ToyEncoder()
    encoder.weight_bytes = SHIPPED_AT_MOST + 1
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        built = build_index("large", toy_samples(30), encoder, ToyEmbedder(), store, {}, batch_size=10, cap=40,
                            progress=False)
    finally:
        ray.shutdown()
    assert encoder.batches_seen == 3 and built.seen == 30  # every batch ran on the caller's copy
