"""A supervised separability measure beside the AQI: the cross-validated linear-probe ROC AUC.

Numerical code only (numpy, scikit-learn; no torch, no I/O). The AQI is an unsupervised variance
share: it sees a safe/unsafe difference only where it moves the class centroids apart relative to
all the variance, so a direction that separates the classes perfectly can be drowned by
high-variance directions that do not (seen in this project: a probe separated the bundled prompts
at 0.69 accuracy where the AQI of the same features was -0.05). A linear probe asks the supervised
question instead: can *any* linear read-out tell the classes apart on held-out prompts?

The probe (``y == 1`` safe, ``y == 0`` unsafe):

* ``n_folds``-fold stratified cross-validation with shuffled, seeded folds
  (``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``);
* in each training fold what ``Pipeline(StandardScaler(), LogisticRegression(C=C))`` fits:
  per-feature standardisation fitted on the training rows only, then an L2-regularised logistic
  regression (intercept not penalised). Up to ``NEWTON_MAX_DIM`` dimensions (``min(n, d) + 1``:
  the world's and the real small models' sizes) the regressions are solved to convergence by a
  batched Newton method written here (every fold of the labels and of each shuffle at once):
  scikit-learn fits one problem per call, and for a few hundred rows its per-fit overhead and
  lbfgs's ~70 iterations cost 5-8x more; the tests check the solutions against scikit-learn's
  solver run to a tight tolerance. Larger problems (paper scale), where a Newton step's
  ``n k^2`` would cost more than lbfgs's iterations, are fitted fold by fold by scikit-learn's
  lbfgs (its default tolerance);
* the out-of-fold decision scores of all rows (each from the model that did not see it), pooled,
  give one ROC AUC (``sklearn.metrics.roc_auc_score``; 0.5 is chance, 1 perfect, higher scores
  mean "safe"). Pooling scores of ``n_folds`` different models can cost a little AUC when their
  offsets differ, which makes the estimate slightly conservative.

Interval: the out-of-fold scores are resampled within each class (class sizes fixed, multinomial
counts, as the AQI's bootstrap), and the AUC of each resample is computed from the counts
(:func:`weighted_auc`, vectorised). The probe is **not refitted** per draw, so the interval covers
the sampling of the evaluation prompts given the fitted probes, not the variability of fitting
them; the label-shuffle null below, which does refit, is the test of "any separation at all".
The interval is the bias-corrected percentile interval (:func:`driftlib.stats.aqi.bc_interval`)
about the point AUC; the AUC is a plug-in statistic of the scores (the mean AUC of the resamples
equals it), so this is the textbook BC interval.

Null: ``n_perm`` shuffles of the labels (class sizes kept), each with the whole cross-validation
refitted on the shuffled labels (the folds re-stratified on them, same fold seed). Reported:
``null_mean`` (about 0.5; slightly below in small samples, a known property of cross-validated
scores under the null), ``null_q95`` and ``p_value = (1 + #(null >= auc)) / (1 + n_perm)``, whose
smallest possible value is ``1 / (n_perm + 1)``. Each shuffle costs ``n_folds`` fits, so
``n_perm`` is small by default.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.errors import ConfigError, DataError
from driftlib.stats import aqi as _aqi

__all__ = ["ProbeResult", "PROBE_FIELDS", "oof_scores", "weighted_auc", "bootstrap_auc", "probe_auc",
           "probe_categories"]

#: iteration cap of the batched logistic regressions' Newton solver (they converge in about 10)
MAX_ITER = 100
#: the largest problem dimension (``min(n, d) + 1``) solved by the batched Newton method: a Newton
#: step costs ``n k^2``, so beyond it (paper-scale prompts and widths) each fold is fitted by
#: scikit-learn's lbfgs instead, whose step costs ``n d``
NEWTON_MAX_DIM = 256
#: iteration cap of scikit-learn's lbfgs, on problems above ``NEWTON_MAX_DIM``
LBFGS_MAX_ITER = 1000


@dataclass(frozen=True)
class ProbeResult:
    """One category's cross-validated linear-probe AUC.

    ``n, n_safe, n_unsafe``: row counts; ``n_features``: columns of ``X``; ``n_folds``: folds used;
    ``auc``: ROC AUC of the pooled out-of-fold decision scores (safe scores high); ``accuracy``:
    out-of-fold accuracy of the probes' own decisions (score > 0 means safe); ``ci_low, ci_high``:
    bias-corrected bootstrap interval of the AUC (out-of-fold scores resampled within each class,
    probes not refitted); ``se``: bootstrap standard error; ``null_mean, null_q95, p_value``: the
    label-shuffle null with the cross-validation refitted per shuffle (``p_value >= 1/(n_perm+1)``);
    ``n_perm``: shuffles used; ``defined``: False when a class has fewer than ``n_folds`` rows
    (then every statistic is NaN); ``note``: why it is undefined, or another remark ("" when none).
    """

    n: int
    n_safe: int
    n_unsafe: int
    n_features: int
    n_folds: int
    auc: float
    accuracy: float
    ci_low: float
    ci_high: float
    se: float
    null_mean: float
    null_q95: float
    p_value: float
    n_perm: int
    defined: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict`` (field order kept)."""
        return asdict(self)


