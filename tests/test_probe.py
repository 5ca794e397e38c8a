"""Tests of driftlib.stats.probe against closed forms (Gaussian blobs), a hand-written
cross-validation loop, scikit-learn's weighted AUC and the DeLong variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from driftlib.core.errors import ConfigError, DataError, NumericsError
from driftlib.stats import probe as Pr

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def blobs(n_per_class, d, delta, seed, scale=None):
    """Safe class at +delta/2 e_1, unsafe at -delta/2 e_1, identity covariance (rows interleaved).
    ``scale`` multiplies the features column-wise (the probe standardises, so it must not matter)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n_per_class), np.zeros(n_per_class)].astype(int))
    X = rng.standard_normal((y.size, d))
    X[:, 0] += np.where(y == 1, delta / 2, -delta / 2)
    if scale is not None:
        X = X * scale
    return X, y


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_auc_matches_the_closed_form_of_the_optimal_linear_rule(delta):
    """For N(+-delta/2 e_1, I) the best linear score is x_1: x_1(safe) - x_1(unsafe) ~ N(delta, 2),
    so AUC = P(difference > 0) = Phi(delta / sqrt(2)). 2000 per class in 5 dimensions: the
    cross-validated probe is within 0.02 of it (its sampling SD is about 0.008)."""
    X, y = blobs(2000, 5, delta, seed=1, scale=np.array([1.0, 10.0, 0.1, 3.0, 1e3]))
    res = Pr.probe_auc(X, y, n_perm=20, n_boot=1000, seed=0)
    truth = norm.cdf(delta / math.sqrt(2))
    assert res.defined and res.note == ""
    assert abs(res.auc - truth) < 0.02, (res.auc, truth)
    assert res.ci_low < truth < res.ci_high
    assert res.ci_low < res.auc < res.ci_high
    # accuracy of the probe's own decisions: the optimal rule's is Phi(delta / 2)
    assert abs(res.accuracy - norm.cdf(delta / 2)) < 0.03
    # the null: shuffled labels give AUCs about 0.5 with SD sqrt((n + 1) / (12 n_s n_u)) (Mann-Whitney)
    sd0 = math.sqrt((4000 + 1) / (12 * 2000 * 2000))
    assert abs(res.null_mean - 0.5) < 4 * sd0 / math.sqrt(20) + 0.002
    assert 0.5 < res.null_q95 < 0.5 + 3 * sd0
    assert res.p_value == pytest.approx(1 / 21)  # the floor: no shuffle reaches the real AUC
    assert (res.n, res.n_safe, res.n_unsafe, res.n_features, res.n_folds, res.n_perm) == (4000, 2000, 2000, 5, 5, 20)


def test_identical_classes_give_an_interval_containing_one_half():
    X, y = blobs(100, 20, 0.0, seed=3)
    res = Pr.probe_auc(X, y, n_perm=30, seed=0)
    assert res.ci_low < 0.5 < res.ci_high
    assert res.p_value > 0.1
    assert abs(res.null_mean - 0.5) < 0.03
    # over many null data sets the 95% interval contains 0.5 in most (allowing for the slight
    # downward bias of cross-validated AUCs under the null)
    hits = []
    for seed in range(20):
        X, y = blobs(60, 10, 0.0, seed=100 + seed)
        r = Pr.probe_auc(X, y, n_perm=0, n_boot=400, seed=seed)
        hits.append(r.ci_low <= 0.5 <= r.ci_high)
    assert sum(hits) >= 17, hits


def test_oof_scores_equal_a_hand_written_cross_validation():
    """Standardisation is fitted inside each training fold; folds are StratifiedKFold(shuffle, seed)."""
    X, y = blobs(40, 6, 1.0, seed=5, scale=np.array([1, 2, 3, 4, 5, 100.0]))
    X[:, 3] += 50.0
    got = Pr.oof_scores(X, y, n_folds=4, seed=7, C=0.5)
    want = np.empty(y.size)
    for train, test in StratifiedKFold(4, shuffle=True, random_state=7).split(X, y):
        sc = StandardScaler().fit(X[train])
        lr = LogisticRegression(C=0.5, max_iter=100_000, tol=1e-12).fit(sc.transform(X[train]), y[train])
        want[test] = lr.decision_function(sc.transform(X[test]))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    res = Pr.probe_auc(X, y, n_folds=4, seed=7, C=0.5, n_boot=0, n_perm=0)
    assert res.auc == pytest.approx(roc_auc_score(y, want), abs=1e-12)
    assert res.accuracy == pytest.approx(np.mean((want > 0) == (y == 1)), abs=1e-12)
    assert math.isnan(res.ci_low) and math.isnan(res.se) and math.isnan(res.p_value)
    # a scaler fitted on all rows (leaking the test folds' moments) gives different scores
    sc_all = StandardScaler().fit(X)
    leak = np.empty(y.size)
    for train, test in StratifiedKFold(4, shuffle=True, random_state=7).split(X, y):
        lr = LogisticRegression(C=0.5, max_iter=100_000, tol=1e-12).fit(sc_all.transform(X[train]), y[train])
        leak[test] = lr.decision_function(sc_all.transform(X[test]))
    assert np.abs(leak - got).max() > 1e-4


