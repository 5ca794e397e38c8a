"""Exporting steering vectors as llama.cpp control vectors (GGUF), and reading them back.

The format is the one llama.cpp's ``--control-vector`` loads and repeng's ``export_gguf`` writes:
a GGUF file with ``general.architecture = "controlvector"``, the keys
``controlvector.model_hint`` (string) and ``controlvector.layer_count`` (number of direction
tensors), and one 1-D float32 tensor ``direction.{N}`` of ``n_embd`` values per layer.

Layer numbering (checked in the llama.cpp sources, ggml-org/llama.cpp):

- ``common/common.cpp``, ``common_control_vector_load_one``: parses ``N`` from ``direction.N``,
  rejects ``N == 0`` ("invalid (zero) direction tensor layer index"; the whole file is then
  skipped) and stores the tensor at offset ``n_embd * (N - 1)`` ("layer 1 at [0]").
- ``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply``: copies offset ``n_embd * (il - 1)``
  into ``tensors[il]`` for ``il = 1 .. n_layer - 1`` ("there's never a tensor for layer 0"), so
  ``direction.N`` lands in ``tensors[N]``.
- the model graphs (``src/models/*.cpp``): inside ``for (int il = 0; il < n_layer; ++il)`` each
  layer ends with ``cur = build_cvec(cur, il); cb(cur, "l_out", il);``, i.e. ``tensors[il]`` is
  added to the output of layer ``il``; llama.cpp's layer ``il`` is GGUF ``blk.{il}``, converted
  from Hugging Face ``model.layers.{il}``.

So ``direction.N`` is added to the output of 0-based decoder block ``N``, which is driftlib's
"layer ``N``" (:mod:`driftlib.model.layers`): **driftlib layer ``l`` is exported as ``direction.l``, with
no offset**. repeng agrees (its directions are keyed by the 0-based block index whose output
``hidden_states[l + 1]`` they were read from, and written as ``direction.{l}``). Block 0's output
cannot be steered in llama.cpp, so :func:`export_control_vector` refuses layer 0 rather than write
a file llama.cpp would skip. llama.cpp adds the vector to every token (no start position) and
scales it by ``--control-vector-scaled FILE SCALE``; ``--control-vector-layer-range`` limits the
layers. Note that llama.cpp's own ``cvector-generator`` names the vector it reads at ``l_out`` of
layer ``il`` ``direction.{il + 1}``; that is a property of that tool, not of the loader.

``gguf`` (the ``gguf`` package of the llama.cpp project) is imported when these functions run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from driftlib.core.artifacts import atomic_path
from driftlib.core.errors import ArtifactError, ConfigError, DriftlibError

ARCHITECTURE = "controlvector"
MODEL_HINT_KEY = f"{ARCHITECTURE}.model_hint"
LAYER_COUNT_KEY = f"{ARCHITECTURE}.layer_count"
#: extra provenance is written under this prefix (llama.cpp ignores keys it does not know)
METADATA_PREFIX = "driftlib."
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DriftlibError(
            "GGUF export needs the 'gguf' package (pip install gguf); it is not installed"
        ) from exc
    return gguf


def export_control_vector(
    path: str | os.PathLike,
    vectors: Mapping[int, np.ndarray],
    *,
    model_hint: str,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``{layer: v [d]}`` as a llama.cpp control vector, atomically.

    Args:
        path: the ``.gguf`` file to write.
        vectors: driftlib block index (0-based, ``>= 1``) → vector ``[d]``; written as the float32
            tensor ``direction.{layer}`` (same number: see the module docstring), in layer order.
            Scale by λ before exporting, or at load time with ``--control-vector-scaled``.
        model_hint: the model family the vector belongs to (``controlvector.model_hint``; repeng
            writes ``config.model_type``, llama.cpp's generator the GGUF architecture name).
        metadata: optional provenance strings, stored as ``driftlib.{key}``.

    Raises:
        ConfigError: no vectors; layer 0 (llama.cpp cannot steer block 0 and rejects
            ``direction.0``) or a negative layer; vectors that are not 1-D, differ in size, or
            hold NaN/Inf; an empty ``model_hint``.
    """
    gguf = _gguf()
    if not vectors:
        raise ConfigError("export_control_vector: no vectors given")
    if not isinstance(model_hint, str) or not model_hint:
        raise ConfigError("export_control_vector: model_hint must be a non-empty string (e.g. 'llama')")
    rows: dict[int, np.ndarray] = {}
    size: int | None = None
    for key, value in vectors.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise ConfigError(f"export_control_vector: layer {key!r} is not an integer block index")
        layer = int(key)
        if layer < 1:
            raise ConfigError(
                f"export_control_vector: layer {layer} cannot be exported: llama.cpp adds direction.N to the "
                "output of block N and has no slot for block 0 (it rejects direction.0 and skips the whole "
                "file); steer at block 1 or later"
            )
        arr = np.asarray(value.detach().cpu().float().numpy() if hasattr(value, "detach") else value, dtype=np.float32)
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"export_control_vector: the vector for layer {layer} has shape {arr.shape}; expected [d]")
        if size is None:
            size = arr.shape[0]
        elif arr.shape[0] != size:
            raise ConfigError(f"export_control_vector: layer {layer} has {arr.shape[0]} values, the others {size}")
        if not np.isfinite(arr).all():
            raise ConfigError(f"export_control_vector: the vector for layer {layer} holds NaN or Inf")
        rows[layer] = np.ascontiguousarray(arr)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        try:
            writer.add_string(MODEL_HINT_KEY, model_hint)
            writer.add_int32(LAYER_COUNT_KEY, len(rows))
            for key, value in (metadata or {}).items():
                writer.add_string(f"{METADATA_PREFIX}{key}", str(value))
            for layer in sorted(rows):
                writer.add_tensor(f"direction.{layer}", rows[layer])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()


