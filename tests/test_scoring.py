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
