"""Phase 1 scoring: hidden states are refused unless they belong to the prompt table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftlib.core.artifacts import save_tensors
from driftlib.core.errors import ArtifactError
from driftlib.phases.baseline.scoring import load_activations_for


@pytest.fixture()
def prompts() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "axiom": ["x"] * 3, "safety_label": ["safe", "unsafe", "safe"],
                         "text": ["t1", "t2", "t3"]})


def _write(path, hidden, ids, fingerprint="fp1"):
    save_tensors(path, {"hidden": hidden}, metadata={"ids": ids, "dataset_fingerprint": fingerprint, "layers": [0, 1]})


def test_matching_states_are_read(tmp_path, prompts):
    hidden = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    _write(tmp_path / "h.safetensors", hidden, ["a", "b", "c"])
    got, meta = load_activations_for(tmp_path / "h.safetensors", prompts, {"dataset_fingerprint": "fp1"})
    np.testing.assert_array_equal(got, hidden)
    assert meta["layers"] == [0, 1] and "ids" not in meta


@pytest.mark.parametrize("hidden, ids, fingerprint, words", [
    (np.zeros((3, 2, 4), np.float16), ["a", "b", "c"], "fp1", "dtype float16, expected float32"),
    (np.zeros((3, 2, 4), np.float32), ["a", "c", "b"], "fp1", "other ids"),
    (np.zeros((2, 2, 4), np.float32), ["a", "b"], "fp1", "holds 2 rows"),
    (np.zeros((3, 4), np.float32), ["a", "b", "c"], "fp1", "of shape (3, 4)"),
    (np.zeros((3, 2, 4), np.float32), ["a", "b", "c"], "fp2", "dataset_fingerprint"),
])
def test_mismatched_states_are_refused_naming_the_rule(tmp_path, prompts, hidden, ids, fingerprint, words):
    _write(tmp_path / "h.safetensors", hidden, ids, fingerprint)
    with pytest.raises(ArtifactError, match="extract_prompts") as info:
        load_activations_for(tmp_path / "h.safetensors", prompts, {"dataset_fingerprint": "fp1"})
    assert words in str(info.value)


def test_a_truncated_file_is_refused(tmp_path, prompts):
    _write(tmp_path / "h.safetensors", np.zeros((3, 2, 4), np.float32), ["a", "b", "c"])
    data = (tmp_path / "h.safetensors").read_bytes()
    (tmp_path / "h.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="extract_prompts"):
        load_activations_for(tmp_path / "h.safetensors", prompts, {"dataset_fingerprint": "fp1"})


def test_power_columns_follow_the_normal_approximation() -> None:
    import pandas as pd

    from driftlib.phases.baseline.scoring import with_power

    table = pd.DataFrame({"category": ["overall", "a", "b"], "aqi": [3.0, 0.5, -2.0], "se": [1.0, 0.5, 0.25],
                          "n_safe": [140, 20, 40], "n_unsafe": [140, 20, 40]})
    got = with_power(table, 0.95)
    # (z_0.975 + z_0.8) se = (1.959964 + 0.841621) se
    np.testing.assert_allclose(got["mde"], [2.801585, 1.400793, 0.700396], rtol=1e-6)
    assert got["resolvable"].tolist() == [True, False, True]
    assert got["descriptive"].tolist() == [False, True, False]


def test_aligned_minus_base_with_its_detectable_effect() -> None:
    import pandas as pd

    from driftlib.phases.baseline.summary import aligned_vs_base

    rows = []
    for variant, aqi, se in (("base", 1.0, 0.3), ("aligned", 2.5, 0.4)):
        rows.append({"model": "m", "variant": variant, "layer": 3, "category": "overall", "primary": True,
                     "aqi": aqi, "se": se, "ci_low": aqi - 1, "ci_high": aqi + 1, "n_safe": 140, "n_unsafe": 140})
    got = aligned_vs_base(pd.DataFrame(rows)).iloc[0]
    assert got["difference"] == pytest.approx(1.5)
    assert got["se"] == pytest.approx(0.5)  # sqrt(0.3^2 + 0.4^2)
    assert got["mde"] == pytest.approx(2.801585 * 0.5, rel=1e-6)
    assert bool(got["resolvable"]) is True and bool(got["descriptive"]) is False


def test_the_probe_sits_beside_the_aqi(tmp_path) -> None:
    """A signal in one low-variance feature: the probe finds it (as probe_auc computes it alone)."""
    from driftlib.core.artifacts import write_table
    from driftlib.phases.baseline.scoring import score_activation_file
    from driftlib.stats.probe import probe_auc

    rng = np.random.default_rng(0)
    n = 80
    labels = np.array(["safe", "unsafe"] * (n // 2))
    X = rng.standard_normal((n, 2, 6)).astype(np.float32) * np.array([10, 10, 10, 10, 10, 0.1], np.float32)
    X[:, :, 5] += (labels == "safe")[:, None] * 0.3
    table = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "axiom": ["x", "z"] * (n // 2),
                          "safety_label": labels, "text": [f"t{i}" for i in range(n)]})
    write_table(table, tmp_path / "prompts.parquet", metadata={"dataset_fingerprint": "fp"})
    save_tensors(tmp_path / "h.safetensors", {"hidden": X},
                 metadata={"ids": table["id"].tolist(), "dataset_fingerprint": "fp", "layers": [0, 1],
                           "n_layers": 2, "layer_spec": [0, 1], "model": "m", "variant": "base"})
    got = score_activation_file(tmp_path / "h.safetensors", tmp_path / "prompts.parquet", n_boot=200, n_perm=0,
                                probe_folds=4, probe_permutations=5)
    row = got[(got["layer"] == 0) & (got["category"] == "overall")].iloc[0]
    want = probe_auc(X[:, 0, :], (labels == "safe").astype(int), n_folds=4, n_boot=200, n_perm=5)
    assert row["probe_auc"] == pytest.approx(want.auc) and row["probe_auc"] > 0.9
    assert {"mde", "resolvable", "descriptive", "probe_ci_low", "probe_p_value"} <= set(got.columns)