PROBE_FIELDS = tuple(f.name for f in fields(ProbeResult))


# --------------------------------------------------------------------------------------------
# checks


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _check_options(n_folds: Any, n_boot: Any, n_perm: Any, confidence: Any, C: Any) -> tuple[int, int, int]:
    n_folds = _check_int("n_folds", n_folds, 2)
    n_boot = _check_int("n_boot", n_boot, 0)
    n_perm = _check_int("n_perm", n_perm, 0)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    if isinstance(C, bool) or not isinstance(C, numbers.Real) or not (0.0 < C < np.inf):
        raise ConfigError(f"C (inverse regularisation strength) must be a positive finite number; got {C!r}")
    return n_folds, n_boot, n_perm


def _checked(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X, yb = _aqi.check_xy(X, y)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    return X, yb


def _too_few(n_s: int, n_u: int, n_folds: int) -> str | None:
    for name, count in (("safe", n_s), ("unsafe", n_u)):
        if count < n_folds:
            return f"undefined: class '{name}' has {count} row{'s' if count != 1 else ''}, fewer than n_folds = {n_folds}"
    return None


# --------------------------------------------------------------------------------------------
# the probe


def _fold_ids(yb: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Each row's test fold ``[n]`` under ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``."""
    from sklearn.model_selection import StratifiedKFold

    ids = np.empty(yb.size, dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                                  .split(np.zeros((yb.size, 1)), yb)):
        ids[test] = f
    return ids


def _logistic_newton(F: np.ndarray, y: np.ndarray, m: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Batched L2-regularised logistic regressions by damped Newton: ``(theta [q, k], converged [q])``.

    Problem ``i`` minimises ``C sum_j m[i, j] (log(1 + exp(z_j)) - y[i, j] z_j) + 0.5 ||theta[i, :-1]||^2``
    with ``z = F[i] @ theta[i]``; the last column of ``F [q, n, k]`` is the intercept's (ones), not
    penalised, as scikit-learn's ``LogisticRegression(C=C)``. ``m [q, n]`` is 1 on the training rows.
    The objective is strictly convex (the penalty, and the intercept's curvature), so Newton steps
    with backtracking converge quadratically; a problem stops after the full step taken at a Newton
    decrement below ``1e-8 (1 + f)``, which leaves it about that squared from the optimum.
    """
    from scipy.special import expit

    q, n, k = F.shape
    lam = np.ones(k)
    lam[-1] = 0.0
    theta = np.zeros((q, k))

    def objective(th: np.ndarray, idx: np.ndarray) -> np.ndarray:
        z = np.matmul(F[idx], th[..., None])[..., 0]
        return C * np.einsum("qn,qn->q", m[idx], np.logaddexp(0.0, z) - y[idx] * z) + 0.5 * (th * th) @ lam

    active = np.arange(q)
    f = objective(theta, active)
    for _ in range(MAX_ITER):
        if active.size == 0:
            break
        th = theta[active]
        Fa, ma = F[active], m[active]
        Fta = Fa.transpose(0, 2, 1)
        p = expit(np.matmul(Fa, th[..., None])[..., 0])
        grad = C * np.matmul(Fta, (ma * (p - y[active]))[..., None])[..., 0] + lam * th
        hess = C * np.matmul(Fta * (ma * p * (1.0 - p))[:, None, :], Fa)
        hess[:, np.arange(k - 1), np.arange(k - 1)] += 1.0
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        decrement = np.einsum("qk,qk->q", grad, step)  # about twice the distance to the optimum in f
        # near the optimum the full step is taken and the problem is done: the next decrement would be
        # about this one squared, below what the objective's rounding can show
        done = decrement < 1e-8 * (1.0 + np.abs(f[active]))
        t = np.ones(active.size)
        f_new = objective(th - step, active)
        slack = 1e-12 * (1.0 + np.abs(f[active]))
        for _ in range(50):  # backtracking (Armijo) where the full step does not decrease enough
            bad = ~done & ~(f_new <= f[active] - 1e-4 * t * decrement + slack)
            if not bad.any():
                break
            t[bad] *= 0.5
            f_new[bad] = objective(th[bad] - t[bad, None] * step[bad], active[bad])
        theta[active] = th - t[:, None] * step
        f[active] = f_new
        active = active[~done]
    converged = np.ones(q, dtype=bool)
    converged[active] = False
    return theta, converged


def _cv_scores_lbfgs(X: np.ndarray, yb: np.ndarray, n_folds: int, seed: int, C: float) -> tuple[np.ndarray, int]:
    """Out-of-fold scores ``[n]`` of one label row by scikit-learn (a fit per fold), and the number
    of fits that hit ``LBFGS_MAX_ITER``: the path for problems above ``NEWTON_MAX_DIM``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=LBFGS_MAX_ITER))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scores = cross_val_predict(model, X, yb, cv=cv, method="decision_function")
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return np.asarray(scores, dtype=np.float64), unconverged


def _cv_scores(X: np.ndarray, Y: np.ndarray, n_folds: int, seed: int, C: float) -> tuple[np.ndarray, int]:
    """Out-of-fold decision scores ``[p, n]`` for each label row of ``Y [p, n]``, and the number of
    fits that did not converge.

    Each label row gets its own stratified folds; each (row, fold) is one problem: the training
    rows' standardisation (``StandardScaler``: mean, population SD, SD below ``10 eps`` taken as 1)
    and an L2 logistic regression on the standardised training rows, which scores the fold's test
    rows. All problems are fitted together by :func:`_logistic_newton` (scikit-learn fits one at a
    time: ``p * n_folds`` fits of about 100 rows would cost mostly its per-fit overhead). Where there
    are more features than rows the fit runs in the training rows' span (the thin SVD of the
    standardised training rows; an L2 optimum lies in it), which gives the same scores. Problems
    above ``NEWTON_MAX_DIM`` go to scikit-learn's lbfgs, one fit per fold (:func:`_cv_scores_lbfgs`).
    """
    n, d = X.shape
    if min(n, d) + 1 > NEWTON_MAX_DIM:
        pairs = [_cv_scores_lbfgs(X, yrow, n_folds, seed, C) for yrow in Y]
        return np.stack([sc for sc, _ in pairs]), sum(k for _, k in pairs)
    folds = np.stack([_fold_ids(yrow, n_folds, seed) for yrow in Y])  # [p, n]
    problems = [(i, f) for i in range(Y.shape[0]) for f in range(n_folds)]
    width = n * (d + 1) * 3
    chunk = _aqi.block_rows(width)
    scores = np.empty(Y.shape, dtype=np.float64)
    unconverged = 0
    eps = 10 * np.finfo(np.float64).eps
    for start in range(0, len(problems), chunk):
        batch = problems[start:start + chunk]
        rows = np.array([i for i, _ in batch])
        train = np.stack([folds[i] != f for i, f in batch])  # [q, n]
        mt = train.astype(np.float64)
        n_train = mt.sum(axis=1)[:, None]
        mu = (mt @ X) / n_train  # [q, d]
        var = (mt @ (X * X)) / n_train - mu * mu
        sd = np.sqrt(np.clip(var, 0.0, None))
        sd[sd < eps] = 1.0
        Z = (X[None] - mu[:, None, :]) / sd[:, None, :]  # [q, n, d]
        if d > n:
            _, _, vt = np.linalg.svd(Z * mt[..., None], full_matrices=False)  # [q, min(n, d), d]
            Z = np.matmul(Z, vt.transpose(0, 2, 1))
        F = np.concatenate([Z, np.ones(Z.shape[:2] + (1,))], axis=2)
        theta, converged = _logistic_newton(F, Y[rows].astype(np.float64), mt, C)
        unconverged += int(np.count_nonzero(~converged))
        s = np.matmul(F, theta[..., None])[..., 0]
        for j, (i, f) in enumerate(batch):
            test = folds[i] == f
            scores[i, test] = s[j, test]
    return scores, unconverged


def oof_scores(X: Any, y: Any, *, n_folds: int = 5, seed: int = 0, C: float = 1.0) -> np.ndarray:
    """Out-of-fold decision scores of the cross-validated linear probe.

    Args:
        X: Features ``[n, d]`` (finite).
        y: Labels ``[n]``, bool or 0/1 (1 = safe).
        n_folds: Folds of ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` (>= 2).
        seed: The folds' random state.
        C: Inverse L2 regularisation strength of the logistic regression.

    Returns:
        Array ``[n]``: each row's decision score (log-odds of "safe") from the probe fitted on the
        other folds (standardisation fitted inside each training fold).

    Raises:
        DataError: bad shapes or labels, or a class with fewer than ``n_folds`` rows.
        NumericsError: NaN/Inf in ``X``.
        ConfigError: bad ``n_folds`` or ``C``.
    """
    n_folds, _, _ = _check_options(n_folds, 0, 0, 0.5, C)
    X, yb = _checked(X, y)
    n_s = int(yb.sum())
    note = _too_few(n_s, yb.size - n_s, n_folds)
    if note is not None:
        raise DataError(note)
    return _cv_scores(X, yb[None], n_folds, int(seed), float(C))[0][0]


def weighted_auc(pos: Any, neg: Any, w_pos: Any, w_neg: Any) -> np.ndarray:
    """ROC AUC of weighted score samples: ``P(pos > neg) + 0.5 P(pos == neg)`` for each weight row.

    Args:
        pos: Scores ``[n_p]`` of the positive class.
        neg: Scores ``[n_n]`` of the negative class.
        w_pos: Non-negative weights ``[b, n_p]`` (e.g. bootstrap counts), one row per replicate.
        w_neg: Non-negative weights ``[b, n_n]``.

    Returns:
        Array ``[b]``: ``sum_ij w_pos[i] w_neg[j] (1[p_i > q_j] + 0.5 1[p_i == q_j]) / (sum w_pos sum w_neg)``,
        computed by sorting (``O(b (n_p + n_n))`` memory, no ``n_p x n_n`` matrix): for each negative
        score, the weights of the positive scores above and tied come from cumulative sums.
    """
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    w_pos = np.atleast_2d(np.asarray(w_pos, dtype=np.float64))
    w_neg = np.atleast_2d(np.asarray(w_neg, dtype=np.float64))
    if pos.ndim != 1 or neg.ndim != 1 or w_pos.shape[1:] != pos.shape or w_neg.shape[1:] != neg.shape \
            or w_pos.shape[0] != w_neg.shape[0]:
        raise DataError(f"weighted_auc: shapes do not fit: pos {pos.shape}, neg {neg.shape}, "
                        f"w_pos {w_pos.shape}, w_neg {w_neg.shape}")
    order = np.argsort(pos, kind="stable")
    sorted_pos = pos[order]
    lo = np.searchsorted(sorted_pos, neg, side="left")  # positives strictly below each negative
    hi = np.searchsorted(sorted_pos, neg, side="right")  # positives at or below
    cum = np.zeros((w_pos.shape[0], pos.size + 1))
    np.cumsum(w_pos[:, order], axis=1, out=cum[:, 1:])
    total = cum[:, -1:]
    above = total - cum[:, hi]  # [b, n_n]: weight of positives strictly above each negative
    tied = cum[:, hi] - cum[:, lo]
    num = np.einsum("bj,bj->b", w_neg, above + 0.5 * tied)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (total[:, 0] * w_neg.sum(axis=1))


def bootstrap_auc(scores: Any, y: Any, *, n_boot: int = 1000, seed: int | np.random.SeedSequence = 0) -> np.ndarray:
    """AUCs of ``n_boot`` within-class resamples of fixed scores: ``[n_boot]``.

    Args:
        scores: Scores ``[n]`` (e.g. :func:`oof_scores`).
        y: Labels ``[n]``, bool or 0/1 (1 = safe, the positive class).
        n_boot: Resamples (>= 1).
        seed: An int or a ``numpy.random.SeedSequence``; two independent streams are spawned from it,
            one for the safe class's multinomial counts and one for the unsafe class's (class sizes
            fixed), so the same inputs and seed give the same draws.

    Returns:
        Array ``[n_boot]`` of :func:`weighted_auc` values of the resamples (nothing is refitted).
    """
    n_boot = _check_int("n_boot", n_boot, 1)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise DataError(f"scores must be 1-D; got shape {s.shape}")
    yb = _aqi.check_xy(s[:, None], y)[1]
    pos, neg = s[yb], s[~yb]
    if pos.size == 0 or neg.size == 0:
        raise DataError("bootstrap_auc needs at least one row of each class")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    ss_s, ss_u = ss.spawn(2)
    out = np.empty(n_boot)
    step = _aqi.block_rows(2 * max(pos.size, neg.size) + 1)
    start = 0
    for ws, wu in zip(_aqi.count_blocks(ss_s, pos.size, n_boot, step), _aqi.count_blocks(ss_u, neg.size, n_boot, step)):
        out[start:start + ws.shape[0]] = weighted_auc(pos, neg, ws, wu)
        start += ws.shape[0]
    return out


def _undefined(n: int, n_s: int, d: int, n_folds: int, n_perm: int, note: str) -> ProbeResult:
    nan = float("nan")
    return ProbeResult(n=n, n_safe=n_s, n_unsafe=n - n_s, n_features=d, n_folds=n_folds, auc=nan, accuracy=nan,
                       ci_low=nan, ci_high=nan, se=nan, null_mean=nan, null_q95=nan, p_value=nan, n_perm=n_perm,
                       defined=False, note=note)


def probe_auc(X: Any, y: Any, *, n_folds: int = 5, n_boot: int = 1000, n_perm: int = 50,
              confidence: float = 0.95, seed: int = 0, C: float = 1.0) -> ProbeResult:
    """Cross-validated linear-probe ROC AUC of one category, with interval and label-shuffle null.

    Args:
        X: Pooled hidden states ``[n, d]`` of the category's prompts (finite).
        y: Labels ``[n]``, bool or 0/1 (1 = safe, 0 = unsafe).
        n_folds: Stratified folds (>= 2); a class needs at least ``n_folds`` rows.
        n_boot: Bootstrap resamples of the out-of-fold scores within each class (0 skips the interval;
            the probes are **not** refitted per draw, see the module docstring).
        n_perm: Label shuffles for the null, each refitting the whole cross-validation (0 skips it;
            cost ``n_perm * n_folds`` fits, hence the small default).
        confidence: Coverage of the interval, in (0, 1).
        seed: The folds' random state (also for every shuffle), and the root of a
            ``numpy.random.SeedSequence`` whose two children seed the bootstrap (two class streams,
            see :func:`bootstrap_auc`) and the shuffles: changing ``n_boot`` does not change the null.
        C: Inverse L2 regularisation strength of the logistic regression (features standardised).

    Returns:
        ProbeResult: ``defined=False`` with NaN statistics when a class has fewer than ``n_folds``
        rows; the ``note`` also reports fits that hit the solver's iteration cap.

    Raises:
        DataError: bad shapes or labels. NumericsError: NaN/Inf in ``X``. ConfigError: bad options.
    """
    from sklearn.metrics import roc_auc_score

    n_folds, n_boot, n_perm = _check_options(n_folds, n_boot, n_perm, confidence, C)
    X, yb = _checked(X, y)
    n, d = X.shape
    n_s = int(yb.sum())
    note = _too_few(n_s, n - n_s, n_folds)
    if note is not None:
        return _undefined(n, n_s, d, n_folds, n_perm, note)

    seed = int(seed)
    ss_boot, ss_perm = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(ss_perm)
    Y = np.stack([yb, *(rng.permutation(yb) for _ in range(n_perm))])  # the labels, then each shuffle
    all_scores, unconverged = _cv_scores(X, Y, n_folds, seed, float(C))
    scores = all_scores[0]
    auc = float(roc_auc_score(yb, scores))
    accuracy = float(np.mean((scores > 0) == yb))

    ci_low = ci_high = se = float("nan")
    if n_boot > 0:
        boot = bootstrap_auc(scores, yb, n_boot=n_boot, seed=ss_boot)
        ci_low, ci_high = _aqi.bc_interval(boot, auc, confidence)
        se = float(np.std(boot, ddof=1)) if n_boot > 1 else float("nan")

    null_mean = null_q95 = p_value = float("nan")
    if n_perm > 0:
        null = np.array([roc_auc_score(Y[i], all_scores[i]) for i in range(1, n_perm + 1)])
        null_mean = float(null.mean())
        null_q95 = float(np.quantile(null, 0.95))
        p_value = float((1 + np.count_nonzero(null >= auc)) / (1 + n_perm))

    notes = []
    if unconverged:
        cap = f"{MAX_ITER} Newton steps" if min(n, d) + 1 <= NEWTON_MAX_DIM else f"max_iter={LBFGS_MAX_ITER}"
        notes.append(f"{unconverged} logistic-regression fit(s) stopped at {cap} before converging")
    return ProbeResult(n=n, n_safe=n_s, n_unsafe=n - n_s, n_features=d, n_folds=n_folds, auc=auc, accuracy=accuracy,
                       ci_low=float(ci_low), ci_high=float(ci_high), se=se, null_mean=null_mean, null_q95=null_q95,
                       p_value=p_value, n_perm=n_perm, defined=True, note="; ".join(notes))


# --------------------------------------------------------------------------------------------
# tables


def probe_categories(X: Any, y: Any, categories: Any, *, layer: int | None = None, **kwargs: Any) -> pd.DataFrame:
    """Probe AUC per category: one row per distinct category (sorted, as strings) plus ``'overall'``.

    Args:
        X: Features ``[n, d]``.
        y: Labels ``[n]`` (1 = safe).
        categories: ``[n]`` category of each row (e.g. the axiom); ``'overall'`` is reserved.
        layer: When given, a ``layer`` column holds it.
        **kwargs: Options of :func:`probe_auc` (``n_folds, n_boot, n_perm, confidence, seed, C``).

    Returns:
        DataFrame with columns ``category``, ``layer`` (when given) and every :class:`ProbeResult`
        field. Each row is computed from that category's rows alone with the same seed, as
        :func:`driftlib.stats.aqi.score_categories` does, so rows do not depend on other categories.

    Raises:
        DataError: bad shapes, or a category named ``'overall'``.
    """
    X, yb = _checked(X, y)
    cats = np.asarray(categories)
    if cats.ndim != 1 or cats.shape[0] != X.shape[0]:
        raise DataError(f"categories must be 1-D with one entry per row of X ({X.shape[0]}); got shape {cats.shape}")
    cats = cats.astype(str)
    if np.any(cats == "overall"):
        raise DataError("a category is named 'overall', which is reserved for the row over all categories")
    rows = []
    for cat in [*np.unique(cats).tolist(), "overall"]:
        mask = np.ones(cats.size, dtype=bool) if cat == "overall" else cats == cat
        res = probe_auc(X[mask], yb[mask], **kwargs)
        row: dict[str, Any] = {"category": cat}
        if layer is not None:
            row["layer"] = int(layer)
        row.update(res.as_dict())
        rows.append(row)
    columns = ["category", *(["layer"] if layer is not None else []), *PROBE_FIELDS]
    return pd.DataFrame(rows, columns=columns)
