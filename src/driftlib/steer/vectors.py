"""Steering vectors (D-STEER): computing them from hidden states, judging them, storing them.

Shapes: ``n`` texts, ``L`` layers (the block indices the states were read at, in order), ``d``
hidden size. Hidden states come as ``[n, L, d]`` arrays from
:func:`driftlib.model.forward.extract_hidden_states`; a vector set is ``[L, d]``.

- :func:`mean_difference` ``v_l = mean_i (h_l^aligned(x_i) - h_l^base(x_i))``, read at the last
  real token (design.md, "Steering vectors").
- :func:`pca_direction` the first principal direction of the same paired differences, its sign
  fixed against the mean difference and its length set to the mean difference's.
- :func:`contrastive` ``mean h_l(chosen) - mean h_l(rejected)`` within one model (for families with
  no released base model).
- :func:`split_half_stability` / :func:`contrastive_stability`: the cosine between the vectors of
  two disjoint random halves of the pairs, averaged over splits. On a real 135M model, contrastive
  vectors from halves of 300 hh-rlhf pairs agreed only at cosine 0.37-0.47, so every vector is
  reported with this figure.
- :func:`residual_norms` / :func:`relative_norms`: vector norms relative to the residual stream,
  which differs widely between families (Gemma-2 scales its embeddings by sqrt(d)). Medians, not
  means, over texts: in many models the first position carries a norm a hundred times the median
  token's, and a mean would be dominated by the few pooled rows that contain it.

Maths functions take and return numpy arrays and compute in float64; vectors are returned as
float32 (the dtype they are stored and applied in), statistics as float64.

This module runs no model (no torch): the model-facing functions, which train a vector from models
in one call, are in :mod:`driftlib.steer.train`. Vector sets are stored with :func:`save_vectors`
in one safetensors file, one tensor per kind and layer, named ``"{kind}.layer{l}"``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from driftlib.core.artifacts import decode_metadata_value, load_tensors, save_tensors
from driftlib.core.errors import ArtifactError, ConfigError, DataError

logger = logging.getLogger(__name__)

VectorMethod = Literal["mean_diff", "pca"]
VECTOR_METHODS: tuple[str, ...] = ("mean_diff", "pca")

#: a kind names one vector set in a vectors file ("mean_diff_both", "pca", "contrastive", ...)
_KIND = re.compile(r"^[A-Za-z0-9_\-]+$")


# ---------------------------------------------------------------------------------------------
# maths: numpy in, numpy out
# ---------------------------------------------------------------------------------------------


def _states(name: str, h: object) -> np.ndarray:
    arr = np.asarray(h)
    if arr.ndim != 3:
        raise DataError(f"{name}: expected hidden states [n, L, d], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{name}: no texts (shape {arr.shape}); a vector needs at least one")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def _paired(h_a: object, h_b: object, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _states(names[0], h_a), _states(names[1], h_b)
    if a.shape != b.shape:
        raise DataError(
            f"{names[0]} {a.shape} and {names[1]} {b.shape} must have the same shape [n, L, d] "
            "(row i of both must come from the same text)"
        )
    return a, b


def _vectors(name: str, v: object) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected vectors [L, d], got shape {arr.shape}")
    return arr


def mean_difference(h_aligned: np.ndarray, h_base: np.ndarray) -> np.ndarray:
    """The mean paired difference per layer.

    Args:
        h_aligned: ``[n, L, d]`` states of the aligned model; row ``i`` belongs to text ``i``.
        h_base: ``[n, L, d]`` states of the base model on the same texts.

    Returns:
        ``[L, d]`` float32: ``mean_i (h_aligned[i] - h_base[i])``.
    """
    a, b = _paired(h_aligned, h_base, ("h_aligned", "h_base"))
    return (a.astype(np.float64) - b.astype(np.float64)).mean(axis=0).astype(np.float32)


def pca_direction(h_aligned: np.ndarray, h_base: np.ndarray, *, center: bool = False) -> np.ndarray:
    """The first principal direction of the paired differences, per layer.

    With ``D_l = h_aligned[:, l] - h_base[:, l]`` (``[n, d]``), the direction is the first right
    singular vector of ``D_l`` (``center=False``, the default: the direction that carries the most
    of the differences' second moment, which is the common shift when the pairs agree) or of
    ``D_l`` minus its column means (``center=True``: classical PCA, as in repeng's ``pca_diff``; it
    finds the direction along which the differences *vary* most, which can miss a shift that all
    pairs share equally).

    The sign is fixed so that the direction's dot product with the mean difference ``m_l`` is
    positive, and the length is set to ``‖m_l‖``, so the result is on the scale of
    :func:`mean_difference` and ``lam`` means the same for both. A layer whose mean difference is
    zero gets a zero vector.

    Returns:
        ``[L, d]`` float32.
    """
    a, b = _paired(h_aligned, h_base, ("h_aligned", "h_base"))
    diffs = a.astype(np.float64) - b.astype(np.float64)  # [n, L, d]
    mean = diffs.mean(axis=0)  # [L, d]
    out = np.zeros(mean.shape, dtype=np.float64)
    for layer in range(diffs.shape[1]):
        target = float(np.linalg.norm(mean[layer]))
        if target == 0.0:
            continue
        x = diffs[:, layer, :]
        if center:
            x = x - x.mean(axis=0, keepdims=True)
        if not np.any(x):
            direction = mean[layer] / target  # no spread around the mean: the shift is the direction
        else:
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            direction = vt[0]
        if float(direction @ mean[layer]) < 0:
            direction = -direction
        out[layer] = direction / np.linalg.norm(direction) * target
    return out.astype(np.float32)


def contrastive(h_chosen: np.ndarray, h_rejected: np.ndarray) -> np.ndarray:
    """``mean h(chosen) - mean h(rejected)`` per layer, within one model.

    Args:
        h_chosen: ``[n_c, L, d]`` states of the chosen texts.
        h_rejected: ``[n_r, L, d]`` states of the rejected texts (``n_r`` may differ from ``n_c``).

    Returns:
        ``[L, d]`` float32.
    """
    c, r = _states("h_chosen", h_chosen), _states("h_rejected", h_rejected)
    if c.shape[1:] != r.shape[1:]:
        raise DataError(f"h_chosen {c.shape} and h_rejected {r.shape} must share layers and hidden size")
    return (c.astype(np.float64).mean(axis=0) - r.astype(np.float64).mean(axis=0)).astype(np.float32)


def cosine_per_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between ``a[l]`` and ``b[l]`` for every layer.

    Args:
        a, b: ``[L, d]`` vector sets.

    Returns:
        ``[L]`` float64; NaN where either vector is zero (the cosine is undefined there).
    """
    x, y = _vectors("a", a), _vectors("b", b)
    if x.shape != y.shape:
        raise DataError(f"a {x.shape} and b {y.shape} must have the same shape [L, d]")
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    dots = np.einsum("ld,ld->l", x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.nan)


def adjacent_layer_cosines(v: np.ndarray) -> np.ndarray:
    """Cosine between consecutive rows of ``v [L, d]`` (``v[l]`` and ``v[l + 1]``): ``[L - 1]`` float64.

    The rows are the layers the vectors were computed at, in order; "adjacent" means adjacent rows.
    """
    x = _vectors("v", v)
    if x.shape[0] < 2:
        return np.empty(0, dtype=np.float64)
    return cosine_per_layer(x[:-1], x[1:])


def split_half_stability(diffs: np.ndarray, *, n_splits: int = 20, seed: int = 0) -> np.ndarray:
    """How reproducible a mean vector is: cosine between the means of two disjoint random halves.

    For each of ``n_splits`` splits, the rows are permuted (``np.random.default_rng(seed)``, one
    ``permutation(n)`` per split, in order); the first ``n // 2`` rows form half A, the next
    ``n // 2`` half B (an odd row out is left out), and the cosine between ``mean(A)`` and
    ``mean(B)`` is taken per layer. The result is the mean over splits.

    For pure noise (isotropic, zero mean) the expected value is 0, with a spread of about
    ``1/sqrt(d)``; for a shift ``mu`` plus isotropic noise of variance ``s^2`` per dimension it is
    about ``‖mu‖² / (‖mu‖² + 2 d s² / n)``.

    Args:
        diffs: ``[n, L, d]`` per-text differences (``h_aligned - h_base``), ``n >= 2``.

    Returns:
        ``[L]`` float64 (NaN for a layer where a half's mean is exactly zero).
    """
    x = _states("diffs", diffs).astype(np.float64)
    n = x.shape[0]
    if n < 2:
        raise DataError(f"diffs: split-half stability needs at least 2 rows, got {n}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ConfigError(f"n_splits: {n_splits!r}; use a positive integer")
    rng = np.random.default_rng(seed)
    half = n // 2
    total = np.zeros(x.shape[1], dtype=np.float64)
    for _ in range(n_splits):
        perm = rng.permutation(n)
        total += cosine_per_layer(x[perm[:half]].mean(axis=0), x[perm[half : 2 * half]].mean(axis=0))
    return total / n_splits


def contrastive_stability(
    h_chosen: np.ndarray, h_rejected: np.ndarray, *, n_splits: int = 20, seed: int = 0
) -> np.ndarray:
    """:func:`split_half_stability` of a contrastive vector, splitting *pairs*.

    Row ``i`` of both arrays must be one preference pair. Each half's vector is
    ``mean h(chosen[half]) - mean h(rejected[half])`` over the same pairs, which equals the mean of
    the per-pair differences, so this is ``split_half_stability(h_chosen - h_rejected)`` with the
    same splits.

    Returns:
        ``[L]`` float64.
    """
    c, r = _paired(h_chosen, h_rejected, ("h_chosen", "h_rejected"))
    return split_half_stability(c.astype(np.float64) - r.astype(np.float64), n_splits=n_splits, seed=seed)


def residual_norms(h: np.ndarray) -> np.ndarray:
    """The typical residual-stream norm per layer: the MEDIAN over texts of ``‖h[i, l]‖``.

    Medians, not means: a pooled row that contains the first position (whose norm can be a hundred
    times the median token's, design.md) would dominate a mean.

    Args:
        h: ``[n, L, d]`` pooled hidden states.

    Returns:
        ``[L]`` float64.
    """
    x = _states("h", h).astype(np.float64)
    return np.median(np.linalg.norm(x, axis=2), axis=0)


def relative_norms(v: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """``‖v[l]‖ / residual[l]``: a vector's size relative to the residual stream at its layer.

    Args:
        v: ``[L, d]`` vectors.
        residual: ``[L]`` typical residual norms (:func:`residual_norms`).

    Returns:
        ``[L]`` float64 (NaN where the residual norm is zero).
    """
    x = _vectors("v", v)
    res = np.asarray(residual, dtype=np.float64)
    if res.shape != (x.shape[0],):
        raise DataError(f"residual: expected shape ({x.shape[0]},) to match v {x.shape}, got {res.shape}")
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(res > 0, norms / np.where(res > 0, res, 1.0), np.nan)




# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------


def tensor_name(kind: str, layer: int) -> str:
    """The name of one kind's vector at one layer in a vectors file: ``"{kind}.layer{layer}"``."""
    return f"{kind}.layer{layer}"


def save_vectors(
    path: str | os.PathLike,
    vectors: Mapping[str, np.ndarray],
    layers: Sequence[int],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write vector sets to ONE safetensors file, atomically.

    Args:
        path: the ``.safetensors`` file.
        vectors: ``{kind: [L, d]}``, e.g. ``"mean_diff_both"``, ``"pca"``, ``"contrastive"``; kind
            names use letters, digits, ``_`` and ``-``. Every set must have the same ``[L, d]``.
        layers: the ``L`` block indices the rows belong to (distinct non-negative integers).
        metadata: provenance (model ids, revisions, pooling, dataset fingerprint, sample count, …);
            stored with :func:`driftlib.core.artifacts.save_tensors`, with ``layers``, ``kinds`` (sorted)
            and ``hidden_size`` added.

    Tensors are float32 ``[d]`` named ``"{kind}.layer{l}"``.

    Raises:
        ConfigError: no vectors, a bad kind name or layer list, shapes that do not match, NaN/Inf,
            or metadata whose ``layers``/``kinds``/``hidden_size`` contradict the vectors.
    """
    if not vectors:
        raise ConfigError("save_vectors: no vectors given")
    layer_list = [int(layer) for layer in layers]
    if any(isinstance(layer, bool) for layer in layers) or any(layer < 0 for layer in layer_list):
        raise ConfigError(f"save_vectors: layers {list(layers)!r} must be non-negative block indices")
    if len(set(layer_list)) != len(layer_list) or not layer_list:
        raise ConfigError(f"save_vectors: layers {layer_list} must be distinct and non-empty")
    tensors: dict[str, np.ndarray] = {}
    hidden: int | None = None
    for kind, value in vectors.items():
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ConfigError(f"save_vectors: kind {kind!r} must be letters, digits, '_' or '-'")
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(layer_list):
            raise ConfigError(f"save_vectors: {kind} has shape {arr.shape}; expected [{len(layer_list)} layers, d]")
        if hidden is None:
            hidden = int(arr.shape[1])
        elif arr.shape[1] != hidden:
            raise ConfigError(f"save_vectors: {kind} has hidden size {arr.shape[1]}, the others {hidden}")
        if not np.isfinite(arr).all():
            raise ConfigError(f"save_vectors: {kind} holds NaN or Inf")
        for row, layer in enumerate(layer_list):
            tensors[tensor_name(kind, layer)] = np.ascontiguousarray(arr[row])
    meta = dict(metadata or {})
    derived = {"layers": layer_list, "kinds": sorted(vectors), "hidden_size": hidden}
    for key, value in derived.items():
        if key in meta:
            given = meta[key]
            if isinstance(given, str):
                given = decode_metadata_value(given)
            if given != value:
                raise ConfigError(f"save_vectors: metadata {key}={given!r} contradicts the vectors ({value!r})")
        meta[key] = value
    save_tensors(path, tensors, meta)


def load_vectors(
    path: str | os.PathLike,
    kind: str,
    *,
    expect: Mapping[str, Any] | None = None,
    producer: str | None = None,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read one kind of vector from a file written by :func:`save_vectors`.

    Args:
        path: the vectors file.
        kind: which vector set (``"mean_diff_both"``, ``"pca"``, …).
        expect: metadata the caller needs (checked by :func:`driftlib.core.artifacts.load_tensors`).
        producer: the rule that writes the file, named in errors.

    Returns:
        ``({layer: v [d] float32}, metadata)`` with the metadata values decoded (``layers`` is a
        list of ints, ``kinds`` a list of strings); ready for :func:`driftlib.steer.hooks.steer`.

    Raises:
        ArtifactError: a missing or unreadable file, mismatched ``expect``, or a file that lacks
            ``kind`` or one of its layers.
    """
    arrays, raw = load_tensors(path, expect=expect, producer=producer)
    metadata = {key: decode_metadata_value(value) for key, value in raw.items()}
    hint = f" Re-run the rule that writes it{f' ({producer})' if producer else ''}."
    layers = metadata.get("layers")
    kinds = metadata.get("kinds")
    if not isinstance(layers, list) or not all(isinstance(layer, int) for layer in layers):
        raise ArtifactError(f"{path}: metadata has no valid 'layers' list; not a vectors file.{hint}")
    if not isinstance(kinds, list) or kind not in kinds:
        raise ArtifactError(f"{path}: has no vectors of kind {kind!r} (kinds stored: {kinds}).{hint}")
    out: dict[int, np.ndarray] = {}
    for layer in layers:
        name = tensor_name(kind, layer)
        if name not in arrays:
            raise ArtifactError(f"{path}: {kind!r} lacks layer {layer} (tensor {name!r}); the file is incomplete.{hint}")
        vec = np.asarray(arrays[name], dtype=np.float32)
        if vec.ndim != 1:
            raise ArtifactError(f"{path}: tensor {name!r} has shape {vec.shape}; expected [d].{hint}")
        out[layer] = vec
    return out, metadata


@dataclass(frozen=True)
class VectorSet:
    """One kind of steering vector of a model, one vector per layer, as later phases steer with it.

    Args:
        kind: the vector kind (``mean_diff_both``, ``pca``, ``contrastive``, …).
        vectors: ``{layer: v [d] float32}``.
        metadata: the file's metadata, decoded (model, pairs, fingerprint, …).
        path: the file it was read from.
    """

    kind: str
    vectors: dict[int, np.ndarray]
    metadata: dict[str, Any]
    path: str

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    @property
    def stability(self) -> dict[int, float]:
        """``{layer: split-half stability}`` of this kind (phase 2's figure; empty for a file without it)."""
        per_kind = self.metadata.get("stability") or {}
        values = per_kind.get(self.kind) if isinstance(per_kind, dict) else None
        layers = self.metadata.get("layers") or []
        if not values or len(values) != len(layers):
            return {}
        return {int(layer): float(v) for layer, v in zip(layers, values)}

    def stability_at(self, blocks: Sequence[int]) -> float:
        """The lowest stability over ``blocks`` (the injection blocks); NaN where it is not known."""
        known = self.stability
        values = [known[b] for b in blocks if b in known]
        return float(min(values)) if values and len(values) == len(blocks) else float("nan")


def load_steering_vectors(
    path: str | os.PathLike, kind: str | None = None, *, producer: str | None = "compute_vectors"
) -> VectorSet:
    """The vectors later phases steer with: ``kind``, or the file's ``steering_kind`` when None."""
    if kind is None:
        _, raw = load_tensors(path, producer=producer)
        kind = decode_metadata_value(raw.get("steering_kind", "mean_diff_both"))
    vectors, metadata = load_vectors(path, kind, producer=producer)
    return VectorSet(kind=kind, vectors=vectors, metadata=metadata, path=str(path))