"""Reference-index benchmark: build throughput, per-query search latency, recall and memory per vector
for flat / hnsw / ivf at 1k, 100k and 1M synthetic 384-d unit vectors (MiniLM's dimension).

Searches run one query per call on one FAISS thread, as a serving thread does: with OpenMP threads a
single small query mostly pays thread start-up, which dominates on a busy machine.
Vectors are drawn around 2,000 random centres so that approximate indexes face clustered data like real
question embeddings, not a uniform sphere where no index can do better than chance. A combination whose
build is projected to overrun the time budget is skipped with the reason printed.

    .venv/bin/python -m bench.index_bench [--budget-s 540] [--queries 200]
"""
from __future__ import annotations

import argparse
import math
import time

import faiss
import numpy as np

from indexes.vectors import INDEX_TYPES, VectorIndex

DIM = 384
K = 5
SIZES = (1_000, 100_000, 1_000_000)
CENTRES = 2_000
_CHUNK = 100_000


def clustered_unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((CENTRES, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * 0.6
        out[start:stop] = centres[rng.integers(0, CENTRES, stop - start)] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_top_k(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = np.concatenate([queries @ base[s : s + _CHUNK].T for s in range(0, len(base), _CHUNK)], axis=1)
    return np.argpartition(-scores, K, axis=1)[:, :K]


def projected_build_s(kind: str, n: int, rates: dict[tuple[str, int], float]) -> float | None:
    """Build time predicted from the largest measured size of the same kind: n log n for hnsw, and
    n^1.5 for ivf (cells grow as sqrt(n), every vector is compared with every cell centre)."""
    measured = [size for (k, size) in rates if k == kind]
    if not measured:
        return None
    size = max(measured)
    factor = {"hnsw": math.log(n) / math.log(size), "ivf": math.sqrt(n / size)}.get(kind, 1.0)
    return n / rates[(kind, size)] * factor


def run(budget_s: float, n_queries: int, build_threads: int) -> list[list[str]]:
    started = time.perf_counter()
    rates: dict[tuple[str, int], float] = {}
    rows = []
    queries_all = clustered_unit_vectors(n_queries, seed=99)
    for n in SIZES:
        base = clustered_unit_vectors(n, seed=n)
        truth = exact_top_k(base, queries_all)
        for kind in INDEX_TYPES:
            left = budget_s - (time.perf_counter() - started)
            projected = projected_build_s(kind, n, rates)
            if projected is not None and projected > 0.6 * left:
                rows.append([kind, f"{n:,}", f"skipped: projected build {projected:.0f}s > 60% of the "
                             f"{left:.0f}s left"])
                continue
            faiss.omp_set_num_threads(build_threads)
            t0 = time.perf_counter()
            index = VectorIndex.build(base, kind)
            build_s = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)  # one query per call, as a serving thread does
            rates[(kind, n)] = n / build_s
            latencies = []
            found = []
            for q in queries_all:
                t0 = time.perf_counter()
                _, r = index.search(q[None, :], K)
                latencies.append((time.perf_counter() - t0) * 1e3)
                found.append(r[0])
            recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
            rows.append([kind, f"{n:,}", f"{n / build_s:,.0f}", f"{np.median(latencies):.3f}",
                         f"{np.percentile(latencies, 99):.3f}", f"{recall:.3f}",
                         f"{index.serialized_bytes() / n:,.0f}"])
            del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting builds past this")
    parser.add_argument("--queries", type=int, default=200, help="single-vector queries timed per index")
    args = parser.parse_args()
    t0 = time.perf_counter()
    build_threads = faiss.omp_get_max_threads()
    rows = run(args.budget_s, args.queries, build_threads)
    headers = ["TYPE", "VECTORS", "BUILD VEC/S", "MEDIAN MS", "P99 MS", "RECALL@5", "BYTES/VEC"]
    cells = [headers] + rows
    full = [r for r in cells if len(r) == len(headers)]  # a skip note may overflow its column
    widths = [max(len(r[i]) for r in full) for i in range(len(headers))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    print(f"\ndim {DIM}, k={K}, {args.queries} single-vector queries per index, searches on 1 thread, builds on "
          f"{build_threads}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
