"""Steering-vector maths on synthetic arrays with known answers, training against hand-run forward
passes on tiny random Llama models, and the vectors file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from random_models import bpe_tokenizer

from driftlib.core.artifacts import load_tensors, save_tensors
from driftlib.core.errors import ArtifactError, ConfigError, DataError, ModelError
from driftlib.steer.train import (
    paired_last_token_states,
    train_contrastive_vector,
    train_steering_vector,
)
from driftlib.steer.vectors import (
    adjacent_layer_cosines,
    contrastive,
    contrastive_stability,
    cosine_per_layer,
    load_vectors,
    mean_difference,
    pca_direction,
    relative_norms,
    residual_norms,
    save_vectors,
    split_half_stability,
)

N, L, D = 200, 3, 64


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _planted(seed: int = 0, sign: float = 1.0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired states whose differences are a_i * u_l + noise, a_i ~ sign * (2 + 0.5 N(0, 1)).

    The base states are large and random (they cancel in the pairing)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((L, D))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    a = sign * (2.0 + 0.5 * rng.standard_normal(N))
    h_base = 5.0 * rng.standard_normal((N, L, D))
    diffs = a[:, None, None] * u[None] + noise * rng.standard_normal((N, L, D))
    return (h_base + diffs).astype(np.float32), h_base.astype(np.float32), u


# --- mean difference, PCA, contrastive ---------------------------------------------------------


def test_mean_difference_recovers_the_planted_direction() -> None:
    h_aligned, h_base, u = _planted()
    v = mean_difference(h_aligned, h_base)
    assert v.shape == (L, D) and v.dtype == np.float32
    for layer in range(L):
        assert _cos(v[layer], u[layer]) > 0.99
        # and it is the mean of the per-text differences, computed row by row here
        by_hand = sum(h_aligned[i, layer].astype(np.float64) - h_base[i, layer] for i in range(N)) / N
        np.testing.assert_allclose(v[layer], by_hand, rtol=1e-5, atol=1e-5)
    assert 1.8 < np.linalg.norm(v, axis=1).mean() < 2.2  # the mean of a_i is 2


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pca_direction_recovers_it_with_the_sign_and_scale_of_the_mean(sign: float) -> None:
    h_aligned, h_base, u = _planted(seed=1, sign=sign)
    v = pca_direction(h_aligned, h_base)
    m = mean_difference(h_aligned, h_base)
    diffs = h_aligned.astype(np.float64) - h_base
    for layer in range(L):
        assert _cos(v[layer], sign * u[layer]) > 0.99
        assert float(v[layer] @ m[layer]) > 0  # sign rule
        np.testing.assert_allclose(np.linalg.norm(v[layer]), np.linalg.norm(m[layer]), rtol=1e-5)  # scale rule
        # it is the top eigenvector of the (uncentred) second-moment matrix D^T D
        _, vecs = np.linalg.eigh(diffs[:, layer].T @ diffs[:, layer])
        assert abs(_cos(v[layer], vecs[:, -1])) > 0.99999


def test_pca_centering_finds_the_direction_of_most_variation() -> None:
    """Every pair shifts by exactly 2u; the noise is largest along w (orthogonal to u). The uncentred
    direction is the shift u; classical (centred) PCA finds w, with its sign fixed against the mean."""
    rng = np.random.default_rng(2)
    u = np.zeros(D); u[0] = 1.0
    w = np.zeros(D); w[1] = 1.0
    diffs = 2.0 * u + 1.5 * rng.standard_normal((N, 1)) * w + 0.1 * rng.standard_normal((N, D))
    h_base = rng.standard_normal((N, 1, D))
    h_aligned = h_base + diffs[:, None, :]
    assert _cos(pca_direction(h_aligned, h_base)[0], u) > 0.99
    centred = pca_direction(h_aligned, h_base, center=True)[0]
    assert abs(_cos(centred, w)) > 0.99
    assert float(centred @ mean_difference(h_aligned, h_base)[0]) > 0


def test_contrastive_recovers_the_direction_from_unpaired_groups() -> None:
    rng = np.random.default_rng(3)
    u = rng.standard_normal((L, D))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    chosen = rng.standard_normal((150, L, D)) + 10.0 * u  # noise in the means: ‖e‖² ≈ D (1/150 + 1/120) ≈ 1
    rejected = rng.standard_normal((120, L, D))
    v = contrastive(chosen, rejected)
    assert v.shape == (L, D)
    for layer in range(L):
        assert _cos(v[layer], u[layer]) > 0.99
    np.testing.assert_allclose(v, chosen.mean(axis=0) - rejected.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_shape_errors_are_data_errors() -> None:
    with pytest.raises(DataError, match="same shape"):
        mean_difference(np.zeros((4, 2, 3)), np.zeros((5, 2, 3)))
    with pytest.raises(DataError, match=r"\[n, L, d\]"):
        pca_direction(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(DataError, match="share layers"):
        contrastive(np.zeros((4, 2, 3)), np.zeros((4, 2, 4)))


# --- cosines ---------------------------------------------------------------------------------


def test_cosines_per_layer_and_between_adjacent_layers() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[0.0, 3.0], [2.0, 2.0], [0.0, -1.0], [1.0, 0.0]])
    got = cosine_per_layer(a, b)
    np.testing.assert_allclose(got[:3], [0.0, 1.0, -1.0], atol=1e-12)
    assert np.isnan(got[3])  # undefined for a zero vector
    v = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(adjacent_layer_cosines(v), [2**-0.5, 2**-0.5, 0.0], atol=1e-12)
    assert adjacent_layer_cosines(v[:1]).shape == (0,)


# --- split-half stability -----------------------------------------------------------------------


def _stability_by_hand(diffs: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, half = diffs.shape[0], diffs.shape[0] // 2
    out = []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        a, b = diffs[perm[:half]].mean(axis=0), diffs[perm[half : 2 * half]].mean(axis=0)
        out.append([_cos(a[layer], b[layer]) for layer in range(diffs.shape[1])])
    return np.mean(out, axis=0)


def test_stability_is_near_one_for_a_strong_direction_and_near_zero_for_noise() -> None:
    rng = np.random.default_rng(4)
    d = 512
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    strong = 2.0 * u + 0.05 * rng.standard_normal((101, 2, d))  # odd n: one row sits out
    s = split_half_stability(strong, n_splits=20, seed=0)
    assert s.shape == (2,) and np.all(s > 0.99)
    np.testing.assert_allclose(s, _stability_by_hand(strong, 20, 0), rtol=1e-10)

    noise = rng.standard_normal((100, 4, d))
    z = split_half_stability(noise, n_splits=20, seed=0)
    # two independent isotropic means: cosine has mean 0 and standard deviation 1/sqrt(d)
    assert np.all(np.abs(z) < 4.0 / np.sqrt(d))


def test_stability_matches_the_analytic_expectation_in_between() -> None:
    """Shift mu with ‖mu‖ = 1 plus noise s = 0.5 per dimension, d = 400, n = 200: each half mean is
    mu + e with ‖e‖² ≈ 2 d s² / n = 1, so the cosine is about 1 / (1 + 1) = 0.5."""
    rng = np.random.default_rng(5)
    d, n = 400, 200
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    diffs = mu + 0.5 * rng.standard_normal((n, 3, d))
    s = split_half_stability(diffs, n_splits=20, seed=1)
    np.testing.assert_allclose(s, 0.5, atol=0.1)


def test_contrastive_stability_splits_pairs() -> None:
    rng = np.random.default_rng(6)
    base = 10.0 * rng.standard_normal((60, 2, 32))  # shared per pair: cancels only if pairs stay together
    chosen = base + 0.5 + 0.5 * rng.standard_normal((60, 2, 32))
    rejected = base + 0.5 * rng.standard_normal((60, 2, 32))
    got = contrastive_stability(chosen, rejected, n_splits=7, seed=3)
    # by hand: the same permutations; each half's vector is mean chosen[half] - mean rejected[half]
    rng2 = np.random.default_rng(3)
    want = []
    for _ in range(7):
        perm = rng2.permutation(60)
        A, B = perm[:30], perm[30:]
        va = chosen[A].mean(axis=0) - rejected[A].mean(axis=0)
        vb = chosen[B].mean(axis=0) - rejected[B].mean(axis=0)
        want.append([_cos(va[layer], vb[layer]) for layer in range(2)])
    np.testing.assert_allclose(got, np.mean(want, axis=0), rtol=1e-10)
    assert np.all(got > 0.9)  # the pairing removes the large shared part
    with pytest.raises(DataError):
        contrastive_stability(chosen, rejected[:50])


def test_stability_needs_two_rows() -> None:
    with pytest.raises(DataError, match="at least 2"):
        split_half_stability(np.ones((1, 2, 3)))
    with pytest.raises(ConfigError):
        split_half_stability(np.ones((4, 2, 3)), n_splits=0)


# --- norms --------------------------------------------------------------------------------------


def test_residual_norms_are_medians_robust_to_a_first_position_outlier() -> None:
    rng = np.random.default_rng(7)
    h = rng.standard_normal((51, 3, D)) * np.array([1.0, 10.0, 100.0])[None, :, None]
    clean = residual_norms(h)
    np.testing.assert_allclose(clean, np.median(np.linalg.norm(h, axis=2), axis=0))
    spiked = h.copy()
    spiked[0] *= 1e4  # one pooled row carrying a huge first-position norm
    got = residual_norms(spiked)
    norms = np.linalg.norm(spiked, axis=2)
    np.testing.assert_allclose(got, np.median(norms, axis=0))
    np.testing.assert_allclose(got, clean, rtol=0.05)  # the median barely moves ...
    assert np.all(norms.mean(axis=0) > 50 * got)  # ... where a mean would be dominated


def test_relative_norms() -> None:
    v = np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(relative_norms(v, np.array([10.0, 0.5, 4.0])), [0.5, 2.0, 0.25])
    assert np.isnan(relative_norms(v, np.array([1.0, 0.0, 1.0]))[1])
    with pytest.raises(DataError):
        relative_norms(v, np.ones(2))


# --- training on tiny models ---------------------------------------------------------------------

TEXTS = [
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then knead.",
    "Hi.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Human: Can you help me? Assistant: Of course.",
    "Short text here",
]
REJECTED = [
    "Human: How do I bake bread? Assistant: No.",
    "Go away.",
    "Human: Can you help me? Assistant: I will not.",
    "Nothing",
]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(TEXTS + REJECTED)


def _llama(seed: int, layers: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2
    )
    return transformers.LlamaForCausalLM(config).eval()


def _last_token_by_hand(model: torch.nn.Module, tokenizer: object, texts: list[str], layers: list[int]) -> np.ndarray:
    """Each text alone (no padding), a plain forward pass with output_hidden_states: for a block
    that is not the last one, hidden_states[l + 1] is its output. Returns [n, L, d]."""
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        rows.append([hs[layer + 1][0, -1].numpy() for layer in layers])
    return np.asarray(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return _llama(0), _llama(1)


def test_train_steering_vector_is_the_mean_last_token_difference(pair, tokenizer) -> None:
    base, aligned = pair
    layers = [0, 1]  # non-final blocks: hidden_states[l + 1] is the block output there
    h_a = _last_token_by_hand(aligned, tokenizer, TEXTS, layers)
    h_b = _last_token_by_hand(base, tokenizer, TEXTS, layers)
    by_hand = (h_a - h_b).mean(axis=0)
    v = train_steering_vector(base, aligned, tokenizer, TEXTS, layers, batch_size=3)  # left-padded batches
    assert v.shape == (2, 32) and v.dtype == np.float32
    np.testing.assert_allclose(v, by_hand, rtol=1e-4, atol=1e-5)
    assert np.all(np.linalg.norm(by_hand, axis=1) > 0.1)  # two different models: a real difference

    pca = train_steering_vector(base, aligned, tokenizer, TEXTS, layers, method="pca", batch_size=2)
    np.testing.assert_allclose(pca, pca_direction(h_a, h_b), rtol=1e-3, atol=1e-4)

    got_a, got_b = paired_last_token_states(base, aligned, tokenizer, TEXTS, layers, batch_size=4)
    np.testing.assert_allclose(got_a, h_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_b, h_b, rtol=1e-4, atol=1e-5)


def test_train_steering_vector_refuses_bad_settings(pair, tokenizer) -> None:
    base, aligned = pair
    with pytest.raises(ConfigError, match="method"):
        train_steering_vector(base, aligned, tokenizer, TEXTS, [0], method="median")
    with pytest.raises(ModelError, match="decoder blocks"):
        train_steering_vector(base, _llama(2, layers=2), tokenizer, TEXTS, [0])


def test_train_contrastive_vector_is_the_difference_of_group_means(pair, tokenizer) -> None:
    model = pair[0]
    layers = [1]
    want = _last_token_by_hand(model, tokenizer, TEXTS, layers).mean(axis=0) - _last_token_by_hand(
        model, tokenizer, REJECTED, layers
    ).mean(axis=0)
    got = train_contrastive_vector(model, tokenizer, TEXTS, REJECTED, layers, batch_size=2)
    assert got.shape == (1, 32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --- the vectors file ---------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(8)
    layers = [2, 5, 7]
    sets = {
        "mean_diff_both": rng.standard_normal((3, 16)).astype(np.float32),
        "pca": rng.standard_normal((3, 16)).astype(np.float32),
    }
    path = tmp_path / "v" / "llama.safetensors"
    save_vectors(path, sets, layers, {"model": "tiny-llama", "n_pairs": 300})
    for kind, arr in sets.items():
        vectors, meta = load_vectors(path, kind, expect={"model": "tiny-llama"})
        assert list(vectors) == layers
        for row, layer in enumerate(layers):
            assert vectors[layer].dtype == np.float32
            np.testing.assert_array_equal(vectors[layer], arr[row])
        assert meta["layers"] == layers and meta["kinds"] == ["mean_diff_both", "pca"]
        assert meta["hidden_size"] == 16 and meta["n_pairs"] == 300 and meta["model"] == "tiny-llama"
    # one tensor per kind and layer, named "{kind}.layer{l}"
    arrays, _ = load_tensors(path)
    assert sorted(arrays) == sorted(f"{k}.layer{layer}" for k in sets for layer in layers)
    with pytest.raises(ArtifactError, match="model"):
        load_vectors(path, "pca", expect={"model": "other"})


def test_load_refuses_a_missing_kind_or_layer(tmp_path) -> None:
    path = tmp_path / "v.safetensors"
    save_vectors(path, {"contrastive": np.ones((2, 4), np.float32)}, [1, 3], {})
    with pytest.raises(ArtifactError, match="pca"):
        load_vectors(path, "pca")
    # a file whose metadata promises layer 3 but holds only layer 1
    broken = tmp_path / "broken.safetensors"
    save_tensors(broken, {"contrastive.layer1": np.ones(4, np.float32)}, {"layers": [1, 3], "kinds": ["contrastive"]})
    with pytest.raises(ArtifactError, match="layer 3"):
        load_vectors(broken, "contrastive")
    with pytest.raises(ArtifactError, match="not found"):
        load_vectors(tmp_path / "absent.safetensors", "contrastive")


def test_save_refuses_inconsistent_input(tmp_path) -> None:
    path = tmp_path / "v.safetensors"
    with pytest.raises(ConfigError, match="shape"):
        save_vectors(path, {"pca": np.ones((3, 4))}, [1, 2], {})
    with pytest.raises(ConfigError, match="hidden size"):
        save_vectors(path, {"a": np.ones((2, 4)), "b": np.ones((2, 5))}, [1, 2], {})
    with pytest.raises(ConfigError, match="kind"):
        save_vectors(path, {"bad.kind": np.ones((2, 4))}, [1, 2], {})
    with pytest.raises(ConfigError, match="distinct"):
        save_vectors(path, {"pca": np.ones((2, 4))}, [1, 1], {})
    with pytest.raises(ConfigError, match="NaN"):
        save_vectors(path, {"pca": np.full((2, 4), np.nan)}, [1, 2], {})
    with pytest.raises(ConfigError, match="contradicts"):
        save_vectors(path, {"pca": np.ones((2, 4))}, [1, 2], {"layers": [0, 1]})
    assert not path.exists()
