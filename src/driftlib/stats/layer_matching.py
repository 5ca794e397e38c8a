"""Matching the decoder blocks of two models: by relative depth or by linear CKA.

Numerical code only (numpy in, numpy out; no torch, no I/O). A cross-architecture map is fitted
between one source block and one target block; this module says which source block goes with each
target block.

* **Depth.** Target block ``t`` of ``n_target`` sits at relative depth ``f = (t + 1) / n_target``;
  its partner is the source block that :func:`driftlib.core.layerspec.resolve_layers` gives for the float
  depth ``f``: ``max(0, round(f * n_source) - 1)`` (Python's round, half to even). The last block
  always maps to the last block.
* **CKA.** Linear centred kernel alignment (Kornblith et al., 2019) between the pooled states of the
  same ``n`` texts in both models; each target block takes the source block of highest CKA.

Linear CKA of ``X [n, d1]`` and ``Y [n, d2]`` with column-centred ``Xc, Yc``::

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
        = <K, L>_F / (||K||_F ||L||_F),   K = Xc Xc^T, L = Yc Yc^T   (n x n Gram form)

It lies in [0, 1], equals 1 for ``CKA(X, X)``, and is invariant to orthogonal transforms and
isotropic scaling of either side (not to general invertible linear maps).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from driftlib.core.errors import ConfigError, DataError

__all__ = ["linear_cka", "cka_matrix", "match_by_depth", "match_by_cka", "match_layers", "METHODS"]

#: layer-matching methods understood by :func:`match_layers`
METHODS = ("depth", "cka")

#: a centred array whose norm is below this fraction of its (max-scaled) raw norm has no variance
_DEGENERATE_RTOL = 1e-12


# --------------------------------------------------------------------------------------------
# input checks


def _as_numeric(A: Any, ndim: int, name: str, shape_doc: str) -> np.ndarray:
    """``A`` as an array of ``ndim`` dimensions with a numeric dtype and finite values, else DataError."""
    A = np.asarray(A)
    if A.ndim != ndim:
        raise DataError(f"{name} must be a {ndim}-D array {shape_doc}; got shape {A.shape}")
    if not (np.issubdtype(A.dtype, np.floating) or np.issubdtype(A.dtype, np.integer)
            or A.dtype == np.bool_):
        raise DataError(f"{name} must be numeric; got dtype {A.dtype}")
    if A.shape[0] < 2:
        raise DataError(f"{name} needs at least 2 rows (texts) for a centred similarity; got {A.shape[0]}")
    if any(s == 0 for s in A.shape[1:]):
        raise DataError(f"{name} has an empty dimension: shape {A.shape}")
    if np.issubdtype(A.dtype, np.floating) and not np.isfinite(A).all():
        raise DataError(f"{name} holds NaN or Inf values")
    return A


def _centred_unit(X: np.ndarray, what: str) -> np.ndarray:
    """``X [n, d]`` as float64, columns centred, scaled to unit Frobenius norm (a new array).

    CKA is invariant to isotropic scaling, so the scaling changes nothing but keeps the products in
    range. Raises DataError when ``X`` has (numerically) no variance over the rows.
    """
    Z = np.array(X, dtype=np.float64)  # always a copy
    peak = float(np.max(np.abs(Z)))
    if peak == 0.0:
        raise DataError(f"{what} is all zeros: it has no variance over the rows, so its CKA is undefined")
    Z /= peak
    raw = float(np.linalg.norm(Z))
    Z -= Z.mean(axis=0)
    norm = float(np.linalg.norm(Z))
    if norm <= _DEGENERATE_RTOL * raw:
        raise DataError(f"{what} has no variance over the rows (every row is the same), "
                        "so its CKA is undefined")
    Z /= norm
    return Z


def _check_count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{key} must be a positive integer (a number of decoder blocks); got {value!r}")
    return int(value)


def _target_list(target_layers: Any, n_target: int, key: str = "target_layers") -> list[int]:
    """Target block indices as a list of ints in ``[0, n_target)``, order kept; else ConfigError."""
    if isinstance(target_layers, (str, bytes)):
        raise ConfigError(f"{key}: {target_layers!r} is not a block index")
    if isinstance(target_layers, numbers.Number) or not hasattr(target_layers, "__iter__"):
        values: list[Any] = [target_layers]
    else:
        values = target_layers.ravel().tolist() if isinstance(target_layers, np.ndarray) else list(target_layers)
    if not values:
        raise ConfigError(f"{key}: no target blocks given")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"{key}: {v!r} is not an integer block index (resolve relative depths with "
                              "driftlib.core.layerspec.resolve_layers first)")
        if not 0 <= int(v) < n_target:
            raise ConfigError(f"{key}: block {int(v)} is out of range; the target model has {n_target} "
                              f"decoder blocks (valid: 0..{n_target - 1})")
        out.append(int(v))
    return out


# --------------------------------------------------------------------------------------------
# CKA


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA between two representations of the same ``n`` texts.

    Parameters
    ----------
    X : array [n, d1]
    Y : array [n, d2]
        Row ``i`` of both is text ``i``. Computed in float64 after centring the columns.

    Returns
    -------
    float in [0, 1]
        ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``; evaluated through the ``n x n`` Gram
        matrices when that is cheaper (``n`` small against the widths), else in feature space.

    Raises
    ------
    DataError
        Not 2-D, different row counts, fewer than 2 rows, non-finite values, or a side without
        variance over the rows.
    """
    X = _as_numeric(X, 2, "X", "[n, d1]")
    Y = _as_numeric(Y, 2, "Y", "[n, d2]")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X and Y must hold the same texts (rows); got {X.shape[0]} and {Y.shape[0]} rows")
    n, d1 = X.shape
    d2 = Y.shape[1]
    Xc = _centred_unit(X, "X")
    Yc = _centred_unit(Y, "Y")
    gram_cost = n * n * (d1 + d2 + 1)
    feature_cost = n * (d1 * d2 + d1 * d1 + d2 * d2)
    if gram_cost < feature_cost:
        K = Xc @ Xc.T
        L = Yc @ Yc.T
        num = float(np.vdot(K, L))
        den = float(np.linalg.norm(K) * np.linalg.norm(L))
    else:
        num = float(np.sum((Yc.T @ Xc) ** 2))
        den = float(np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    return float(np.clip(num / den, 0.0, 1.0))


def _unit_gram(H: np.ndarray, layer: int, name: str) -> np.ndarray:
    """Centred Gram matrix of ``H[:, layer, :]``, unit Frobenius norm, flattened: ``[n * n]``."""
    Z = _centred_unit(H[:, layer, :], f"{name} layer {layer}")
    G = Z @ Z.T
    G /= np.linalg.norm(G)
    return G.ravel()


def cka_matrix(Hs: Any, Ht: Any) -> np.ndarray:
    """Linear CKA between every source block and every target block.

    Parameters
    ----------
    Hs : array [n, Ls, ds]
        Pooled states of ``n`` texts at each of the source model's ``Ls`` blocks.
    Ht : array [n, Lt, dt]
        Pooled states of the same ``n`` texts (same row order) at the target's ``Lt`` blocks.

    Returns
    -------
    ndarray [Ls, Lt], float64
        ``C[i, j] = linear_cka(Hs[:, i], Ht[:, j])``, in [0, 1].

    Notes
    -----
    Each block's centred ``n x n`` Gram matrix (scaled to unit norm) is computed once, so the cost
    is ``Ls + Lt`` Gram products plus one ``[Ls, n^2] x [n^2]`` product per block of the other side;
    the Grams of the side with fewer blocks are kept (``min(Ls, Lt) n^2`` floats: 0.7 MB per block
    at ``n = 300``). Meant for a few hundred to a few thousand texts.

    Raises
    ------
    DataError
        Not 3-D, different row counts, fewer than 2 rows, non-finite values, or a block without
        variance over the rows (the message names the model and block).
    """
    Hs = _as_numeric(Hs, 3, "Hs", "[n, Ls, ds]")
    Ht = _as_numeric(Ht, 3, "Ht", "[n, Lt, dt]")
    if Hs.shape[0] != Ht.shape[0]:
        raise DataError(f"Hs and Ht must hold the same texts (rows); got {Hs.shape[0]} and {Ht.shape[0]} rows")
    Ls, Lt = Hs.shape[1], Ht.shape[1]
    keep_source = Ls <= Lt
    kept, kept_name, other, other_name = (Hs, "source", Ht, "target") if keep_source else (Ht, "target", Hs, "source")
    stored = np.stack([_unit_gram(kept, i, kept_name) for i in range(kept.shape[1])])  # [L_kept, n*n]
    cols = np.empty((kept.shape[1], other.shape[1]))
    for j in range(other.shape[1]):
        cols[:, j] = stored @ _unit_gram(other, j, other_name)
    C = cols if keep_source else cols.T
    return np.clip(C, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# matching


def match_by_depth(target_layers: int | Sequence[int], n_source: int, n_target: int) -> list[int]:
    """Source block at the same relative depth as each target block.

    Parameters
    ----------
    target_layers : int or sequence of int
        0-based target block indices in ``[0, n_target)``; the order is kept.
    n_source, n_target : int
        Decoder block counts of the source and target model.

    Returns
    -------
    list[int], one per target block
        ``max(0, round((t + 1) / n_target * n_source) - 1)``: what
        :func:`driftlib.core.layerspec.resolve_layers` gives for the depth ``(t + 1) / n_target`` on the
        source model (same float arithmetic, Python's round). The last block maps to the last.

    Raises
    ------
    ConfigError
        A count that is not a positive integer, or a target index that is not an integer in range.
    """
    n_source = _check_count(n_source, "n_source")
    n_target = _check_count(n_target, "n_target")
    out = []
    for t in _target_list(target_layers, n_target):
        frac = float((t + 1) / n_target)
        out.append(max(0, round(frac * n_source) - 1))
    return out


def match_by_cka(cka: Any, target_layers: int | Sequence[int]) -> list[int]:
    """Source block of highest CKA for each target block.

    Parameters
    ----------
    cka : array [Ls, Lt]
        Similarities, e.g. from :func:`cka_matrix`.
    target_layers : int or sequence of int
        Target block indices in ``[0, Lt)``; the order is kept.

    Returns
    -------
    list[int]
        ``argmax_i cka[i, t]`` for each ``t``; ties go to the shallower (lower) source block.

    Raises
    ------
    DataError
        ``cka`` not 2-D, empty, or holding NaN/Inf.
    ConfigError
        A target index that is not an integer in ``[0, Lt)``.
    """
    C = np.asarray(cka)
    if C.ndim != 2 or 0 in C.shape:
        raise DataError(f"cka must be a non-empty 2-D array [n_source_blocks, n_target_blocks]; got shape {C.shape}")
    if not (np.issubdtype(C.dtype, np.floating) or np.issubdtype(C.dtype, np.integer)):
        raise DataError(f"cka must be numeric; got dtype {C.dtype}")
    if not np.isfinite(C).all():
        raise DataError("cka holds NaN or Inf values")
    targets = _target_list(target_layers, C.shape[1])
    return [int(np.argmax(C[:, t])) for t in targets]  # argmax returns the first (shallowest) maximum


def match_layers(method: str, target_layers: int | Sequence[int], *, n_source: int, n_target: int,
                 cka: Any = None) -> list[int]:
    """Source block for each target block, by ``method``.

    Parameters
    ----------
    method : {"depth", "cka"}
        ``"depth"``: :func:`match_by_depth`; ``"cka"``: :func:`match_by_cka` on ``cka``.
    target_layers : int or sequence of int
        Target block indices in ``[0, n_target)``.
    n_source, n_target : int
        Decoder block counts of both models.
    cka : array [n_source, n_target], optional
        Required for ``"cka"`` (ignored for ``"depth"``).

    Returns
    -------
    list[int], one source block per target block (order kept)

    Raises
    ------
    ConfigError
        Unknown method, ``"cka"`` without a matrix, bad counts or indices.
    DataError
        A CKA matrix whose shape is not ``(n_source, n_target)``.
    """
    if method not in METHODS:
        raise ConfigError(f"layer matching method must be one of {METHODS}; got {method!r}")
    n_source = _check_count(n_source, "n_source")
    n_target = _check_count(n_target, "n_target")
    if method == "depth":
        return match_by_depth(target_layers, n_source, n_target)
    if cka is None:
        raise ConfigError("layer matching method 'cka' needs the CKA matrix (cka=...); compute it with "
                          "driftlib.stats.layer_matching.cka_matrix, or use method 'depth'")
    C = np.asarray(cka)
    if C.shape != (n_source, n_target):
        raise DataError(f"cka must have shape (n_source, n_target) = ({n_source}, {n_target}); got {C.shape}")
    return match_by_cka(C, target_layers)