def _field_value(field: Any) -> Any:
    if hasattr(field, "contents"):
        return field.contents()
    return bytes(field.parts[field.data[0]]).decode("utf-8")  # older gguf: strings only


def import_control_vector(path: str | os.PathLike) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read a llama.cpp control vector (written here, by repeng or by llama.cpp's generator).

    Returns:
        ``({layer: v [d] float32}, metadata)``: ``direction.N`` becomes driftlib layer ``N`` (the
        output of 0-based block ``N``; see the module docstring). ``metadata`` holds
        ``architecture``, ``model_hint``, ``layer_count`` (as stored, or None) and every
        ``driftlib.*`` key without its prefix.

    Raises:
        ArtifactError: a missing or unreadable file, another architecture, no ``direction.N``
            tensors, ``direction.0`` (which llama.cpp rejects), a tensor that is not 1-D float32,
            or directions of different sizes.
    """
    gguf = _gguf()
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: file not found")
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:  # the reader raises several types for damaged files
        raise ArtifactError(f"{p}: not a readable GGUF file ({exc})") from exc
    arch_field = reader.get_field("general.architecture")
    architecture = _field_value(arch_field) if arch_field is not None else None
    if architecture != ARCHITECTURE:
        raise ArtifactError(f"{p}: GGUF architecture is {architecture!r}, not {ARCHITECTURE!r}; not a control vector")
    metadata: dict[str, Any] = {"architecture": architecture, "model_hint": None, "layer_count": None}
    for name, field in reader.fields.items():
        if name == MODEL_HINT_KEY:
            metadata["model_hint"] = _field_value(field)
        elif name == LAYER_COUNT_KEY:
            metadata["layer_count"] = int(_field_value(field))
        elif name.startswith(METADATA_PREFIX):
            metadata[name[len(METADATA_PREFIX) :]] = _field_value(field)
    out: dict[int, np.ndarray] = {}
    size: int | None = None
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None:
            continue
        layer = int(match.group(1))
        if layer == 0:
            raise ArtifactError(f"{p}: holds direction.0, which llama.cpp rejects (there is no slot for block 0)")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ArtifactError(f"{p}: {tensor.name} is {tensor.tensor_type.name}, not F32")
        data = np.array(tensor.data, dtype=np.float32, copy=True)
        if data.ndim != 1:  # llama.cpp rejects any direction that is not 1-D
            raise ArtifactError(f"{p}: {tensor.name} has shape {data.shape}; expected 1-D")
        if size is None:
            size = data.shape[0]
        elif data.shape[0] != size:
            raise ArtifactError(f"{p}: {tensor.name} has {data.shape[0]} values, the other directions {size}")
        if layer in out:
            raise ArtifactError(f"{p}: {tensor.name} appears twice")
        out[layer] = data
    if not out:
        raise ArtifactError(f"{p}: no direction.N tensors; not a control vector")
    return dict(sorted(out.items())), metadata
