"""Benchmark: one alignment_quality call at paper scale (a script, not a test).

    python benchmarks/bench_aqi.py [--n 28000] [--d 4096] [--n-boot 1000] [--n-perm 200]
    python benchmarks/bench_aqi.py --coverage     # interval coverage simulation (docs/aqi.md)

Times the default settings (z-score + 32-component PCA) and ``n_components=None`` (all
standardised features) on float32 Gaussian data with a small class separation, and prints the
seconds, the ratio to the 60 s target, and the process's peak memory. Other processes on the
machine (and BLAS thread oversubscription) change the numbers: the load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

from driftlib.stats import aqi as _aqi
from driftlib.stats.aqi import alignment_quality

TARGET_S = 60.0


def make_data(n: int, d: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``X [n, d]`` (unit Gaussian) and ``y [n]`` (half safe), safe rows shifted by
    ``separation`` along a random unit direction; generated block-wise to keep memory flat."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        X[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
    y = np.zeros(n, dtype=np.int8)
    y[: n // 2] = 1
    X[: n // 2] += (separation * u).astype(np.float32)
    return X, y


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def coverage(reps: int = 150, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> None:
    """Coverage of the population AQI by three bootstrap intervals, isotropic Gaussian classes.

    Classes are unit Gaussians in k dims, the safe one shifted by delta along one axis, scored with
    method "none", so the population value is ``tau = 100 * 0.25 / (0.25 + k / delta^2)``.
    Intervals: "ours" (BC about the bootstrap-world value, the one alignment_quality reports),
    "BC@estimate" (the textbook BC formula with z0 taken about the chance-corrected estimate) and
    "percentile". Prints the share of samples whose interval covers tau and the share whose
    interval contains its own point estimate.
    """
    settings = [(32, 25, 25, 0.0), (32, 25, 25, 1.5), (32, 25, 25, 3.0), (8, 25, 25, 0.0),
                (8, 25, 25, 1.5), (32, 20, 60, 1.5), (32, 200, 200, 1.0)]
    alpha = 1.0 - confidence
    rng = np.random.default_rng(seed)
    print(f"coverage of tau by {confidence:.0%} intervals, {reps} samples per setting, n_boot={n_boot}")
    for k, n_s, n_u, delta in settings:
        n, p = n_s + n_u, n_s / (n_s + n_u)
        tau = 100 * 0.25 / (0.25 + k / delta**2) if delta > 0 else 0.0
        hits = {"ours": [0, 0], "BC@estimate": [0, 0], "percentile": [0, 0]}
        for _ in range(reps):
            Z = rng.standard_normal((n, k))
            Z[:n_s, 0] += delta
            c_s, c_u, rn = _aqi.two_class_moments(Z, n_s)
            xb = float(_aqi.xb_from(rn.sum(), np.sum((c_s - c_u) ** 2), n))
            est = _aqi.aqi_from_xb(xb, p, n)
            tau_n = 100 * 0.25 / (0.25 + xb)
            boot = _aqi.aqi_from_xb(_aqi._bootstrap_xb(Z, n_s, c_s, c_u, rn, n_boot, rng, rng), p, n)
            lo, hi = _aqi.bc_interval(boot, tau_n, confidence)
            ints = {"ours": (est + lo - tau_n, est + hi - tau_n),
                    "BC@estimate": _aqi.bc_interval(boot, est, confidence),
                    "percentile": tuple(np.quantile(boot, [alpha / 2, 1 - alpha / 2]))}
            for name, (a, b) in ints.items():
                hits[name][0] += a <= tau <= b
                hits[name][1] += a <= est <= b
        summary = "  ".join(f"{name}: covers {c / reps:.2f}, holds estimate {h / reps:.2f}"
                            for name, (c, h) in hits.items())
        print(f"k={k:2d} n_s={n_s:3d} n_u={n_u:3d} delta={delta:.1f} tau={tau:6.3f} | {summary}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=28_000)
    ap.add_argument("--d", type=int, default=4_096)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--n-perm", type=int, default=200)
    ap.add_argument("--separation", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coverage", action="store_true", help="run the interval coverage simulation instead")
    args = ap.parse_args(argv)
    if args.coverage:
        coverage(seed=args.seed)
        return 0

    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    except ImportError:  # pragma: no cover
        blas = "?"
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()} threadpools=[{blas}]")
    t0 = time.perf_counter()
    X, y = make_data(args.n, args.d, args.separation, args.seed)
    print(f"data: X {X.shape} {X.dtype} ({X.nbytes / 2**30:.2f} GiB), made in {time.perf_counter() - t0:.1f} s; "
          f"peak RSS so far {peak_rss_gib():.2f} GiB")

    for label, kw in [("default (standardize, n_components=32)", {}),
                      ("n_components=None (all standardised features)", {"n_components": None})]:
        t0 = time.perf_counter()
        res = alignment_quality(X, y, n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed, **kw)
        dt = time.perf_counter() - t0
        print(f"{label}: {dt:.1f} s = {dt / TARGET_S:.2f} x the {TARGET_S:.0f} s target; "
              f"AQI {res.aqi:.3f} [{res.ci_low:.3f}, {res.ci_high:.3f}] se {res.se:.3f}, "
              f"null mean {res.null_mean:.4f} q95 {res.null_q95:.4f}, p {res.p_value:.4f}, "
              f"k={res.n_features}; peak RSS {peak_rss_gib():.2f} GiB; load_avg={os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
