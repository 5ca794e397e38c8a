"""Benchmark: a sweep-scoring job's statistics, side by side with the way they were computed before.

    python benchmarks/bench_scoring.py [--blocks 20] [--n 280] [--d 112] [--n-perm 20]
    python benchmarks/bench_scoring.py --sweep results/dealign/llama/steps60/sweep.safetensors \
        --prompts results/data/prompts.parquet      # a run's own states (the first --blocks blocks)

A `score-sweep` job scores hundreds of blocks of states over the same prompts with the same seed:
per block the AQI with its bootstrap interval and null, and the linear probe with its interval and
label-shuffle null. Two things changed (issue 19), each timed here against the old way in the same
process, on blocks shaped like the world's states (280 prompts, the tiny models' widths), or on a
run's own sweep (``--sweep``, ``--prompts``: every vector's and lambda's block at the first
measurement layer, labels from the prompts' ``safety_label``):

- **probe**: :func:`driftlib.stats.probe.probe_auc` with ``NEWTON_MAX_DIM = 0``, which sends every
  problem to the old way (one ``cross_val_predict(StandardScaler + LogisticRegression(lbfgs))`` per
  label row: the labels, then each shuffle), against its default, which solves every fold of every
  label row together by a batched Newton method. Prints the time ratio
  and the largest AUC difference (the batched fits are solved to convergence, lbfgs stops at its
  tolerance, so the AUCs can differ in the third decimal where two scores nearly tie);
- **bootstrap counts**: ``alignment_quality`` with the multinomial resampling counts drawn anew per
  call (the cache off) against kept between calls (:func:`driftlib.stats.aqi.count_blocks`).
  Prints the time ratio and the largest difference of the AQI intervals (0: the same numbers).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from driftlib.stats import aqi as A
from driftlib.stats import probe as P


def blocks(count: int, n: int, d: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` blocks ``[n, d]`` shaped like hidden states: a rank-16 signal with feature scales
    over two orders of magnitude plus noise, the safe half shifted along a random direction by a
    varying amount (probe AUCs from about 0.6 to near 1, where logistic fits take longest)."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int8)
    y[: n // 2] = 1
    out = []
    for i in range(count):
        X = rng.standard_normal((n, 16)) @ rng.standard_normal((16, d)) + 0.3 * rng.standard_normal((n, d))
        X *= np.exp(rng.uniform(0.0, np.log(100.0), d))
        u = rng.standard_normal(d)
        X[y == 1] += (0.2 + 2.0 * i / max(count - 1, 1)) * u * X.std(axis=0) / np.linalg.norm(u) * np.sqrt(d) / 4
        out.append(X)
    return out, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--n", type=int, default=280)
    ap.add_argument("--d", type=int, default=112)
    ap.add_argument("--n-perm", type=int, default=20)
    ap.add_argument("--sweep", help="a sweep.safetensors of a run (its blocks instead of simulated ones)")
    ap.add_argument("--prompts", help="the run's prompts.parquet (labels for --sweep)")
    args = ap.parse_args()
    if args.sweep:
        import pandas as pd
        from safetensors.numpy import load_file

        states = load_file(args.sweep)
        y = (pd.read_parquet(args.prompts)["safety_label"] == "safe").to_numpy().astype(np.int8)
        Xs = [block[lam, :, 0].astype(np.float64) for block in states.values() for lam in range(block.shape[0])]
        Xs = Xs[: args.blocks]
        args.n, args.d = Xs[0].shape
    else:
        Xs, y = blocks(args.blocks, args.n, args.d, seed=0)
    P.probe_auc(Xs[0], y, n_perm=1, n_boot=10)  # imports and first-call set-up out of the timings

    def probe_aucs(newton_max_dim: int) -> tuple[float, list[float]]:
        P.NEWTON_MAX_DIM = newton_max_dim  # 0: every problem fold by fold with scikit-learn, the old way
        t0 = time.perf_counter()
        aucs = [P.probe_auc(X, y, n_perm=args.n_perm, n_boot=0).auc for X in Xs]
        return time.perf_counter() - t0, aucs

    batched_dim = P.NEWTON_MAX_DIM
    t_old, old = probe_aucs(0)
    t_new, new = probe_aucs(batched_dim)
    print(f"probe with its null ({args.blocks} blocks, n={args.n}, d={args.d}, {args.n_perm} shuffles, 5 folds): "
          f"old {t_old:.1f} s, batched {t_new:.1f} s, ratio {t_new / t_old:.3f}; "
          f"largest AUC difference {np.max(np.abs(np.subtract(old, new))):.4f}")

    def aqi_rows(cache_cells: int) -> tuple[float, np.ndarray]:
        A.COUNTS_CACHE_CELLS = cache_cells
        A.clear_count_cache()
        t0 = time.perf_counter()
        rows = [A.alignment_quality(X, y, n_boot=1000, n_perm=200) for X in Xs]
        return time.perf_counter() - t0, np.array([[r.ci_low, r.ci_high, r.p_value] for r in rows])

    cells = A.COUNTS_CACHE_CELLS
    t_fresh, fresh = aqi_rows(0)
    t_kept, kept = aqi_rows(cells)
    print(f"AQI with its interval and null ({args.blocks} blocks, 1000 resamples): counts drawn per call "
          f"{t_fresh:.1f} s, kept {t_kept:.1f} s, ratio {t_kept / t_fresh:.3f}; "
          f"largest difference {np.max(np.abs(fresh - kept)):.2g}")


if __name__ == "__main__":
    main()
