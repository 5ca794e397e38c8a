"""Steered runs over files, shared by every phase that steers (3, 4, 4.5 and 5's agents).

- :func:`sweep_file`: hidden states of a prompt table under several steering specs over a lambda
  grid (:func:`driftlib.steer.sweep.sweep_hidden_states` once per spec), with the sweep's metadata;
- :func:`cost_rows`: the capability cost of each spec (next-token KL, greedy repetition) along
  the grid;
- :class:`CostOptions`: what the cost is measured on.

Each spec arrives bound (vectors at its injection blocks) and carries the operator and options,
so a sweep and its cost always steer the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftlib.core.artifacts import read_table
from driftlib.core.layerspec import resolve_layers
from driftlib.datasets.neutral import neutral_texts
from driftlib.steer.capability import greedy_repetition, next_token_kl
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import sweep_hidden_states

__all__ = ["CostOptions", "ReadOut", "UNMEASURED_REPETITION", "cost_rows", "sweep_file"]

#: why a repetition rate is NaN (the cost tables' ``cost_note``)
UNMEASURED_REPETITION = ("repetition not measurable: every greedy continuation (at most {n} new tokens) ended "
                         "before 3 tokens, so it has no 3-grams")


@dataclass(frozen=True)
class CostOptions:
    """What the capability cost is measured on (config ``steering.cost``).

    Args:
        neutral: ``bundled`` or a text file of neutral texts, one per line.
        n_texts: texts for the next-token KL.
        n_prompts: prompts for greedy generation (repetition).
        max_new_tokens: tokens generated per prompt.
    """

    neutral: str = "bundled"
    n_texts: int = 40
    n_prompts: int = 8
    max_new_tokens: int = 24

    def texts(self) -> tuple[list[str], list[str]]:
        """``(KL texts, generation prompts)``."""
        return neutral_texts(self.neutral, self.n_texts, self.n_prompts)

    def metadata(self) -> dict[str, Any]:
        return {"n_texts": self.n_texts, "n_prompts": self.n_prompts}


@dataclass(frozen=True)
class ReadOut:
    """How steered hidden states are read (config ``extraction`` and ``steering.measure_layers``).

    Args:
        measure: the measurement layers (indices or relative depths).
        pooling: ``mean`` or ``last``.
        skip_first: leave the first real token out of a mean pool.
        max_length: tokens kept per text (truncated from the left).
    """

    measure: tuple[int | float, ...]
    pooling: str = "mean"
    skip_first: bool = True
    max_length: int = 256


def sweep_file(model: Any, tokenizer: Any, texts: str | Path, named: Mapping[str, SteeringSpec],
               lambdas: Sequence[float], read: ReadOut, *, batch_size: int, name: str, source: str, seed: int
               ) -> tuple[dict[str, np.ndarray], list[int], dict[str, Any]]:
    """Sweep every named spec over ``lambdas`` on the prompts of ``texts`` (a ``prepare_prompts`` table).

    Returns:
        ``({name: [n_lambdas, n, n_measure, d]}, measurement blocks, metadata)``.
    """
    from driftlib.model.layers import num_layers

    texts_df, texts_meta = read_table(texts, columns=["id", "text"], producer="prepare_prompts")
    measure = resolve_layers(list(read.measure), num_layers(model), key="steering.measure_layers")
    rows = texts_df["text"].tolist()
    out = {key: sweep_hidden_states(model, tokenizer, rows, spec, lambdas, measure, model_name=f"{name} ({key})",
                                    pooling=read.pooling, skip_first=read.skip_first,
                                    batch_size=batch_size, max_length=read.max_length)
           for key, spec in named.items()}
    first = next(iter(named.values()))
    meta = {"model": name, "model_source": source, "lambdas": list(lambdas), "measure_layers": measure,
            "pooling": read.pooling, "preserve_norm": first.preserve_norm, "operator": first.operator,
            "seed": seed, "n_rows": len(rows), "vectors": list(named),
            "dataset_fingerprint": texts_meta.get("dataset_fingerprint", "")}
    return out, measure, meta


def cost_rows(model: Any, tokenizer: Any, named: Mapping[str, SteeringSpec], lambdas: Sequence[float],
              cost: CostOptions, *, batch_size: int) -> list[dict[str, Any]]:
    """Capability cost (next-token KL, repetition of greedy generations) of each named spec per lambda,
    one row per (spec, lambda) with ``cost_note`` saying why a cost is NaN ("" when measured)."""
    texts, prompts = cost.texts()
    rows = []
    for key, spec in named.items():
        kl = next_token_kl(model, tokenizer, texts, spec, lambdas, batch_size=batch_size)
        rep = greedy_repetition(model, tokenizer, prompts, spec, lambdas,
                                max_new_tokens=cost.max_new_tokens, batch_size=batch_size)
        rows += [{"vector": key, "lam": float(lam), "kl": float(k), "repetition": float(r),
                  "cost_note": "" if np.isfinite(r) else UNMEASURED_REPETITION.format(n=cost.max_new_tokens)}
                 for lam, k, r in zip(lambdas, kl, rep)]
    return rows
