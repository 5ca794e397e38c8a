"""Phase 2 statistics on synthetic states with a planted alignment direction."""

from __future__ import annotations

import numpy as np
import pytest

from driftlib.core.errors import ConfigError
from driftlib.phases.vectors.evaluate import compute_vectors, steering_kind


def planted(n=200, L=3, d=16, seed=0, strength=3.0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((L, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    base_c, base_r = rng.standard_normal((2, n, L, d))
    aligned_c = base_c + strength * u + 0.1 * rng.standard_normal((n, L, d))
    aligned_r = base_r + strength * u + 0.1 * rng.standard_normal((n, L, d))
    return u, aligned_c, aligned_r, base_c, base_r


def test_mean_diff_recovers_the_planted_shift_with_stable_halves():
    u, ac, ar, bc, br = planted()
    kinds, stats = compute_vectors(ac, ar, bc, br, n_splits=10)
    assert set(kinds) == {"contrastive", "mean_diff_chosen", "mean_diff_rejected", "mean_diff_both", "pca"}
    for kind in ("mean_diff_both", "mean_diff_chosen", "pca"):
        v = kinds[kind]
        cos = np.sum(v * u, axis=1) / np.linalg.norm(v, axis=1)
        assert np.all(cos > 0.99), kind
    both = stats[stats["kind"] == "mean_diff_both"].sort_values("layer")
    np.testing.assert_allclose(both["norm"], np.linalg.norm(kinds["mean_diff_both"], axis=1), rtol=1e-6)
    # reference norms are the base model's median per-text norms (about sqrt(d) for N(0, I))
    np.testing.assert_allclose(both["residual_norm"], np.median(np.linalg.norm(np.concatenate([bc, br]), axis=2), axis=0))
    np.testing.assert_allclose(both["relative_norm"], both["norm"] / both["residual_norm"])
    assert (both["stability"] > 0.95).all() and (both["cos_chosen_rejected"] > 0.99).all()
    assert both["cos_next_layer"].iloc[-1] != both["cos_next_layer"].iloc[-1]  # NaN at the last layer


def test_without_a_base_only_contrastive_and_noise_is_unstable():
    rng = np.random.default_rng(1)
    ac, ar = rng.standard_normal((2, 100, 2, 64))
    kinds, stats = compute_vectors(ac, ar, n_splits=10)
    assert list(kinds) == ["contrastive"]
    np.testing.assert_allclose(kinds["contrastive"], ac.mean(0) - ar.mean(0), rtol=1e-5, atol=1e-6)
    assert stats["cos_chosen_rejected"].isna().all()
    assert (stats["stability"].abs() < 0.5).all()  # pure noise: halves disagree


def test_steering_kind_selection():
    assert steering_kind("mean_diff", "both", True) == "mean_diff_both"
    assert steering_kind("mean_diff", "chosen", True) == "mean_diff_chosen"
    assert steering_kind("pca", "both", True) == "pca"
    assert steering_kind("mean_diff", "both", False) == "contrastive"
    with pytest.raises(ConfigError):
        steering_kind("median", "both", True)
