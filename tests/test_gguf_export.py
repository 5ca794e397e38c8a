"""llama.cpp control-vector GGUF files: round trip, the file's layout read with gguf's own reader,
and the layer numbering (driftlib layer l <-> direction.l; llama.cpp has no slot for block 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from driftlib.core.errors import ArtifactError, ConfigError
from driftlib.steer.gguf import export_control_vector, import_control_vector

gguf = pytest.importorskip("gguf")

D = 24


def _vectors(layers: list[int], seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {layer: rng.standard_normal(D).astype(np.float32) for layer in layers}


def test_round_trip_keeps_values_and_layers(tmp_path) -> None:
    vectors = _vectors([5, 1, 12])
    path = tmp_path / "out" / "llama.gguf"
    export_control_vector(path, vectors, model_hint="llama", metadata={"kind": "mean_diff_both", "lam": "4.0"})
    got, meta = import_control_vector(path)
    assert list(got) == [1, 5, 12]
    for layer, vec in vectors.items():
        assert got[layer].dtype == np.float32
        np.testing.assert_array_equal(got[layer], vec)
    assert meta == {
        "architecture": "controlvector",
        "model_hint": "llama",
        "layer_count": 3,
        "kind": "mean_diff_both",
        "lam": "4.0",
    }


def test_file_layout_is_what_llama_cpp_reads(tmp_path) -> None:
    vectors = _vectors([1, 2, 7])
    vectors[2] = torch.from_numpy(vectors[2])  # torch tensors are accepted too
    path = tmp_path / "v.gguf"
    export_control_vector(path, vectors, model_hint="qwen2")
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "qwen2"
    assert reader.get_field("controlvector.layer_count").contents() == 3
    tensors = {t.name: t for t in reader.tensors}
    # the same number as driftlib's 0-based block index: llama.cpp adds direction.N to block N's output
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.7"]
    for layer in (1, 2, 7):
        t = tensors[f"direction.{layer}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(s) for s in t.shape] == [D]  # 1-D, n_embd values
        want = vectors[layer].numpy() if isinstance(vectors[layer], torch.Tensor) else vectors[layer]
        np.testing.assert_array_equal(np.asarray(t.data), want)


def test_layer_zero_and_bad_vectors_are_refused(tmp_path) -> None:
    path = tmp_path / "v.gguf"
    with pytest.raises(ConfigError, match="block 0"):
        export_control_vector(path, _vectors([0, 3]), model_hint="llama")
    with pytest.raises(ConfigError, match="others"):
        export_control_vector(path, {1: np.ones(4), 2: np.ones(5)}, model_hint="llama")
    with pytest.raises(ConfigError, match="NaN"):
        export_control_vector(path, {1: np.full(4, np.inf)}, model_hint="llama")
    with pytest.raises(ConfigError, match=r"\[d\]"):
        export_control_vector(path, {1: np.ones((2, 4))}, model_hint="llama")
    with pytest.raises(ConfigError, match="model_hint"):
        export_control_vector(path, {1: np.ones(4)}, model_hint="")
    with pytest.raises(ConfigError, match="no vectors"):
        export_control_vector(path, {}, model_hint="llama")
    assert not path.exists() and not list(tmp_path.iterdir())


def _write_raw(path, arch: str, tensors: dict[str, np.ndarray], count_type: str = "uint32") -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", "mistral")
    getattr(writer, f"add_{count_type}")(f"{arch}.layer_count", len(tensors))
    for name, arr in tensors.items():
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_imports_a_repeng_style_file(tmp_path) -> None:
    """repeng writes layer_count as uint32 and its directions keyed by the 0-based block index."""
    path = tmp_path / "repeng.gguf"
    vecs = _vectors([3, 4], seed=1)
    _write_raw(path, "controlvector", {f"direction.{layer}": v for layer, v in vecs.items()})
    got, meta = import_control_vector(path)
    assert meta["model_hint"] == "mistral" and meta["layer_count"] == 2
    assert list(got) == [3, 4]
    np.testing.assert_array_equal(got[4], vecs[4])


def test_import_refuses_files_llama_cpp_would_not_load(tmp_path) -> None:
    other = tmp_path / "model.gguf"
    _write_raw(other, "llama", {"direction.1": np.ones(4, np.float32)})
    with pytest.raises(ArtifactError, match="architecture"):
        import_control_vector(other)
    zero = tmp_path / "zero.gguf"
    _write_raw(zero, "controlvector", {"direction.0": np.ones(4, np.float32), "direction.1": np.ones(4, np.float32)})
    with pytest.raises(ArtifactError, match="direction.0"):
        import_control_vector(zero)
    empty = tmp_path / "empty.gguf"
    _write_raw(empty, "controlvector", {"other.1": np.ones(4, np.float32)})
    with pytest.raises(ArtifactError, match="no direction"):
        import_control_vector(empty)
    with pytest.raises(ArtifactError, match="not found"):
        import_control_vector(tmp_path / "absent.gguf")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all")
    with pytest.raises(ArtifactError, match="GGUF"):
        import_control_vector(garbage)
