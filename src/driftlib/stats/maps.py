"""Maps between two models' hidden-state spaces, for moving steering vectors across architectures.

Hidden sizes differ between families, so a vector never crosses architectures without a map
(design.md, "Cross-architecture transfer"). A map is fitted on paired pooled representations of the
same anchor texts in both models: ``X [n, d_s]`` (source model, one layer) and ``Y [n, d_t]``
(target model, one layer), row ``i`` of both from text ``i``. Every map here is affine,

    ``y = (x - source_mean) @ weight + target_mean``   (row vectors, ``weight [d_s, d_t]``),

and a steering vector, being a difference of states, maps through the linear part alone:
``v_t = v_s @ weight`` (:meth:`LinearMap.map_vector`).

Methods (:data:`METHODS`):

- ``"ridge"`` (:func:`fit_ridge`): affine least squares with a ridge penalty, one alpha for all
  outputs chosen by efficient leave-one-out CV from a grid scaled to the data.
- ``"procrustes"`` (:func:`fit_procrustes`): an orthogonal map (times one global scale) between the
  top-``k`` principal subspaces of the two models.
- ``"relative"`` (:func:`fit_relative`): anchor ("relative") coordinates, i.e. each text described
  by its similarities to ``k`` anchor texts, decoded into the target space by ridge.

Controls and held-out fit: :func:`heldout_fit` (K-fold held-out R^2 and centred cosine) and
:func:`shuffled_control` (the same method fitted on a shuffled pairing; its R^2 should be near zero
or negative). Maps are stored with :func:`save_maps` in one safetensors file.

Maths functions take numpy arrays and compute in float64; maps are kept in float64 in memory and
stored as float32.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftlib.core.artifacts import decode_metadata_value, load_tensors, save_tensors
from driftlib.core.errors import ArtifactError, ConfigError, DataError

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("ridge", "procrustes", "relative")

#: the default ridge grid, relative to the mean non-zero eigenvalue of the centred Gram matrix
DEFAULT_RELATIVE_ALPHAS: np.ndarray = np.logspace(-6, 4, 21)

#: metadata key of a maps file that describes the stored maps (name, method, info, shapes)
_MAPS_KEY = "maps"
_PRODUCER = "fit_maps"
_TENSOR_PARTS = ("weight", "source_mean", "target_mean")


# ---------------------------------------------------------------------------------------------
# the map
# ---------------------------------------------------------------------------------------------


def _frozen_array(name: str, value: object, ndim: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)  # a copy, so the map owns its arrays
    if arr.ndim != ndim:
        raise DataError(f"LinearMap.{name}: expected a {ndim}-D array, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class LinearMap:
    """An affine map ``y = (x - source_mean) @ weight + target_mean`` (row vectors).

    Attributes:
        method: how it was fitted (one of :data:`METHODS`).
        weight: ``[d_s, d_t]``, the linear part.
        source_mean: ``[d_s]``, the mean source state of the fit set.
        target_mean: ``[d_t]``, the mean target state of the fit set.
        info: method details, JSON-serialisable (chosen alpha, ``n_components``, scale, ...).

    Arrays are float64 and read-only.
    """

    method: str
    weight: np.ndarray
    source_mean: np.ndarray
    target_mean: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        weight = _frozen_array("weight", self.weight, 2)
        source_mean = _frozen_array("source_mean", self.source_mean, 1)
        target_mean = _frozen_array("target_mean", self.target_mean, 1)
        if source_mean.shape[0] != weight.shape[0] or target_mean.shape[0] != weight.shape[1]:
            raise DataError(
                f"LinearMap: weight {weight.shape} does not match source_mean {source_mean.shape} "
                f"and target_mean {target_mean.shape}; expected [d_s, d_t], [d_s], [d_t]"
            )
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "source_mean", source_mean)
        object.__setattr__(self, "target_mean", target_mean)
        object.__setattr__(self, "info", dict(self.info))

    @property
    def source_dim(self) -> int:
        """``d_s``."""
        return int(self.weight.shape[0])

    @property
    def target_dim(self) -> int:
        """``d_t``."""
        return int(self.weight.shape[1])

    def _rows(self, name: str, value: object) -> np.ndarray:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.source_dim:
            raise DataError(
                f"LinearMap.{name}: expected [{self.source_dim}] or [n, {self.source_dim}] "
                f"(source width d_s={self.source_dim}), got shape {arr.shape}"
            )
        return arr

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map source states to target states.

        Args:
            X: ``[n, d_s]`` (or one state ``[d_s]``).

        Returns:
            ``[n, d_t]`` (or ``[d_t]``) float64: ``(X - source_mean) @ weight + target_mean``.
        """
        x = self._rows("transform", X)
        return (x - self.source_mean) @ self.weight + self.target_mean

    def map_vector(self, v: np.ndarray) -> np.ndarray:
        """Map a steering vector (a difference of states): ``v @ weight``, with no bias.

        Args:
            v: ``[d_s]`` or ``[k, d_s]``.

        Returns:
            ``[d_t]`` or ``[k, d_t]`` float64. For any ``x``,
            ``map_vector(v) == transform(x + v) - transform(x)``.
        """
        return self._rows("map_vector", v) @ self.weight


