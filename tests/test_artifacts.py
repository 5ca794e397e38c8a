"""Artifact I/O: atomic writes, metadata round trips, and refusal of mismatched or damaged files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from driftlib import __version__
from driftlib.core.artifacts import (
    atomic_path,
    decode_metadata_value,
    fingerprint,
    load_tensors,
    read_json,
    read_table,
    save_tensors,
    write_json,
    write_table,
)
from driftlib.core.errors import ArtifactError


def test_tensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "a.safetensors"
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    save_tensors(path, {"hidden": x, "t": torch.ones(3, dtype=torch.bfloat16)},
                 metadata={"model": "m", "layers": [1, 3]})
    arrays, meta = load_tensors(path, expect={"model": "m", "layers": [1, 3]})
    np.testing.assert_array_equal(arrays["hidden"], x)
    assert arrays["t"].dtype == np.float32  # bf16 is stored as float32 (numpy has no bf16)
    assert decode_metadata_value(meta["layers"]) == [1, 3]
    assert meta["driftlib_version"] == __version__


def test_mismatched_metadata_names_the_key_and_the_rule(tmp_path):
    path = tmp_path / "a.safetensors"
    save_tensors(path, {"x": np.zeros(2, np.float32)}, metadata={"dataset_fingerprint": "abc"})
    with pytest.raises(ArtifactError, match=r"dataset_fingerprint.*'abc'.*extract_prompts"):
        load_tensors(path, expect={"dataset_fingerprint": "xyz"}, producer="extract_prompts")


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    save_tensors(path, {"x": np.zeros(1000, np.float32)})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_tensors(path, producer="extract_prompts")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_table_round_trip_and_required_columns(tmp_path):
    df = pd.DataFrame({"id": ["a", "b"], "v": [1.5, 2.5]})
    write_table(df, tmp_path / "t.parquet", metadata={"seed": 3})
    back, meta = read_table(tmp_path / "t.parquet", columns=["id", "v"])
    pd.testing.assert_frame_equal(back, df)
    assert decode_metadata_value(meta["seed"]) == 3
    with pytest.raises(ArtifactError, match=r"missing columns \['w'\]"):
        read_table(tmp_path / "t.parquet", columns=["w"], producer="prepare_prompts")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ArtifactError, match="not a readable Parquet"):
        read_table(tmp_path / "bad.parquet")


def test_json_and_fingerprint(tmp_path):
    write_json({"a": np.float32(1.5), "b": np.arange(2)}, tmp_path / "x.json")
    assert read_json(tmp_path / "x.json") == {"a": 1.5, "b": [0, 1]}
    # NaN and infinities are written as null: strict JSON parsers refuse a bare NaN
    write_json({"ci": [float("nan"), np.float64("inf")], "x": np.array([np.nan, 2.0])}, tmp_path / "n.json")
    text = (tmp_path / "n.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(tmp_path / "n.json") == {"ci": [None, None], "x": [None, 2.0]}
    df = pd.DataFrame({"x": [1, 2]})
    assert fingerprint(df) == fingerprint(df.copy())
    assert fingerprint(df) != fingerprint(df.iloc[::-1])