@pytest.mark.parametrize("n, d", [(120, 8), (50, 90)])
def test_each_fold_fit_is_the_l2_logistic_optimum(n, d):
    """The batched Newton fits give the scores of the L2 logistic optimum in every fold, also with
    more features than training rows (there they are fitted in the rows' span) and for shuffled
    labels. The reference is scikit-learn's lbfgs at a tight tolerance, itself checked to be the
    optimum: the gradient C Z^T (sigmoid(Z w + b) - y) + w and sum(p - y) vanish."""
    from scipy.special import expit
    X, y = blobs(n, d, 0.8, seed=9, scale=np.linspace(1, 30, d))
    for labels in (y, np.random.default_rng(1).permutation(y)):
        got = Pr.oof_scores(X, labels, n_folds=5, seed=2, C=0.3)
        for train, test in StratifiedKFold(5, shuffle=True, random_state=2).split(X, labels):
            Z = StandardScaler().fit(X[train]).transform(X)
            lr = LogisticRegression(C=0.3, max_iter=100_000, tol=1e-12).fit(Z[train], labels[train])
            w, b = lr.coef_[0], lr.intercept_[0]
            r = expit(Z[train] @ w + b) - labels[train]
            assert np.abs(0.3 * Z[train].T @ r + w).max() < 1e-5 and abs(r.sum()) < 1e-5
            np.testing.assert_allclose(got[test], Z[test] @ w + b, rtol=1e-5, atol=1e-5)


def test_large_problems_are_fitted_by_sklearn_fold_by_fold(monkeypatch):
    """Above NEWTON_MAX_DIM each fold is scikit-learn's lbfgs fit (its default tolerance), the
    shuffles each refitted; its AUCs agree with the Newton path's to the lbfgs tolerance."""
    X, y = blobs(60, 12, 0.7, seed=4)
    newton = Pr.probe_auc(X, y, n_boot=0, n_perm=3, seed=1)
    monkeypatch.setattr(Pr, "NEWTON_MAX_DIM", 5)
    got = Pr.oof_scores(X, y, n_folds=5, seed=1)
    want = np.empty(y.size)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=1).split(X, y):
        sc = StandardScaler().fit(X[train])
        lr = LogisticRegression(max_iter=Pr.LBFGS_MAX_ITER).fit(sc.transform(X[train]), y[train])
        want[test] = lr.decision_function(sc.transform(X[test]))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    lbfgs = Pr.probe_auc(X, y, n_boot=0, n_perm=3, seed=1)
    assert lbfgs.auc == pytest.approx(newton.auc, abs=0.01) and lbfgs.n_perm == 3
    assert lbfgs.null_mean == pytest.approx(newton.null_mean, abs=0.02)


