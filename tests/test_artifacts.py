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
                 metadata={"model": "m", "layers": [1, 3, 5]})
    arrays, meta = load_tensors(path, expect={"model": "m", "layers": [1, 3, 5]})
    np.testing.assert_array_equal(arrays["hidden"], x)
    assert arrays["t"].dtype == np.float32  # bf16 is stored as float32 (numpy has no bf16)
    assert decode_metadata_value(meta["layers"]) == [1, 3, 5]
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


# ---------------------------------------------------------------- reproducible, consistent, shareable files

_SAVE_IN_A_PROCESS = """
import sys
import numpy as np
from driftlib.core.artifacts import save_tensors
x = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
meta = {f"key{i:02d}": [i, "v"] for i in range(20)}
meta.update(model="m", layers=[0, 2, 4], n_rows=5, ids=list("abcde"), pooling="mean")
save_tensors(sys.argv[1], {"hidden": x, "other": np.ones((5, 3, 4), np.float32)}, meta)
"""


def test_two_saves_in_separate_processes_are_byte_identical(tmp_path):
    """Before: the safetensors writer ordered the metadata by a per-process hash, so every run's
    file differed although tensors and metadata were the same."""
    import os
    import subprocess
    import sys

    paths = []
    for seed in ("1", "2", "3"):
        path = tmp_path / f"a{seed}.safetensors"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", _SAVE_IN_A_PROCESS, str(path)], env=env, check=True, timeout=120)
        paths.append(path)
    first = paths[0].read_bytes()
    assert all(p.read_bytes() == first for p in paths[1:])
    import json
    import struct

    (size,) = struct.unpack("<Q", first[:8])
    header = json.loads(first[8:8 + size])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])  # sorted in the file
    arrays, meta = load_tensors(paths[0])
    assert decode_metadata_value(meta["key07"]) == [7, "v"] and len(meta) == 26
    np.testing.assert_array_equal(arrays["hidden"], np.arange(60, dtype=np.float32).reshape(5, 3, 4))


@pytest.mark.parametrize("meta, words", [
    ({"n_rows": 999}, ["'n_rows' records 999", "tensor 'hidden' [4, 3, 2]", "has 4"]),
    ({"n_rows": 4, "ids": ["a", "b", "c"]}, ["'n_rows' records 4", "'ids' has 3"]),
    ({"layers": [0, 1]}, ["'layers' records 2 layers", "has 3"]),
    ({"ids": ["a", "b"]}, ["'ids' records 2 ids", "has 4"]),
])
def test_metadata_that_contradicts_the_tensors_is_refused(tmp_path, meta, words):
    path = tmp_path / "h.safetensors"
    save_tensors(path, {"hidden": np.zeros((4, 3, 2), np.float32)}, metadata=meta)
    with pytest.raises(ArtifactError) as info:
        load_tensors(path, producer="extract_prompts")
    message = str(info.value)
    assert str(path) in message and "extract_prompts" in message
    for word in words:
        assert word in message, message


def test_sweep_metadata_is_checked_along_its_axes(tmp_path):
    path = tmp_path / "s.safetensors"
    sweep = np.zeros((3, 5, 1, 2), np.float32)  # [lambdas, rows, measurement layers, d]
    good = {"lambdas": [0, 0.5, 1], "n_rows": 5, "measure_layers": [2]}
    save_tensors(path, {"own": sweep}, metadata=good)
    assert load_tensors(path)[0]["own"].shape == (3, 5, 1, 2)
    for key, value, words in (("n_rows", 6, "rows second"), ("lambdas", [0, 1], "lambdas first"),
                              ("measure_layers", [1, 2], "layers third")):
        save_tensors(path, {"own": sweep}, metadata={**good, key: value})
        with pytest.raises(ArtifactError, match=rf"'{key}' records .*{words}.*sweep_same_arch"):
            load_tensors(path, producer="sweep_same_arch")
    # keys that are absent are not checked; 4-D tensors without lambdas are not rows-first
    save_tensors(path, {"rounds": np.zeros((2, 5, 3, 2), np.float32)}, metadata={"layers": [7]})
    load_tensors(path)


def test_written_files_respect_the_umask(tmp_path):
    """Before: every output was 0600 (mkstemp's mode), whatever the umask."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_table(pd.DataFrame({"x": [1]}), tmp_path / "t.parquet")
        save_tensors(tmp_path / "a.safetensors", {"x": np.zeros(2, np.float32)})
        write_json({"a": 1}, tmp_path / "r.json")
        for name in ("t.parquet", "a.safetensors", "r.json"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        os.umask(0o077)
        write_table(pd.DataFrame({"x": [1]}), tmp_path / "private.parquet")
        assert stat.S_IMODE((tmp_path / "private.parquet").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_json_number_keeps_finite_numbers_and_drops_the_rest():
    from driftlib.core.artifacts import json_number

    assert json_number(np.float32(0.25)) == 0.25 and type(json_number(np.int64(3))) is float
    assert json_number("1.5") == 1.5  # a number read back from text
    for missing in (None, float("nan"), np.inf, -np.inf, "n/a", [1.0]):
        assert json_number(missing) is None
