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


def test_stability_travels_with_the_vectors_file(tmp_path):
    """`driftlib vectors` stores each kind's per-layer split-half stability in the file; the loaded
    VectorSet gives it back per layer and the lowest over the injection blocks."""
    from driftlib.core.artifacts import read_table, save_tensors
    from driftlib.phases.vectors.run import compute
    from driftlib.steer.vectors import load_steering_vectors

    rng = np.random.default_rng(0)
    n, L, d = 40, 3, 8
    shift = np.zeros((L, d))
    shift[0, 0], shift[2, 0] = 3.0, 0.2    # strong at layer 0, weak at layer 2, none at layer 1
    chosen, rejected = rng.standard_normal((n, L, d)), rng.standard_normal((n, L, d))
    base_c, base_r = rng.standard_normal((n, L, d)), rng.standard_normal((n, L, d))
    meta = {"layer_spec": "all", "pooling": "last", "model_source": "x", "dataset_fingerprint": "f"}
    save_tensors(tmp_path / "a.safetensors", {"chosen": (chosen + base_c * 0 + shift).astype(np.float32),
                                              "rejected": (rejected + shift).astype(np.float32)}, metadata=meta)
    save_tensors(tmp_path / "b.safetensors", {"chosen": base_c.astype(np.float32),
                                              "rejected": base_r.astype(np.float32)}, metadata=meta)
    compute(aligned=tmp_path / "a.safetensors", base=tmp_path / "b.safetensors", name="m", method="mean_diff",
            texts="both", splits=20, seed=0, out=tmp_path / "v.safetensors", stats=tmp_path / "s.parquet")
    table = read_table(tmp_path / "s.parquet")[0]
    found = load_steering_vectors(tmp_path / "v.safetensors")
    want = table[table["kind"] == found.kind].set_index("layer")["stability"]
    assert found.stability == pytest.approx({layer: want[layer] for layer in range(L)}, abs=1e-6)
    assert found.stability[0] > 0.9 and found.stability[1] < 0.5
    assert found.stability_at([0, 1]) == pytest.approx(min(want[0], want[1]), abs=1e-6)
    assert np.isnan(found.stability_at([7]))
