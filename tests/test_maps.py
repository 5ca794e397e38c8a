"""Cross-model maps on synthetic "models" with known linear relations to a shared latent, the
affine algebra of LinearMap, the shuffled-pairing control and the maps file."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from driftlib.core.artifacts import load_tensors, save_tensors
from driftlib.core.errors import ArtifactError, ConfigError, DataError
from driftlib.stats.maps import (
    METHODS,
    LinearMap,
    fit_map,
    fit_procrustes,
    fit_relative,
    fit_ridge,
    heldout_fit,
    load_maps,
    save_maps,
    shuffled_control,
)

N, K, D_S, D_T = 240, 8, 48, 64
NOISE = 0.05


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _orthonormal_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q.T  # [k, d], rows orthonormal


def _latent(rng: np.random.Generator, n: int = N) -> np.ndarray:
    """[n, K] latent with anisotropic variances 1..8 (std sqrt(1..8))."""
    return rng.standard_normal((n, K)) * np.sqrt(np.arange(1, K + 1))


def _models(seed: int = 0, *, orthogonal: bool = False, n: int = N):
    """Two "models" reading the same latent: X = Z A + mean_s + noise, Y = Z B + mean_t + noise.

    ``orthogonal``: A = c_s Q_s, B = c_t Q_t with orthonormal rows (the case Procrustes recovers);
    otherwise generic Gaussian A, B. Large shared means, as in raw activations.
    """
    rng = np.random.default_rng(seed)
    z = _latent(rng, n)
    if orthogonal:
        a = 2.0 * _orthonormal_rows(rng, K, D_S)
        b = 7.0 * _orthonormal_rows(rng, K, D_T)
    else:
        a = rng.standard_normal((K, D_S))
        b = rng.standard_normal((K, D_T))
    mean_s = 30.0 * rng.standard_normal(D_S)
    mean_t = -50.0 * rng.standard_normal(D_T)
    x = z @ a + mean_s + NOISE * rng.standard_normal((n, D_S))
    y = z @ b + mean_t + NOISE * rng.standard_normal((n, D_T))
    return x, y, a, b


# ---------------------------------------------------------------------------------------------
# LinearMap algebra
# ---------------------------------------------------------------------------------------------


def test_transform_is_the_affine_map_and_map_vector_has_no_bias() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3))
    mu_s, mu_t = rng.standard_normal(5), rng.standard_normal(3)
    m = LinearMap("ridge", w, mu_s, mu_t, {})
    x = rng.standard_normal((4, 5))
    by_hand = np.array([[sum((x[i, j] - mu_s[j]) * w[j, c] for j in range(5)) + mu_t[c]
                         for c in range(3)] for i in range(4)])
    np.testing.assert_allclose(m.transform(x), by_hand, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.transform(x[0]), by_hand[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(m.map_vector(np.zeros(5)), np.zeros(3))
    v = rng.standard_normal(5)
    np.testing.assert_allclose(m.transform(x + v) - m.transform(x), np.tile(m.map_vector(v), (4, 1)),
                               atol=1e-12)
    vs = rng.standard_normal((2, 5))
    assert m.map_vector(vs).shape == (2, 3)
    np.testing.assert_allclose(m.map_vector(vs), vs @ w, atol=1e-12)
    with pytest.raises(DataError, match="d_s=5"):
        m.transform(np.zeros((2, 4)))
    with pytest.raises(DataError):
        LinearMap("ridge", w, mu_s[:4], mu_t, {})


# ---------------------------------------------------------------------------------------------
# recovering known relations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ridge", "relative"])
def test_ridge_and_relative_recover_a_generic_linear_relation(method: str) -> None:
    x, y, a, b = _models(0)
    held = heldout_fit(method, x, y, n_folds=5, seed=0)
    assert held["r2"] > 0.95, held
    assert held["cosine"] > 0.95, held
    assert held["n"] == N and held["n_folds"] == 5 and len(held["r2_folds"]) == 5
    m = fit_map(method, x, y)
    assert m.method == method and m.weight.shape == (D_S, D_T)
    rng = np.random.default_rng(5)
    for _ in range(3):
        u = rng.standard_normal(K)
        assert _cos(m.map_vector(u @ a), u @ b) > 0.99
    # a vector in the latent's own directions, e.g. the weakest one
    e = np.zeros(K)
    e[0] = 1.0
    assert _cos(m.map_vector(e @ a), e @ b) > 0.99


def test_procrustes_recovers_an_orthogonal_relation_with_its_scale() -> None:
    x, y, a, b = _models(2, orthogonal=True)
    for options in ({}, {"n_components": K}):
        held = heldout_fit("procrustes", x, y, **options)
        assert held["r2"] > 0.95, (options, held)
        m = fit_procrustes(x, y, **options)
        # Y = 7 Z Q_t, X = 2 Z Q_s: the fitted scale is 3.5
        assert m.info["scale"] == pytest.approx(3.5, rel=0.05)
        rng = np.random.default_rng(6)
        for _ in range(3):
            u = rng.standard_normal(K)
            v_s, v_t = u @ a, u @ b
            mapped = m.map_vector(v_s)
            assert _cos(mapped, v_t) > 0.99
            assert np.linalg.norm(mapped) / np.linalg.norm(v_t) == pytest.approx(1.0, abs=0.05)
    assert fit_procrustes(x, y).info["n_components"] == min(D_S, D_T, N - 1)
    assert fit_procrustes(x, y, n_components=10_000).info["n_components"] == min(D_S, D_T, N - 1)
    unscaled = fit_procrustes(x, y, n_components=K, scale=False)
    assert unscaled.info["scale"] == 1.0
    u = np.ones(K)
    # without the scale the norm ratio is c_t / c_s off
    assert np.linalg.norm(unscaled.map_vector(u @ a)) / np.linalg.norm(u @ b) == pytest.approx(2 / 7, rel=0.05)


def test_procrustes_cannot_fit_a_generic_relation_as_well_as_ridge() -> None:
    """An orthogonal map is a real restriction: on a generic (non-orthogonal) relation it must lose."""
    rng = np.random.default_rng(8)
    z = _latent(rng)
    x = z @ _orthonormal_rows(rng, K, D_S)
    # the target stretches the latent axes in the opposite order: no rotation plus scale fits it
    y = (z * np.sqrt(np.arange(K, 0, -1) / np.arange(1, K + 1))) @ _orthonormal_rows(rng, K, D_T)
    ridge, procrustes = heldout_fit("ridge", x, y)["r2"], heldout_fit("procrustes", x, y)["r2"]
    assert ridge > 0.99
    assert procrustes < ridge - 0.2, (procrustes, ridge)


def test_ridge_with_tiny_alpha_is_exact_least_squares() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 10)) * 5.0 + 3.0
    w_true = rng.standard_normal((10, 7))
    y = x @ w_true + rng.standard_normal(7)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w_lstsq = np.linalg.lstsq(xc, yc, rcond=None)[0]
    m = fit_ridge(x, y, alphas=[1e-10])
    np.testing.assert_allclose(m.weight, w_lstsq, rtol=0, atol=1e-8)
    np.testing.assert_allclose(m.weight, w_true, rtol=0, atol=1e-8)
    np.testing.assert_allclose(m.source_mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(m.target_mean, y.mean(0), atol=1e-8)
    np.testing.assert_allclose(m.transform(x), y, atol=1e-7)
    assert m.info["alpha"] == 1e-10


def test_ridge_with_noisy_labels_penalises_and_grid_is_scale_aware() -> None:
    """Alpha chosen relative to the data scale: rescaling X by 1000 rescales alpha by 1e6 and
    leaves predictions unchanged."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 40))
    y = x[:, :1] * 0.1 + rng.standard_normal((60, 3))  # mostly noise: CV must shrink
    m1, m2 = fit_ridge(x, y), fit_ridge(1000.0 * x, y)
    assert m1.info["alpha_relative"] > 1e-2
    assert m2.info["alpha"] == pytest.approx(1e6 * m1.info["alpha"], rel=1e-9)
    np.testing.assert_allclose(m2.transform(1000.0 * x), m1.transform(x), atol=1e-8)
    # the null-ish map predicts far less variance than least squares would
    assert np.linalg.norm(m1.weight) < 0.5 * np.linalg.norm(np.linalg.lstsq(x - x.mean(0), y - y.mean(0), rcond=None)[0])


