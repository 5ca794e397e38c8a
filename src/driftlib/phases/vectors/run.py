"""Phase 2 runs: ``driftlib vectors`` (one model's steering vectors and their per-layer figures
from its pair states) and ``driftlib export-gguf`` (a vector as a llama.cpp control vector)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from driftlib.core.artifacts import decode_metadata_value, load_tensors, write_table
from driftlib.core.errors import ArtifactError, ConfigError, DataError

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.steer.spec import SteeringSpec

log = logging.getLogger(__name__)

__all__ = ["compute", "export_gguf", "load_pair_states"]


def load_pair_states(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Last-token states at every block, ``[n, L, d]`` for the chosen and the rejected texts, and
    their metadata (written by ``extract --text-column chosen rejected --all-layers --pooling last``)."""
    arrays, meta = load_tensors(path, expect={"layer_spec": "all", "pooling": "last"}, producer="extract_pairs")
    if "chosen" not in arrays or "rejected" not in arrays:
        raise ArtifactError(f"{path}: no 'chosen'/'rejected' tensors. Re-run the rule that writes it (extract_pairs).")
    return arrays["chosen"], arrays["rejected"], {k: decode_metadata_value(v) for k, v in meta.items() if k != "ids"}


def compute(*, aligned: str | Path, base: str | Path | None, name: str, method: str, texts: str, splits: int,
            seed: int, out: str | Path, stats: str | Path) -> None:
    """Every vector kind of one model (:func:`driftlib.phases.vectors.evaluate.compute_vectors`),
    saved with the kind later phases steer with, and the per-layer figures table."""
    from driftlib.phases.vectors.evaluate import compute_vectors, steering_kind
    from driftlib.steer.vectors import save_vectors

    ac, ar, meta = load_pair_states(aligned)
    bc = br = None
    base_meta: dict = {}
    if base:
        bc, br, base_meta = load_pair_states(base)
        if bc.shape != ac.shape:
            raise DataError(f"base states {bc.shape} and aligned states {ac.shape} differ in shape: "
                            "the base and aligned models must share an architecture")
    kinds, table = compute_vectors(ac, ar, bc, br, n_splits=splits, seed=seed)
    kind = steering_kind(method, texts, bc is not None)
    layers = list(range(ac.shape[1]))
    save_vectors(out, kinds, layers, metadata={
        "model": name, "steering_kind": kind, "n_pairs": int(ac.shape[0]),
        "dataset_fingerprint": meta.get("dataset_fingerprint", ""), "pooling": "last",
        "aligned_source": meta.get("model_source", ""), "model_type": meta.get("model_type", ""),
        "base_source": base_meta.get("model_source", "") if bc is not None else "",
        # split-half stability per kind and layer: it travels with the vectors into every phase that steers
        "stability": {k: [round(float(x), 6) for x in sub.sort_values("layer")["stability"]]
                      for k, sub in table.groupby("kind")}})
    table.insert(0, "steering_kind", table["kind"] == kind)
    table.insert(0, "model", name)
    write_table(table, stats, metadata={"model": name, "steering_kind": kind})
    log.info("wrote %d vector kinds x %d layers to %s (later phases use %s)", len(kinds), len(layers), out, kind)


def export_gguf(*, vectors: str | Path, kind: str | None, layers: Sequence[int] | None, scale: float,
                model_hint: str | None, steering: SteeringSpec, out: str | Path) -> None:
    """Write a vector as a llama.cpp control vector (``--control-vector``).

    llama.cpp adds a control vector to every token, so only an additive spec (the ``add`` operator
    without norm preservation) can be exported; any other is refused.
    """
    from driftlib.steer.gguf import export_control_vector
    from driftlib.steer.vectors import load_vectors

    if not steering.additive:
        raise ConfigError(f"export-gguf: llama.cpp control vectors are additive; the {steering.operator!r} operator"
                          f"{' with preserve_norm' if steering.preserve_norm else ''} cannot be exported")
    _, meta = load_tensors(vectors, producer="compute_vectors")
    kind = kind or decode_metadata_value(meta.get("steering_kind", "mean_diff_both"))
    found, vmeta = load_vectors(vectors, kind, producer="compute_vectors")
    layers = list(layers or [layer for layer in sorted(found) if layer > 0])
    hint = model_hint or str(vmeta.get("model_type", "")) or "llama"
    export_control_vector(out, {layer: found[layer] * scale for layer in layers}, model_hint=hint,
                          metadata={"kind": kind, "source": str(vectors)})
    log.info("wrote %s (%d layers, kind %s) for llama.cpp --control-vector", out, len(layers), kind)
