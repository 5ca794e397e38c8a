"""Tests of driftlib.stats.layer_matching against independently computed values (reference code written here)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from driftlib.core.errors import ConfigError, DataError
from driftlib.stats import layer_matching as M

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def ref_cka_features(X, Y):
    """Linear CKA straight from the feature-space formula, with explicit centring."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Xc = X - X.mean(axis=0, keepdims=True)
    Yc = Y - Y.mean(axis=0, keepdims=True)
    num = np.linalg.norm(Yc.T @ Xc, "fro") ** 2
    return num / (np.linalg.norm(Xc.T @ Xc, "fro") * np.linalg.norm(Yc.T @ Yc, "fro"))


def ref_cka_hsic(X, Y):
    """Linear CKA as HSIC with the centring matrix H = I - 11^T/n (Gram form, no column centring)."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T
    hsic = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


# ------------------------------------------------------------------------------------------------
# linear_cka


@pytest.mark.parametrize("n, d1, d2", [(40, 120, 90), (300, 8, 12), (60, 60, 5)])
def test_cka_equals_hand_computation(n, d1, d2):
    # covers the Gram path (n < d), the feature path (n > d) and a mixed case
    rng = np.random.default_rng(n + d1)
    X = rng.standard_normal((n, d1)) + 3.0
    Y = X[:, : min(d1, d2)] @ rng.standard_normal((min(d1, d2), d2)) + rng.standard_normal((n, d2))
    got = M.linear_cka(X, Y)
    assert got == pytest.approx(ref_cka_features(X, Y), rel=1e-10, abs=1e-12)
    assert got == pytest.approx(ref_cka_hsic(X, Y), rel=1e-9)
    assert 0.0 < got < 1.0


def test_cka_self_is_one_and_symmetric():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 70))
    Y = rng.standard_normal((30, 5))
    assert M.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert M.linear_cka(X, Y) == pytest.approx(M.linear_cka(Y, X), rel=1e-12)


@pytest.mark.parametrize("n, d", [(50, 20), (20, 50)])
def test_cka_invariant_to_rotation_and_isotropic_scaling(n, d):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, 7)) + rng.standard_normal((n, 7))
    base = M.linear_cka(X, Y)
    Q = ortho_group.rvs(d, random_state=3)
    R = ortho_group.rvs(7, random_state=4)
    assert M.linear_cka(X @ Q, Y) == pytest.approx(base, rel=1e-10)
    assert M.linear_cka(X, Y @ R) == pytest.approx(base, rel=1e-10)
    assert M.linear_cka(X * 1e4, Y * 1e-3) == pytest.approx(base, rel=1e-10)
    assert M.linear_cka(5.0 * X @ Q + 2.0, 0.1 * Y @ R - 7.0) == pytest.approx(base, rel=1e-10)
    # float32 input is computed in float64
    assert M.linear_cka(X.astype(np.float32), Y) == pytest.approx(
        ref_cka_features(X.astype(np.float32), Y), rel=1e-10)


def test_cka_not_invariant_to_general_invertible_maps():
    # Y = X A with A invertible (one direction stretched 100x): CKA(X, Y) is far from 1
    rng = np.random.default_rng(5)
    n, d = 200, 10
    X0 = rng.standard_normal((n, d))
    X, _ = np.linalg.qr(X0 - X0.mean(axis=0))  # centred, orthonormal columns: X^T X = I
    a = np.ones(d)
    a[-1] = 100.0
    got = M.linear_cka(X, X * a)
    # with X^T X = I: CKA = ||A||_F^2 / (sqrt(d) ||A^2||_F) = sum(a^2) / (sqrt(d) sqrt(sum(a^4)))
    assert got == pytest.approx((a**2).sum() / (np.sqrt(d) * np.sqrt((a**4).sum())), rel=1e-10)
    assert got < 0.35
    # while a rotation of the same X keeps it at 1
    assert M.linear_cka(X, X @ ortho_group.rvs(d, random_state=6)) == pytest.approx(1.0, abs=1e-12)


def test_cka_of_independent_data_is_small():
    rng = np.random.default_rng(6)
    n, d = 3000, 5
    vals = [M.linear_cka(rng.standard_normal((n, d)), rng.standard_normal((n, d))) for _ in range(3)]
    # E[CKA] is about d / n for independent isotropic data
    assert max(vals) < 0.02


@pytest.mark.parametrize("bad, match", [
    (np.ones((10, 4)), "no variance"),
    (np.zeros((10, 4)), "all zeros"),
    (np.ones((10, 4)) * 1e6 + np.arange(4), "no variance"),
])
def test_cka_degenerate_raises(bad, match):
    Y = np.random.default_rng(7).standard_normal((10, 3))
    with pytest.raises(DataError, match=match):
        M.linear_cka(bad, Y)
    with pytest.raises(DataError, match=match):
        M.linear_cka(Y, bad)


def test_cka_bad_inputs_raise():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((10, 4))
    with pytest.raises(DataError, match="same texts"):
        M.linear_cka(X, rng.standard_normal((11, 4)))
    with pytest.raises(DataError, match="2-D"):
        M.linear_cka(X[:, 0], X)
    with pytest.raises(DataError, match="at least 2 rows"):
        M.linear_cka(X[:1], X[:1])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        M.linear_cka(Xn, X)
    with pytest.raises(DataError, match="numeric"):
        M.linear_cka(X.astype(str), X)


# ------------------------------------------------------------------------------------------------
# cka_matrix


def layered(rng, n, latents, widths, scales, noise=0.05):
    """[n, L, width]: layer l = latents[l] rotated into `width` dims (orthonormal rows), scaled, + noise."""
    out = []
    for lat, s in zip(latents, scales):
        r = lat.shape[1]
        Q = ortho_group.rvs(widths, random_state=rng.integers(1 << 31))[:r]  # [r, width], orthonormal rows
        out.append(s * (lat @ Q + noise * rng.standard_normal((n, widths))) + rng.standard_normal(widths))
    return np.stack(out, axis=1)


def test_cka_matrix_peaks_on_true_correspondence():
    rng = np.random.default_rng(9)
    n, r = 200, 6
    n_latent = 5
    latents = [rng.standard_normal((n, r)) * rng.uniform(0.5, 2.0, r) for _ in range(n_latent)]
    # source: 5 blocks (latent i at block i); target: 4 blocks with latents 4, 0, 2, 3 in another width
    Hs = layered(rng, n, latents, 24, rng.uniform(0.1, 10.0, n_latent))
    perm = [4, 0, 2, 3]
    Ht = layered(rng, n, [latents[i] for i in perm], 16, rng.uniform(0.1, 10.0, len(perm)))
    C = M.cka_matrix(Hs, Ht.astype(np.float32))
    assert C.shape == (5, 4)
    assert list(np.argmax(C, axis=0)) == perm
    for j, i in enumerate(perm):
        assert C[i, j] > 0.95
        assert np.delete(C[:, j], i).max() < 0.3
    # each entry is the pairwise linear CKA (same values whichever side is stored)
    ref = np.array([[ref_cka_features(Hs[:, i], Ht[:, j].astype(np.float32)) for j in range(4)] for i in range(5)])
    np.testing.assert_allclose(C, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(M.cka_matrix(Ht.astype(np.float32), Hs), ref.T, rtol=1e-9, atol=1e-12)
    assert M.match_by_cka(C, range(4)) == perm


def test_cka_matrix_bad_inputs_raise():
    rng = np.random.default_rng(10)
    Hs = rng.standard_normal((12, 3, 5))
    Ht = rng.standard_normal((12, 2, 4))
    with pytest.raises(DataError, match="3-D"):
        M.cka_matrix(Hs[:, 0], Ht)
    with pytest.raises(DataError, match="same texts"):
        M.cka_matrix(Hs, Ht[:10])
    bad = Ht.copy()
    bad[:, 1, :] = 2.0
    with pytest.raises(DataError, match="target layer 1"):
        M.cka_matrix(Hs, bad)
    bad = Hs.copy()
    bad[:, 2, :] = 0.0
    with pytest.raises(DataError, match="source layer 2"):
        M.cka_matrix(bad, Ht)
    bad[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="Inf"):
        M.cka_matrix(bad, Ht)


# ------------------------------------------------------------------------------------------------
# matching


@pytest.mark.parametrize("n_source, n_target", [(30, 18), (18, 30), (32, 32), (28, 42), (1, 5), (5, 1)])
def test_match_by_depth_formula_and_resolve_layers(n_source, n_target):
    from fractions import Fraction

    from driftlib.core.layerspec import resolve_layers

    targets = list(range(n_target))
    got = M.match_by_depth(targets, n_source, n_target)
    assert len(got) == n_target
    assert got[-1] == n_source - 1  # depth 1.0 -> last block
    assert all(0 <= s < n_source for s in got)
    assert got == sorted(got)  # monotone in depth
    for t, s in zip(targets, got):
        assert [s] == resolve_layers((t + 1) / n_target, n_source)
        # exact rational arithmetic agrees away from half-way ties
        exact = Fraction(t + 1, n_target) * n_source
        if exact - int(exact) != Fraction(1, 2):
            assert s == max(0, round(exact) - 1)


def test_match_by_depth_known_values():
    # 30 source blocks, 18 target blocks: t -> max(0, round((t + 1) * 30 / 18) - 1)
    assert M.match_by_depth([0, 8, 17], 30, 18) == [1, 14, 29]
    assert M.match_by_depth(8, 30, 18) == [14]  # 15 / 30 exactly: block 14, like resolve_layers(0.5, 30)
    assert M.match_by_depth([17, 0], 30, 18) == [29, 1]  # order kept
    assert M.match_by_depth(np.array([5, 6]), 12, 12) == [5, 6]  # same depth count: identity


def test_match_by_cka_planted_argmax_and_ties():
    rng = np.random.default_rng(11)
    C = rng.uniform(0.0, 0.5, (7, 4))
    planted = [6, 0, 3, 3]
    for t, s in enumerate(planted):
        C[s, t] = 0.9
    assert M.match_by_cka(C, [0, 1, 2, 3]) == planted
    assert M.match_by_cka(C, 2) == [3]
    C[1, 2] = C[5, 2] = 0.9  # a tie between source blocks 1, 3, 5 -> the shallowest
    assert M.match_by_cka(C, [2]) == [1]


def test_match_layers_dispatch():
    C = np.zeros((6, 3))
    C[[5, 2, 4], [0, 1, 2]] = 1.0
    assert M.match_layers("depth", [0, 1, 2], n_source=6, n_target=3) == [1, 3, 5]
    assert M.match_layers("cka", [0, 1, 2], n_source=6, n_target=3, cka=C) == [5, 2, 4]
    with pytest.raises(ConfigError, match="needs the CKA matrix"):
        M.match_layers("cka", [0], n_source=6, n_target=3)
    with pytest.raises(ConfigError, match="method must be one of"):
        M.match_layers("procrustes", [0], n_source=6, n_target=3)
    with pytest.raises(DataError, match=r"shape \(n_source, n_target\)"):
        M.match_layers("cka", [0], n_source=6, n_target=4, cka=C)


@pytest.mark.parametrize("targets, n_source, n_target, match", [
    ([18], 30, 18, "out of range"),
    ([-1], 30, 18, "out of range"),
    ([0.5], 30, 18, "not an integer"),
    ([True], 30, 18, "not an integer"),
    ("3", 30, 18, "not a block index"),
    ([], 30, 18, "no target blocks"),
    ([0], 0, 18, "n_source"),
    ([0], 30, 2.0, "n_target"),
])
def test_match_by_depth_bad_inputs_raise(targets, n_source, n_target, match):
    with pytest.raises(ConfigError, match=match):
        M.match_by_depth(targets, n_source, n_target)


def test_match_by_cka_bad_inputs_raise():
    with pytest.raises(DataError, match="2-D"):
        M.match_by_cka(np.zeros(4), [0])
    with pytest.raises(DataError, match="NaN"):
        M.match_by_cka(np.array([[0.1, np.nan]]), [0])
    with pytest.raises(ConfigError, match="out of range"):
        M.match_by_cka(np.zeros((3, 2)), [2])