def test_relative_coordinates_compose_into_one_linear_map() -> None:
    x, y, _, _ = _models(1)
    m = fit_relative(x, y, n_anchors=20, anchor_seed=3)
    anchors = np.array(m.info["anchor_rows"])
    assert m.info["n_anchors"] == 20 and len(set(anchors.tolist())) == 20
    # recompute the prediction by hand: standardise, similarities to anchors, ridge decode
    mu, sd = x.mean(0), x.std(0)
    z = (x - mu) / sd
    r = z @ z[anchors].T / np.sqrt(D_S)
    from sklearn.linear_model import Ridge

    dec = Ridge(alpha=m.info["alpha"]).fit(r, y)
    np.testing.assert_allclose(m.transform(x), dec.predict(r), rtol=1e-7, atol=1e-7)
    assert fit_relative(x[:10], y[:10], n_anchors=64).info["n_anchors"] == 10
    assert fit_relative(x, y, anchor_seed=1).info["anchor_rows"] != fit_relative(x, y, anchor_seed=2).info["anchor_rows"]


# ---------------------------------------------------------------------------------------------
# the shuffled-pairing control
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_shuffled_control_has_no_fit_while_true_pairing_does(method: str) -> None:
    x, y, a, b = _models(7, orthogonal=(method == "procrustes"))
    true_fit = heldout_fit(method, x, y)
    control_map, control = shuffled_control(method, x, y, seed=0)
    assert true_fit["r2"] > 0.95
    assert control["r2"] < 0.1, control
    assert control["cosine"] < 0.2
    assert control_map.info["control"] == "shuffled"
    u = np.random.default_rng(0).standard_normal(K)
    assert abs(_cos(control_map.map_vector(u @ a), u @ b)) < 0.9


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path) -> None:
    x, y, _, _ = _models(0)
    maps = {f"{m}/L3->L2": fit_map(m, x, y) for m in METHODS}
    path = tmp_path / "maps.safetensors"
    save_maps(path, maps, metadata={"source_model": "a", "target_model": "b"})
    loaded = load_maps(path, expect={"source_model": "a"})
    assert list(loaded) == list(maps)
    for name, original in maps.items():
        got = loaded[name]
        assert got.method == original.method
        assert got.info == original.info
        assert got.weight.dtype == np.float64
        np.testing.assert_allclose(got.transform(x), original.transform(x), rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(got.weight, original.weight.astype(np.float32).astype(np.float64))
    with pytest.raises(ArtifactError, match="source_model"):
        load_maps(path, expect={"source_model": "other"})


def test_damaged_maps_files_raise(tmp_path) -> None:
    x, y, _, _ = _models(0)
    path = tmp_path / "maps.safetensors"
    save_maps(path, {"ridge": fit_ridge(x, y), "procrustes": fit_procrustes(x, y)})

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="fit_maps"):
        load_maps(truncated)

    arrays, metadata = load_tensors(path)
    del arrays["procrustes.target_mean"]
    missing = tmp_path / "missing.safetensors"
    save_file(arrays, str(missing), metadata=metadata)
    with pytest.raises(ArtifactError, match=r"procrustes\.target_mean.*fit_maps"):
        load_maps(missing)

    arrays = load_file(str(path))
    arrays["ridge.weight"] = arrays["ridge.weight"][:, :5]
    wrong = tmp_path / "wrong.safetensors"
    save_file(arrays, str(wrong), metadata=metadata)
    with pytest.raises(ArtifactError, match="shape"):
        load_maps(wrong)

    no_meta = tmp_path / "nometa.safetensors"
    save_tensors(no_meta, {"ridge.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ArtifactError, match="fit_maps"):
        load_maps(no_meta)
    with pytest.raises(ArtifactError, match="not found"):
        load_maps(tmp_path / "absent.safetensors")


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs_raise_data_error(method: str) -> None:
    x, y, _, _ = _models(0, n=20)
    with pytest.raises(DataError, match=r"\(20, 48\).*\(19, 64\)"):
        fit_map(method, x, y[:19])
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_map(method, bad, y)
    with pytest.raises(DataError, match="2-D"):
        fit_map(method, x[:, 0], y)
    with pytest.raises(DataError, match="at least 3"):
        fit_map(method, x[:2], y[:2])
    with pytest.raises(DataError):
        heldout_fit(method, x[:4], y[:4], n_folds=5)


def test_unknown_method_or_option_raises_config_error() -> None:
    x, y, _, _ = _models(0, n=20)
    with pytest.raises(ConfigError, match="ridge, procrustes, relative"):
        fit_map("cca", x, y)
    with pytest.raises(ConfigError, match="ridge, procrustes, relative"):
        heldout_fit("cca", x, y)
    with pytest.raises(ConfigError, match="n_anchors"):
        fit_map("ridge", x, y, n_anchors=4)
    with pytest.raises(ConfigError):
        fit_ridge(x, y, alphas=[0.0])