# ---------------------------------------------------------------------------------------------
# input checks and shared helpers
# ---------------------------------------------------------------------------------------------


def _pair(X: object, Y: object, *, min_rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(Y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise DataError(
            f"maps: X and Y must be 2-D [n, d_s] and [n, d_t], got shapes {x.shape} and {y.shape}"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"maps: X {x.shape} and Y {y.shape} must have the same number of rows "
            "(row i of both must come from the same text)"
        )
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise DataError(f"maps: X {x.shape} and Y {y.shape} need at least one feature each")
    if x.shape[0] < min_rows:
        raise DataError(
            f"maps: need at least {min_rows} paired rows to fit a map, got X {x.shape}, Y {y.shape}"
        )
    for name, arr in (("X", x), ("Y", y)):
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise DataError(
                f"maps: {name} {arr.shape} holds NaN or Inf (first at row {bad[0]}, column {bad[1]})"
            )
    return x, y


def _alpha_scale(F: np.ndarray) -> float:
    """The mean non-zero eigenvalue of ``Fc.T @ Fc`` (``Fc`` = ``F`` centred), bounded below."""
    fc = F - F.mean(axis=0)
    rank_bound = max(1, min(F.shape[0] - 1, F.shape[1]))
    scale = float(np.sum(fc * fc)) / rank_bound
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _check_alphas(alphas: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all() or (arr <= 0).any():
        raise ConfigError(f"maps: alphas must be a non-empty list of positive numbers, got {alphas!r}")
    return arr


def _ridge_cv(F: np.ndarray, Y: np.ndarray, alphas: Sequence[float] | np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Ridge regression ``Y ~ F @ coef + intercept`` with alpha chosen by leave-one-out CV.

    Args:
        F: ``[n, p]`` features.
        Y: ``[n, d_t]`` targets.
        alphas: absolute penalties to try; ``None``: :data:`DEFAULT_RELATIVE_ALPHAS` times the mean
            non-zero eigenvalue of the centred Gram matrix ``Fc.T @ Fc`` (so the grid follows the
            overall scale of the activations).

    Returns:
        ``(coef [p, d_t], intercept [d_t], info)``; one alpha for all outputs.
    """
    from sklearn.linear_model import RidgeCV

    scale = _alpha_scale(F)
    grid = scale * DEFAULT_RELATIVE_ALPHAS if alphas is None else _check_alphas(alphas)
    model = RidgeCV(alphas=grid, fit_intercept=True, alpha_per_target=False)
    model.fit(F, Y)
    alpha = float(model.alpha_)
    coef = np.asarray(model.coef_, dtype=np.float64).reshape(Y.shape[1], F.shape[1]).T
    intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(Y.shape[1])
    at_edge = bool(grid.size > 1 and (alpha <= grid.min() or alpha >= grid.max()))
    if at_edge:
        logger.info("maps: ridge alpha %.3g is at the edge of the grid [%.3g, %.3g]",
                    alpha, grid.min(), grid.max())
    info = {
        "alpha": alpha,
        "alpha_relative": alpha / scale,
        "alpha_grid_range": [float(grid.min()), float(grid.max())],
        "alpha_grid_size": int(grid.size),
        "alpha_at_grid_edge": at_edge,
    }
    return coef, intercept, info


def _principal_axes(centred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` principal axes ``[d, k]`` of centred rows and their explained-variance share."""
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(s**2))
    share = np.cumsum(s**2) / total if total > 0 else np.zeros_like(s)
    return vt[:k].T, share


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------


def fit_ridge(X: np.ndarray, Y: np.ndarray, *,
              alphas: Sequence[float] | np.ndarray | None = None) -> LinearMap:
    """Affine least squares with a ridge penalty: ``Y ~ (X - mean X) @ W + mean Y``.

    Args:
        X: ``[n, d_s]`` source states; row ``i`` from text ``i``.
        Y: ``[n, d_t]`` target states of the same texts.
        alphas: absolute ridge penalties to choose from. ``None`` (default): ``logspace(-6, 4, 21)``
            times the mean non-zero eigenvalue of ``Xc.T @ Xc`` (``trace / min(n-1, d_s)``), so the
            grid follows the activations' overall scale. One alpha for all outputs, chosen by
            efficient leave-one-out CV (``sklearn.linear_model.RidgeCV``).

    Returns:
        A :class:`LinearMap` with ``weight [d_s, d_t]``; ``info`` holds ``alpha``,
        ``alpha_relative`` (alpha over the grid's scale), the grid's range and size and
        ``alpha_at_grid_edge``.

    Raises:
        DataError: bad shapes, NaN/Inf or fewer than 3 rows.
        ConfigError: non-positive alphas.
    """
    x, y = _pair(X, Y)
    coef, intercept, info = _ridge_cv(x, y, alphas)
    source_mean = x.mean(axis=0)
    target_mean = source_mean @ coef + intercept  # prediction at the source mean (= mean of Y)
    info.update(n=int(x.shape[0]))
    return LinearMap("ridge", coef, source_mean, target_mean, info)


def fit_procrustes(X: np.ndarray, Y: np.ndarray, *, n_components: int | None = None,
                   scale: bool = True) -> LinearMap:
    """Orthogonal Procrustes between the two models' top principal subspaces.

    Both sides are centred and projected onto their own top-``k`` principal axes
    (``P_s [d_s, k]``, ``P_t [d_t, k]``); the orthogonal ``R [k, k]`` minimising
    ``||Xc P_s R - Yc P_t||_F`` is found with ``scipy.linalg.orthogonal_procrustes`` and, if
    ``scale``, one global factor ``s = trace(R.T (Xc P_s).T (Yc P_t)) / ||Xc P_s||_F^2``. The map is
    ``weight = P_s @ (s R) @ P_t.T`` (``[d_s, k][k, k][k, d_t]``), so ``d_s != d_t`` is fine.

    Args:
        X: ``[n, d_s]`` source states.
        Y: ``[n, d_t]`` target states of the same texts.
        n_components: ``k``; default and cap ``min(d_s, d_t, n - 1)``.
        scale: fit the global scale (``False``: ``s = 1``, norms are not matched between models).

    Returns:
        A :class:`LinearMap`; ``info`` holds ``n_components``, ``scale``, ``fit_scale`` and the
        variance shares the two subspaces explain.
    """
    from scipy.linalg import orthogonal_procrustes

    x, y = _pair(X, Y)
    n, d_s = x.shape
    d_t = y.shape[1]
    cap = min(d_s, d_t, n - 1)
    if n_components is None:
        k = cap
    else:
        if isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1:
            raise ConfigError(f"fit_procrustes: n_components must be a positive integer, got {n_components!r}")
        k = int(n_components)
        if k > cap:
            logger.info("fit_procrustes: n_components %d capped at min(d_s, d_t, n-1) = %d", k, cap)
            k = cap
    source_mean, target_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - source_mean, y - target_mean
    p_s, share_s = _principal_axes(xc, k)
    p_t, share_t = _principal_axes(yc, k)
    xs, ys = xc @ p_s, yc @ p_t  # [n, k] each
    rotation, _ = orthogonal_procrustes(xs, ys)
    denom = float(np.sum(xs * xs))
    s = float(np.sum((xs @ rotation) * ys)) / denom if (scale and denom > 0) else 1.0
    weight = p_s @ (s * rotation) @ p_t.T
    info = {
        "n_components": int(k),
        "scale": s,
        "fit_scale": bool(scale),
        "source_variance_explained": float(share_s[k - 1]) if share_s.size >= k else 1.0,
        "target_variance_explained": float(share_t[k - 1]) if share_t.size >= k else 1.0,
        "n": int(n),
    }
    return LinearMap("procrustes", weight, source_mean, target_mean, info)


def fit_relative(X: np.ndarray, Y: np.ndarray, *, n_anchors: int = 64,
                 alphas: Sequence[float] | np.ndarray | None = None, anchor_seed: int = 0) -> LinearMap:
    """Anchor (relative) coordinates decoded into the target space by ridge.

    ``k`` anchor texts are drawn at random (seeded) from the fit rows. A text is described by its
    similarities to them, ``r(x) = z(x) @ z(A).T / sqrt(d_s)`` (``[k]``), where ``z`` standardises
    each feature with the fit set's mean and std (zero-variance features get std 1). These
    coordinates do not depend on the source model's basis; a ridge regression (alpha by leave-one-out
    CV, grid as in :func:`fit_ridge` but scaled to ``r``) decodes ``r -> y``.

    Unlike Moschella et al. (2023) the similarities are not cosine-normalised per text: dropping the
    normalisation keeps ``r`` linear in ``x``, so the whole map composes into one
    ``weight = diag(1/std) @ z(A).T / sqrt(d_s) @ W_r`` (``[d_s, k][k, d_t]``) and a steering vector
    maps without a bias.

    Args:
        X: ``[n, d_s]`` source states.
        Y: ``[n, d_t]`` target states of the same texts.
        n_anchors: ``k``, capped at ``n``.
        alphas: absolute ridge penalties for the decoder; ``None``: the scale-aware default grid.
        anchor_seed: the anchor draw.

    Returns:
        A :class:`LinearMap`; ``info`` holds ``n_anchors``, ``anchor_rows`` (indices into the fit
        rows), ``anchor_seed`` and the ridge details.
    """
    x, y = _pair(X, Y)
    n, d_s = x.shape
    if isinstance(n_anchors, bool) or int(n_anchors) != n_anchors or n_anchors < 1:
        raise ConfigError(f"fit_relative: n_anchors must be a positive integer, got {n_anchors!r}")
    k = min(int(n_anchors), n)
    anchors = np.sort(np.random.default_rng(anchor_seed).choice(n, size=k, replace=False))
    source_mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z_anchors = (x[anchors] - source_mean) / std  # [k, d_s]
    encoder = (z_anchors / std).T / np.sqrt(d_s)  # [d_s, k]: r(x) = (x - mean) @ encoder
    r = (x - source_mean) @ encoder  # [n, k]
    coef, intercept, info = _ridge_cv(r, y, alphas)
    # r(source_mean) = 0, so the prediction there is the intercept
    info.update(n_anchors=int(k), anchor_rows=[int(i) for i in anchors], anchor_seed=int(anchor_seed), n=int(n))
    return LinearMap("relative", encoder @ coef, source_mean, intercept, info)


_FITTERS: dict[str, Callable[..., LinearMap]] = {
    "ridge": fit_ridge,
    "procrustes": fit_procrustes,
    "relative": fit_relative,
}


def _fitter(method: str, options: Mapping[str, Any]) -> Callable[..., LinearMap]:
    if method not in _FITTERS:
        raise ConfigError(f"maps: unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    fit = _FITTERS[method]
    allowed = [p.name for p in inspect.signature(fit).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"maps: method {method!r} takes options {allowed}, not {unknown}")
    return fit


def fit_map(method: str, X: np.ndarray, Y: np.ndarray, **options: Any) -> LinearMap:
    """Fit a map by name (``"ridge"``, ``"procrustes"`` or ``"relative"``) with its options.

    Raises:
        ConfigError: an unknown method (the message lists the valid ones) or option.
    """
    return _fitter(method, options)(X, Y, **options)


# ---------------------------------------------------------------------------------------------
# held-out fit and controls
# ---------------------------------------------------------------------------------------------


def heldout_fit(method: str, X: np.ndarray, Y: np.ndarray, *, n_folds: int = 5, seed: int = 0,
                **options: Any) -> dict:
    """K-fold held-out fit of a map (``sklearn.model_selection.KFold``, shuffled, seeded).

    Each fold is predicted by a map fitted on the other ``K - 1`` folds.

    Returns:
        ``{"r2": pooled held-out R^2 = 1 - sum ||y - yhat||^2 / sum ||y - mean_train(y)||^2 over all
        held-out rows, "cosine": mean over held-out rows of cos(yhat - mean_train(y),
        y - mean_train(y)) (centred: raw activations share a large mean, so an uncentred cosine is
        near 1 for any map), "r2_folds": [K per-fold R^2], "n": n, "n_folds": K,
        "method": method}``.

    Raises:
        DataError: bad inputs, fewer rows than folds, or training folds under 3 rows.
        ConfigError: an unknown method or option, or ``n_folds < 2``.
    """
    from sklearn.model_selection import KFold

    _fitter(method, options)
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
        raise ConfigError(f"heldout_fit: n_folds must be an integer >= 2, got {n_folds!r}")
    n_folds = int(n_folds)
    x, y = _pair(X, Y, min_rows=max(3, n_folds))
    n = x.shape[0]
    if n - -(-n // n_folds) < 3:
        raise DataError(f"heldout_fit: {n} rows in {n_folds} folds leave under 3 training rows per fold")
    sse_total = sst_total = 0.0
    cosines: list[np.ndarray] = []
    r2_folds: list[float] = []
    for train, test in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x):
        fitted = fit_map(method, x[train], y[train], **options)
        centre = y[train].mean(axis=0)
        pred = fitted.transform(x[test]) - centre
        true = y[test] - centre
        sse = float(np.sum((true - pred) ** 2))
        sst = float(np.sum(true**2))
        sse_total += sse
        sst_total += sst
        r2_folds.append(1.0 - sse / sst if sst > 0 else float("nan"))
        norms = np.linalg.norm(pred, axis=1) * np.linalg.norm(true, axis=1)
        dots = np.sum(pred * true, axis=1)
        cosines.append(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))
    return {
        "r2": 1.0 - sse_total / sst_total if sst_total > 0 else float("nan"),
        "cosine": float(np.concatenate(cosines).mean()),
        "r2_folds": r2_folds,
        "n": int(n),
        "n_folds": n_folds,
        "method": method,
    }


def shuffled_control(method: str, X: np.ndarray, Y: np.ndarray, *, seed: int = 0, n_folds: int = 5,
                     **options: Any) -> tuple[LinearMap, dict]:
    """The same method fitted on a shuffled pairing ``(X, Y[perm])`` (``perm`` seeded).

    Returns:
        ``(map, heldout)``: the map fitted on all shuffled rows (``info["control"] == "shuffled"``)
        and :func:`heldout_fit` on the shuffled pairing. Its R^2 should be near zero or negative;
        a map that does no better than this has learnt nothing about the pairing.
    """
    _fitter(method, options)
    x, y = _pair(X, Y)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    y_shuffled = y[perm]
    fitted = fit_map(method, x, y_shuffled, **options)
    fitted = dataclasses.replace(fitted, info={**fitted.info, "control": "shuffled", "shuffle_seed": int(seed)})
    return fitted, heldout_fit(method, x, y_shuffled, n_folds=n_folds, seed=seed, **options)


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------


def save_maps(path: str | os.PathLike, maps: Mapping[str, LinearMap],
              metadata: Mapping[str, Any] | None = None) -> None:
    """Write maps to ONE safetensors file, atomically.

    Args:
        path: the ``.safetensors`` file.
        maps: ``{name: LinearMap}``, names free-form (e.g. ``"ridge/L3->L2"``).
        metadata: provenance (model ids, layers, pooling, dataset fingerprint, ...); the key
            ``"maps"`` is reserved.

    Tensors are float32, named ``"{name}.weight"`` ``[d_s, d_t]``, ``"{name}.source_mean"``
    ``[d_s]`` and ``"{name}.target_mean"`` ``[d_t]``; each map's name, method, info and shapes are
    stored as a JSON list under the metadata key ``"maps"``.

    Raises:
        ConfigError: no maps, a bad name, a value that is not a LinearMap, NaN/Inf, info that is not
            JSON-serialisable, or metadata that uses the reserved key.
    """
    if not maps:
        raise ConfigError("save_maps: no maps given")
    meta = dict(metadata or {})
    if _MAPS_KEY in meta:
        raise ConfigError(f"save_maps: metadata key {_MAPS_KEY!r} is reserved for the map descriptions")
    tensors: dict[str, np.ndarray] = {}
    entries: list[dict[str, Any]] = []
    for name, linear_map in maps.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"save_maps: map name {name!r} must be a non-empty string")
        if not isinstance(linear_map, LinearMap):
            raise ConfigError(f"save_maps: {name!r} is a {type(linear_map).__name__}, not a LinearMap")
        for part in _TENSOR_PARTS:
            arr = getattr(linear_map, part)
            if not np.isfinite(arr).all():
                raise ConfigError(f"save_maps: {name!r} {part} holds NaN or Inf")
            tensors[f"{name}.{part}"] = np.ascontiguousarray(arr, dtype=np.float32)
        try:
            json.dumps(linear_map.info)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"save_maps: info of {name!r} is not JSON-serialisable ({exc})") from exc
        entries.append({
            "name": name,
            "method": linear_map.method,
            "info": linear_map.info,
            "source_dim": linear_map.source_dim,
            "target_dim": linear_map.target_dim,
        })
    meta[_MAPS_KEY] = entries
    save_tensors(path, tensors, meta)


def load_maps(path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None,
              producer: str | None = None) -> dict[str, LinearMap]:
    """Read the maps of a file written by :func:`save_maps`.

    Args:
        path: the maps file.
        expect: metadata the caller needs (checked by :func:`driftlib.core.artifacts.load_tensors`).
        producer: the rule that writes the file, named in errors (default ``fit_maps``).

    Returns:
        ``{name: LinearMap}`` in the order they were saved, arrays float64.

    Raises:
        ArtifactError: a missing, truncated or unreadable file, mismatched ``expect``, no map
            descriptions, or a map whose tensors are missing or have the wrong shapes.
    """
    rule = producer or _PRODUCER
    arrays, metadata = load_tensors(path, expect=expect, producer=rule)
    hint = f" Re-run the rule that writes it ({rule})."
    entries = decode_metadata_value(metadata.get(_MAPS_KEY, "")) if _MAPS_KEY in metadata else None
    if not isinstance(entries, list) or not entries:
        raise ArtifactError(f"{path}: no map descriptions under metadata '{_MAPS_KEY}'.{hint}")
    out: dict[str, LinearMap] = {}
    for entry in entries:
        try:
            name, method, info = entry["name"], entry["method"], entry["info"]
            d_s, d_t = int(entry["source_dim"]), int(entry["target_dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: malformed map description {entry!r}.{hint}") from exc
        expected = {"weight": (d_s, d_t), "source_mean": (d_s,), "target_mean": (d_t,)}
        parts: dict[str, np.ndarray] = {}
        for part, shape in expected.items():
            key = f"{name}.{part}"
            if key not in arrays:
                raise ArtifactError(f"{path}: map {name!r} has no tensor '{key}'.{hint}")
            arr = arrays[key]
            if tuple(arr.shape) != shape:
                raise ArtifactError(
                    f"{path}: tensor '{key}' has shape {tuple(arr.shape)}, expected {shape}.{hint}"
                )
            if not np.isfinite(arr).all():
                raise ArtifactError(f"{path}: tensor '{key}' holds NaN or Inf.{hint}")
            parts[part] = arr
        out[name] = LinearMap(method, parts["weight"], parts["source_mean"], parts["target_mean"],
                              dict(info) if isinstance(info, dict) else {})
    return out
