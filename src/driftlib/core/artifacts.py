"""Reading and writing the artifacts that pass between workflow rules.

Tables are Parquet, tensors are safetensors, small records are JSON. Nothing is pickled. Every
write goes to a temporary file beside the target and is renamed into place, so a killed job never
leaves a half-written file under the final name. Every reader checks what it was given and raises
:class:`~driftlib.core.errors.ArtifactError` naming the file and the rule that produces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib import __version__
from driftlib.core.errors import ArtifactError

#: metadata key under which every artifact records the driftlib version that wrote it
VERSION_KEY = "driftlib_version"


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On an exception the temporary file is removed and ``path`` is left untouched. The file gets
    the mode an ordinary write would give it (``0o666`` less the umask), not ``mkstemp``'s private
    ``0o600``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _encode_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    out = {VERSION_KEY: __version__}
    for key, value in (metadata or {}).items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return dict(sorted(out.items()))


def sort_safetensors_metadata(path: str | os.PathLike) -> None:
    """Rewrite the header of a safetensors file with its ``__metadata__`` keys in sorted order.

    The safetensors writer keeps metadata in a hash map whose order changes from one process to
    the next, so two writes of the same tensors and metadata would differ byte for byte. Sorting
    the keys does not change the header's length (the same keys and values, reordered), so the
    header is rewritten in place and the tensor data is not touched; should the length differ
    (another writer's JSON escaping), the file is rewritten whole.
    """
    p = Path(path)
    with open(p, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        raw = f.read(size)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta:
            return
        ordered = {"__metadata__": dict(sorted(meta.items()))}
        ordered.update((k, v) for k, v in header.items() if k != "__metadata__")
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= size:
            f.seek(8)
            f.write(text.ljust(size, b" "))  # safetensors pads its header with spaces
            return
        data = f.read()
    padded = text.ljust(-(-len(text) // 8) * 8, b" ")
    p.write_bytes(struct.pack("<Q", len(padded)) + padded + data)


def decode_metadata_value(value: str) -> Any:
    """Undo the JSON encoding that :func:`save_tensors` applies to non-string metadata."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _check_expected(path: Path, metadata: Mapping[str, str], expect: Mapping[str, Any] | None,
                    producer: str | None) -> None:
    hint = f" Re-run the rule that writes it{f' ({producer})' if producer else ''}."
    for key, wanted in (expect or {}).items():
        if key not in metadata:
            raise ArtifactError(f"{path}: metadata has no '{key}' (expected {wanted!r}).{hint}")
        got = decode_metadata_value(metadata[key])
        if got != wanted and metadata[key] != wanted:
            raise ArtifactError(
                f"{path}: metadata '{key}' is {got!r}, expected {wanted!r}; the file was written "
                f"for other settings.{hint}"
            )


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                 metadata: Mapping[str, Any] | None = None) -> None:
    """Write named arrays (numpy or torch) to a safetensors file, atomically.

    ``metadata`` values that are not strings are stored as JSON; the driftlib version is added.
    """
    from safetensors.numpy import save_file

    arrays = {}
    for name, value in tensors.items():
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().to("cpu")
            if str(value.dtype) == "torch.bfloat16":
                value = value.float()
            value = value.numpy()
        arrays[name] = np.ascontiguousarray(value)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=_encode_metadata(metadata))
        sort_safetensors_metadata(tmp)