def test_weighted_auc_equals_sklearn_with_sample_weights():
    rng = np.random.default_rng(2)
    pos = np.round(rng.normal(0.5, 1, 37), 1)  # rounded: ties within and across classes
    neg = np.round(rng.normal(0, 1, 23), 1)
    w_pos = rng.integers(0, 4, (5, 37)).astype(float)
    w_neg = rng.integers(0, 4, (5, 23)).astype(float)
    got = Pr.weighted_auc(pos, neg, w_pos, w_neg)
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(37), np.zeros(23)]
    want = [roc_auc_score(labels, scores, sample_weight=np.r_[wp, wn]) for wp, wn in zip(w_pos, w_neg)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # unit weights: the plain AUC; by hand on a tiny case: pairs (2>1), (2=2 -> 0.5), (0<1), (0<2)
    assert Pr.weighted_auc([2.0, 0.0], [1.0, 2.0], np.ones((1, 2)), np.ones((1, 2)))[0] == pytest.approx(1.5 / 4)
    with pytest.raises(DataError):
        Pr.weighted_auc(pos, neg, w_pos[:, :5], w_neg)


def test_bootstrap_se_matches_the_delong_variance():
    """The bootstrap of fixed scores estimates the AUC's variance; DeLong's closed form from the
    placement values: var = var(V10) / n_pos + var(V01) / n_neg."""
    X, y = blobs(800, 3, 1.0, seed=11)
    s = Pr.oof_scores(X, y, seed=0)
    pos, neg = s[y == 1], s[y == 0]
    K = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = K.mean(axis=1), K.mean(axis=0)
    se_delong = math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)
    draws = Pr.bootstrap_auc(s, y, n_boot=2000, seed=4)
    assert draws.std(ddof=1) == pytest.approx(se_delong, rel=0.08)
    assert draws.mean() == pytest.approx(K.mean(), abs=3 * se_delong / math.sqrt(2000) + 1e-4)
    res = Pr.probe_auc(X, y, n_boot=2000, n_perm=0, seed=0)
    assert res.se == pytest.approx(se_delong, rel=0.08)
    # the BC interval is about +-1.96 se wide around the estimate (the AUC's sampling law is near normal here)
    assert (res.ci_high - res.ci_low) == pytest.approx(2 * 1.96 * se_delong, rel=0.12)


def test_seeding_and_independent_streams():
    X, y = blobs(60, 4, 0.8, seed=8)
    a = Pr.probe_auc(X, y, n_boot=200, n_perm=10, seed=3)
    assert Pr.probe_auc(X, y, n_boot=200, n_perm=10, seed=3) == a
    b = Pr.probe_auc(X, y, n_boot=300, n_perm=10, seed=3)
    assert (b.null_mean, b.null_q95, b.p_value, b.auc) == (a.null_mean, a.null_q95, a.p_value, a.auc)
    assert (b.ci_low, b.ci_high) != (a.ci_low, a.ci_high)
    assert Pr.probe_auc(X, y, n_boot=200, n_perm=10, seed=4).auc != a.auc  # other folds


def test_undefined_when_a_class_is_smaller_than_the_folds():
    X, y = blobs(30, 4, 1.0, seed=0)
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:4]]
    res = Pr.probe_auc(X[keep], y[keep], n_folds=5)
    assert not res.defined and "unsafe" in res.note and "4 rows" in res.note
    assert math.isnan(res.auc) and math.isnan(res.p_value) and res.n_unsafe == 4
    assert Pr.probe_auc(X[keep], y[keep], n_folds=4, n_perm=5, n_boot=50).defined
    with pytest.raises(DataError):
        Pr.oof_scores(X[keep], y[keep], n_folds=5)


def test_probe_categories_rows_are_the_categories_alone():
    X, y = blobs(60, 4, 1.5, seed=9)
    cats = np.where(np.arange(y.size) % 3 == 0, "b", "a")
    cats[:3] = "c"  # a tiny category: undefined
    kw = dict(n_boot=100, n_perm=5, seed=2)
    df = Pr.probe_categories(X, y, cats, layer=4, **kw)
    assert list(df["category"]) == ["a", "b", "c", "overall"]
    assert list(df.columns) == ["category", "layer", *Pr.PROBE_FIELDS] and set(df["layer"]) == {4}
    for cat in ("a", "b"):
        m = cats == cat
        assert df.set_index("category").loc[cat, "auc"] == Pr.probe_auc(X[m], y[m], **kw).auc
    assert df.iloc[-1]["auc"] == Pr.probe_auc(X, y, **kw).auc
    assert not df.set_index("category").loc["c", "defined"]
    with pytest.raises(DataError, match="overall"):
        Pr.probe_categories(X, y, np.where(cats == "a", "overall", cats), **kw)


def test_bad_inputs():
    X, y = blobs(20, 3, 1.0, seed=0)
    for kwargs in ({"n_folds": 1}, {"n_boot": -1}, {"n_perm": 1.5}, {"confidence": 1.0}, {"C": 0.0},
                   {"C": float("inf")}, {"n_folds": True}):
        with pytest.raises(ConfigError):
            Pr.probe_auc(X, y, **kwargs)
    with pytest.raises(DataError):
        Pr.probe_auc(X, y[:-1])
    with pytest.raises(DataError):
        Pr.probe_auc(X, y + 1)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NumericsError):
        Pr.probe_auc(bad, y)
