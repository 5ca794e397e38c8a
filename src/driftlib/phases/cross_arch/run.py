"""Phase 4 runs: ``driftlib prepare-anchors`` (the texts maps are fitted on) and
``driftlib transfer-sweep`` (a target steered with every mapped vector and both controls, and the
cost of each mapped vector)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from driftlib.core.artifacts import fingerprint, save_tensors, write_table

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource
    from driftlib.steer.runs import CostOptions, ReadOut
    from driftlib.steer.spec import SteeringSpec

log = logging.getLogger(__name__)

__all__ = ["prepare_anchors", "transfer_sweep"]


def prepare_anchors(*, source: str, prompts: str, split: str, n: int | None, seed: int, out: str | Path) -> None:
    """The anchor texts, minus any text that is also an evaluation prompt."""
    from driftlib.datasets.anchors import load_anchor_texts
    from driftlib.datasets.anchors import prepare_anchors as sample_anchors
    from driftlib.datasets.prompts import load_prompts

    texts, name = load_anchor_texts(source)
    evaluation = load_prompts(prompts, split=split)[0]["text"].tolist()
    table, report = sample_anchors(texts, evaluation, n=n, seed=seed)
    write_table(table, out, metadata={"source": name, **report, "seed": seed, "dataset_fingerprint": fingerprint(table)})
    log.info("wrote %d anchor texts to %s (%d dropped as evaluation prompts)", report["n"], out,
             report["n_dropped_overlap"])


def transfer_sweep(*, source: ModelSource, name: str, mapped: str | Path, methods: Sequence[str],
                   steering: SteeringSpec, lambdas: Sequence[float], texts: str | Path, read: ReadOut,
                   cost: CostOptions, batch_size: int, seed: int, out: str | Path, cost_out: str | Path) -> None:
    """Steer the target with each method's mapped vector, its shuffled-map control and a random
    vector of the mapped vector's norms, all under the same spec; cost of each mapped vector."""
    from driftlib.steer.runs import cost_rows, sweep_file
    from driftlib.steer.sweep import random_like
    from driftlib.steer.vectors import load_vectors

    _, meta = load_vectors(mapped, f"{methods[0]}_mapped", producer="fit_maps")
    model, tokenizer = source.load()
    named, costed = {}, {}
    for i, method in enumerate(methods):
        vectors = load_vectors(mapped, f"{method}_mapped", producer="fit_maps")[0]
        named[f"{method}/mapped"] = costed[f"{method}/mapped"] = steering.with_vectors(vectors)
        named[f"{method}/shuffled"] = steering.with_vectors(
            load_vectors(mapped, f"{method}_shuffled", producer="fit_maps")[0])
        named[f"{method}/random"] = steering.with_vectors(random_like(vectors, seed + i))
    tensors, _, sweep_meta = sweep_file(model, tokenizer, texts, named, lambdas, read, batch_size=batch_size,
                                        name=name, source=source.path, seed=seed)
    save_tensors(out, tensors, metadata={**sweep_meta, "source": meta.get("source", ""), "methods": list(methods),
                                         "inject_layers": meta["layers"], "matching": meta.get("matching", "")})
    write_table(pd.DataFrame(cost_rows(model, tokenizer, costed, lambdas, cost, batch_size=batch_size)), cost_out,
                metadata={"model": name, "source": meta.get("source", ""), **cost.metadata(), "seed": seed,
                          **steering.metadata()})
    log.info("wrote transfer sweep of %d vectors to %s", len(tensors), out)