def load_tensors(path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None,
                 producer: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file written by :func:`save_tensors`.

    Returns ``(arrays, metadata)``. ``expect`` maps metadata keys to the values the caller needs;
    a missing, truncated or mismatched file raises :class:`ArtifactError` naming ``producer``
    (the rule to re-run). So does metadata that contradicts the tensors (:func:`check_shapes`).
    """
    from safetensors import safe_open

    p = Path(path)
    hint = f" Re-run the rule that writes it{f' ({producer})' if producer else ''}."
    if not p.is_file():
        raise ArtifactError(f"{p}: file not found.{hint}")
    try:
        with safe_open(str(p), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ArtifactError(f"{p}: not a readable safetensors file ({exc}).{hint}") from exc
    check_shapes(p, arrays, metadata, producer)
    _check_expected(p, metadata, expect, producer)
    return arrays, metadata


def _length(metadata: Mapping[str, str], key: str) -> int | None:
    """``len`` of a list-valued metadata entry, None when it is absent or not a list."""
    if key not in metadata:
        return None
    value = decode_metadata_value(metadata[key])
    return len(value) if isinstance(value, list) else None


def check_shapes(path: Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str],
                 producer: str | None = None) -> None:
    """Check the recorded row count, ids and layers against the tensors, for the keys present.

    * ``ids`` (a list) has ``n_rows`` entries;
    * every ``[n, L, d]`` tensor has ``n_rows`` rows and ``len(layers)`` layers;
    * a sweep file (``lambdas`` recorded) holds ``[n_lambdas, n, m, d]`` tensors: ``len(lambdas)``,
      ``n_rows`` and ``len(measure_layers)`` along their first three axes.

    Raises:
        ArtifactError: naming the file, the key, both values and the rule to re-run.
    """
    hint = f" Re-run the rule that writes it{f' ({producer})' if producer else ''}."

    def refuse(key: str, recorded: Any, what: str, found: int) -> None:
        raise ArtifactError(f"{path}: metadata '{key}' records {recorded}, but {what} has {found}; the file is "
                            f"inconsistent (edited or damaged).{hint}")

    n_rows = None
    if "n_rows" in metadata:
        raw = decode_metadata_value(metadata["n_rows"])
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise ArtifactError(f"{path}: metadata 'n_rows' is {metadata['n_rows']!r}, not a row count.{hint}")
        n_rows = raw
    n_ids, n_layers = _length(metadata, "ids"), _length(metadata, "layers")
    n_lambdas, n_measure = _length(metadata, "lambdas"), _length(metadata, "measure_layers")
    if n_rows is not None and n_ids is not None and n_ids != n_rows:
        refuse("n_rows", n_rows, "'ids'", n_ids)
    for name in sorted(arrays):
        shape = arrays[name].shape
        if len(shape) == 3:
            if n_rows is not None and shape[0] != n_rows:
                refuse("n_rows", n_rows, f"tensor '{name}' {list(shape)} (rows first)", shape[0])
            if n_rows is None and n_ids is not None and shape[0] != n_ids:
                refuse("ids", f"{n_ids} ids", f"tensor '{name}' {list(shape)} (rows first)", shape[0])
            if n_layers is not None and shape[1] != n_layers:
                refuse("layers", f"{n_layers} layers", f"tensor '{name}' {list(shape)} (layers second)", shape[1])
        elif len(shape) == 4 and n_lambdas is not None:
            if shape[0] != n_lambdas:
                refuse("lambdas", f"{n_lambdas} lambdas", f"tensor '{name}' {list(shape)} (lambdas first)", shape[0])
            if n_rows is not None and shape[1] != n_rows:
                refuse("n_rows", n_rows, f"tensor '{name}' {list(shape)} (rows second)", shape[1])
            if n_measure is not None and shape[2] != n_measure:
                refuse("measure_layers", f"{n_measure} layers", f"tensor '{name}' {list(shape)} (layers third)",
                       shape[2])


def write_table(df: pd.DataFrame, path: str | os.PathLike,
                metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``df`` atomically: Parquet for ``.parquet`` (with metadata), CSV for ``.csv``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    with atomic_path(p) as tmp:
        if p.suffix == ".csv":
            df.to_csv(tmp, index=False, float_format="%.6g")
            return
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"driftlib"] = json.dumps(_encode_metadata(metadata), sort_keys=True).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_table(path: str | os.PathLike, *, columns: list[str] | None = None,
               expect: Mapping[str, Any] | None = None,
               producer: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a Parquet table written by :func:`write_table`; returns ``(frame, metadata)``.

    ``columns`` are required columns; ``expect`` is checked against the stored metadata.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    hint = f" Re-run the rule that writes it{f' ({producer})' if producer else ''}."
    if not p.is_file():
        raise ArtifactError(f"{p}: file not found.{hint}")
    try:
        table = pq.read_table(p)
    except Exception as exc:
        raise ArtifactError(f"{p}: not a readable Parquet file ({exc}).{hint}") from exc
    raw = (table.schema.metadata or {}).get(b"driftlib", b"{}")
    metadata = json.loads(raw.decode())
    df = table.to_pandas()
    missing = [c for c in (columns or []) if c not in df.columns]
    if missing:
        raise ArtifactError(f"{p}: missing columns {missing}.{hint}")
    _check_expected(p, metadata, expect, producer)
    return df, metadata


def _finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (numpy scalars included) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite_or_none(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def json_number(value: object) -> float | None:
    """A table cell as a JSON number: the finite float it holds, else None (missing, NaN, infinite, text)."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically. NaN and infinities become ``null`` (strict JSON)."""
    text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def read_json(path: str | os.PathLike, *, producer: str | None = None) -> Any:
    p = Path(path)
    hint = f" Re-run the rule that writes it{f' ({producer})' if producer else ''}."
    try:
        return json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{p}: file not found.{hint}") from exc
    except ValueError as exc:
        raise ArtifactError(f"{p}: not valid JSON ({exc}).{hint}") from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of strings, bytes, arrays or frames (for dataset fingerprints)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(part, index=False).values.tobytes())
            h.update(",".join(map(str, part.columns)).encode())
        elif isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; swap it in for ``target`` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a model folder should not be
    try:
        yield tmp
        if target.exists():
            # rename(2) may replace an empty directory: move the old build aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                        dir=target.parent))
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
