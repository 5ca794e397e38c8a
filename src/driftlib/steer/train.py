"""Steering vectors from models in one call (repeng's shape): run the models on the texts, read
the last real token's state at every requested block, and reduce (model code; the numbers are
:mod:`driftlib.steer.vectors`'). The workflow does the same in steps (``extract`` then
``vectors``), so that each step is a cached rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driftlib.core.errors import ConfigError, ModelError
from driftlib.steer.vectors import (
    VECTOR_METHODS,
    VectorMethod,
    contrastive,
    mean_difference,
    pca_direction,
)

__all__ = ["paired_last_token_states", "train_contrastive_vector", "train_steering_vector"]


def _num_blocks(model: object) -> int:
    from driftlib.model.layers import num_layers

    return num_layers(model)  # type: ignore[arg-type]


def paired_last_token_states(
    base_model: object,
    aligned_model: object,
    tokenizer: object,
    texts: Sequence[str],
    layers: Any,
    *,
    batch_size: int = 16,
    max_length: int | None = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Last-real-token block outputs of the same texts in an aligned model and its base model.

    Args:
        base_model, aligned_model: two models of one architecture (same depth and hidden size)
            sharing ``tokenizer``.
        texts: ``n`` preference texts.
        layers: block indices or relative depths (:func:`driftlib.core.layerspec.resolve_layers`).

    Returns:
        ``(h_aligned, h_base)``, each ``[n, L, d]`` float32, layers in resolved (sorted) order.

    Raises:
        ModelError: the two models differ in depth or hidden size.
    """
    from driftlib.model.forward import extract_hidden_states

    n_base, n_aligned = _num_blocks(base_model), _num_blocks(aligned_model)
    if n_base != n_aligned:
        raise ModelError(
            f"base model has {n_base} decoder blocks but the aligned model has {n_aligned}; a mean difference "
            "needs two models of one architecture (map across architectures instead)"
        )
    common = dict(pooling="last", batch_size=batch_size, max_length=max_length, truncation_side="left", progress=progress)
    h_aligned = extract_hidden_states(aligned_model, tokenizer, texts, layers, model_name="aligned model", **common)
    h_base = extract_hidden_states(base_model, tokenizer, texts, layers, model_name="base model", **common)
    if h_aligned.shape != h_base.shape:
        raise ModelError(
            f"aligned states {h_aligned.shape} and base states {h_base.shape} differ in shape; "
            "the two models must share their hidden size"
        )
    return h_aligned, h_base


def _aggregate(h_aligned: np.ndarray, h_base: np.ndarray, method: str) -> np.ndarray:
    if method == "mean_diff":
        return mean_difference(h_aligned, h_base)
    return pca_direction(h_aligned, h_base)


def train_steering_vector(
    base_model: object,
    aligned_model: object,
    tokenizer: object,
    texts: Sequence[str],
    layers: Any,
    *,
    method: VectorMethod = "mean_diff",
    batch_size: int = 16,
    max_length: int | None = 256,
    progress: bool = False,
) -> np.ndarray:
    """The D-STEER vector of an aligned model against its base model, in one call.

    Reads last-real-token block outputs of ``texts`` in both models
    (:func:`paired_last_token_states`) and aggregates the paired differences with
    :func:`mean_difference` (``method="mean_diff"``) or :func:`pca_direction` (``method="pca"``).

    Returns:
        ``[L, d]`` float32, rows in the resolved (sorted) order of ``layers``.

    Raises:
        ConfigError: an unknown ``method`` (or a bad extraction setting).
        ModelError: models of different depth or hidden size.
    """
    if method not in VECTOR_METHODS:
        raise ConfigError(f"method: {method!r} is not a vector method; use one of {', '.join(VECTOR_METHODS)}")
    h_aligned, h_base = paired_last_token_states(
        base_model, aligned_model, tokenizer, texts, layers,
        batch_size=batch_size, max_length=max_length, progress=progress,
    )
    return _aggregate(h_aligned, h_base, method)


def train_contrastive_vector(
    model: object,
    tokenizer: object,
    chosen: Sequence[str],
    rejected: Sequence[str],
    layers: Any,
    *,
    batch_size: int = 16,
    max_length: int | None = 256,
    progress: bool = False,
) -> np.ndarray:
    """The contrastive vector ``mean h(chosen) - mean h(rejected)`` of one model, at the last real token.

    Texts are truncated from the left, so chosen and rejected keep the ends where they differ.

    Returns:
        ``[L, d]`` float32, rows in the resolved (sorted) order of ``layers``.
    """
    from driftlib.model.forward import extract_hidden_states

    common = dict(pooling="last", batch_size=batch_size, max_length=max_length, truncation_side="left", progress=progress)
    h_chosen = extract_hidden_states(model, tokenizer, chosen, layers, **common)
    h_rejected = extract_hidden_states(model, tokenizer, rejected, layers, **common)
    return contrastive(h_chosen, h_rejected)
