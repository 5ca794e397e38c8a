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

__all__ = ["PairSpecs", "answered_cells", "operator_specs", "prepare_anchors", "transfer_answers", "transfer_sweep"]


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


def operator_specs(steering: SteeringSpec, compare: Sequence[str], condition: str | Path | None = None
                   ) -> tuple[dict[str | None, SteeringSpec], dict]:
    """The unbound spec of each operator a sweep steers under: ``{None: the main operator's spec,
    operator: that compared operator's spec}`` (``compare`` minus the main operator, in order), and
    the condition's record (its accuracy on the evaluation prompts, from the ``fit-condition`` file's
    metadata; ``{}`` without one).

    A gated operator (``conditional``) gets the condition of ``condition`` (a ``fit-condition``
    file); the others get none.

    Raises:
        ConfigError: a gated operator is compared but no condition is given.
    """
    from driftlib.stats.condition import load_condition

    cond, record = load_condition(condition) if condition else (None, {})
    specs = steering.for_operators(compare, cond)
    keep = ("condition_accuracy", "condition_ci_low", "condition_ci_high", "condition_balanced", "condition_n",
            "layer", "threshold", "model")
    return specs, {k: record[k] for k in keep if k in record}


class PairSpecs:
    """The unbound spec of every operator for each (source, method) of a target's phase-4 runs.

    The conditional operator is gated by the target's own condition (``condition``, a
    ``fit-condition`` file), or, with ``mapped_conditions`` (``map-condition`` files, one per
    source), by each source's condition mapped into the target by the same map as its vector.

    Args:
        steering: the main operator's spec; compare: the compared operators.
        condition: the target's condition file, or None.
        mapped_conditions: the sources' mapped-condition files (they replace ``condition``).
    """

    def __init__(self, steering: SteeringSpec, compare: Sequence[str], condition: str | Path | None = None,
                 mapped_conditions: Sequence[str | Path] = ()) -> None:
        from driftlib.stats.condition import load_mapped_conditions

        self.steering, self.compare = steering, list(compare)
        self.mapped = dict(load_mapped_conditions(p) for p in mapped_conditions)
        self.source = "mapped" if self.mapped else "target"
        if self.mapped:
            self.specs, self.record = None, {}
        else:
            self.specs, self.record = operator_specs(steering, compare, condition)

    def operators(self) -> list[str | None]:
        """The operator keys: None for the main one, then the compared ones."""
        return self.steering.operator_keys(self.compare)

    def get(self, source: str, method: str) -> tuple[dict[str | None, SteeringSpec], dict]:
        """``(specs by operator key, the conditional operator's accuracy record)`` for one mapped vector."""
        from driftlib.core.errors import ArtifactError

        if not self.mapped:
            return self.specs, self.record
        if source not in self.mapped or method not in self.mapped[source]:
            raise ArtifactError(f"no mapped condition of {source} by {method}; re-run map_condition")
        cond, record = self.mapped[source][method]
        return self.steering.for_operators(self.compare, cond), record


def transfer_sweep(*, source: ModelSource, name: str, mapped: Sequence[str | Path], methods: Sequence[str],
                   steering: SteeringSpec, lambdas: Sequence[float], texts: str | Path, read: ReadOut,
                   cost: CostOptions, batch_size: int, seed: int, out: str | Path, cost_out: str | Path,
                   compare: Sequence[str] = (), condition: str | Path | None = None,
                   mapped_conditions: Sequence[str | Path] = ()) -> None:
    """Steer one target with the mapped vectors of every source into it, under every operator, in one pass.

    For each mapped-vectors file (``fit-maps --out-vectors``, one per source; its metadata names
    the source and the target) and each method: the mapped vector, its shuffled-map control and a
    random vector of the mapped vector's norms (seed ``seed + i`` for the ``i``-th method, as the
    per-pair sweeps had), under the main operator and under each operator of ``compare`` (the
    conditional one gated by ``condition``, the target's own phase-3 condition, or with
    ``mapped_conditions`` by each source's condition mapped by the same method, :class:`PairSpecs`); the capability cost
    of each mapped vector under each operator. Tensors and cost rows are named
    ``{source}/{method}/{kind}[/{operator}]`` (:func:`transfer_key`); the sweep's metadata lists the
    ``sources``, ``methods``, ``compare``d operators, each vector's ``operators``, each source's
    ``matching``, each random control's seed (``random_seeds``), each vector's ``stability`` (the
    source vector's split-half stability at the blocks it was mapped from, NaN for the controls)
    and the ``condition``'s accuracy record. Every spec shares one unsteered prefix per batch
    (:func:`driftlib.steer.runs.sweep_specs`).
    """
    from driftlib.core.errors import ArtifactError
    from driftlib.core.records import transfer_key
    from driftlib.steer.runs import cost_rows, sweep_file
    from driftlib.steer.sweep import random_like
    from driftlib.steer.vectors import load_vectors

    pair_specs = PairSpecs(steering, compare, condition, mapped_conditions)
    named, costed, seeds, matching, layers, stability, operators, conditions = {}, {}, {}, {}, None, {}, {}, {}
    for path in mapped:
        meta = load_vectors(path, f"{methods[0]}_mapped", producer="fit_maps")[1]
        key = str(meta.get("source", ""))
        if meta.get("target", name) != name or not key:
            raise ArtifactError(f"{path}: mapped vectors from {key or 'an unnamed source'} into "
                                f"{meta.get('target')!r}, not into {name!r}; re-run fit_maps")
        if key in matching:
            raise ArtifactError(f"--mapped: two files map {key} into {name}; give one per source")
        matching[key], layers = meta.get("matching", ""), meta["layers"]
        source_stability = float(meta.get("source_stability", float("nan")))
        for i, method in enumerate(methods):
            vectors = {"mapped": load_vectors(path, f"{method}_mapped", producer="fit_maps")[0],
                       "shuffled": load_vectors(path, f"{method}_shuffled", producer="fit_maps")[0]}
            vectors["random"] = random_like(vectors["mapped"], seed + i)
            specs, record = pair_specs.get(key, method)
            for op, spec in specs.items():
                for kind, vec in vectors.items():
                    vector_key = transfer_key(key, method, kind, op)
                    named[vector_key], operators[vector_key] = spec.with_vectors(vec), spec.operator
                    stability[vector_key] = source_stability if kind == "mapped" else float("nan")
                    if pair_specs.mapped and spec.gated:
                        conditions[vector_key] = record
                costed[transfer_key(key, method, "mapped", op)] = named[transfer_key(key, method, "mapped", op)]
                seeds[transfer_key(key, method, "random", op)] = seed + i
    model, tokenizer = source.load()
    tensors, _, sweep_meta = sweep_file(model, tokenizer, texts, named, lambdas, read, batch_size=batch_size,
                                        name=name, source=source.path, seed=seed,
                                        template=source.load_template())
    compared = [op for op in pair_specs.operators() if op]
    save_tensors(out, tensors, metadata={**sweep_meta, "sources": list(matching), "methods": list(methods),
                                         "operator": steering.operator, "compare": compared,
                                         "operators": operators, "inject_layers": layers, "matching": matching,
                                         "random_seeds": seeds, "stability": stability,
                                         "condition": pair_specs.record, "conditions": conditions,
                                         "condition_source": pair_specs.source})
    table = pd.DataFrame(cost_rows(model, tokenizer, costed, lambdas, cost, batch_size=batch_size))
    table.insert(0, "source", table["vector"].str.split("/").str[0])
    table.insert(1, "operator", table["vector"].map(operators))
    write_table(table, cost_out, metadata={"model": name, "sources": list(matching), **cost.metadata(), "seed": seed,
                                           **(pair_specs.specs or {None: steering})[None].metadata(),
                                           "compare": compared})
    log.info("wrote the transfer sweep of %d vectors from %d sources under %d operators into %s to %s",
             len(tensors), len(matching), len(compared) + 1, name, out)


def answered_cells(fits: Sequence[str | Path], efficiencies: Sequence[str | Path], *, name: str,
                   matrix_method: str = "best") -> pd.DataFrame:
    """The mapped vectors phase 4 reads behaviour under: one row per (source, operator) into target
    ``name`` with the ``method`` the matrix shows (the cell's best under that operator, or
    ``matrix_method``) and ``lam``, that vector's best lambda inside the cost bound
    (``transfer-efficiency``), from the pairs' ``fit_maps`` and ``transfer_efficiency`` tables
    (the same choice as :func:`driftlib.stats.selection.transfer_matrix`, which the summary uses)."""
    from driftlib.core.artifacts import read_table
    from driftlib.core.errors import ArtifactError
    from driftlib.stats.selection import transfer_matrix

    fit = pd.concat([read_table(f, producer="fit_maps")[0] for f in fits], ignore_index=True)
    eff = pd.concat([read_table(f, producer="transfer_efficiency")[0] for f in efficiencies], ignore_index=True)
    if set(eff["target"]) != {name}:
        raise ArtifactError(f"--efficiencies: tables of targets {sorted(set(eff['target']))}, not only {name!r}")
    cells = pd.concat([transfer_matrix(fit, rows).assign(operator=op) for op, rows in eff.groupby("operator", sort=False)],
                      ignore_index=True)
    shown = cells[cells["best"]] if matrix_method == "best" else cells[cells["method"] == matrix_method]
    return shown[["source", "target", "method", "operator", "lam"]].reset_index(drop=True)


def transfer_answers(*, source: ModelSource, name: str, mapped: Sequence[str | Path], fits: Sequence[str | Path],
                     efficiencies: Sequence[str | Path], steering: SteeringSpec, prompts: str | Path,
                     matrix_method: str, max_new_tokens: int, batch_size: int, max_length: int,
                     out: str | Path, compare: Sequence[str] = (), condition: str | Path | None = None,
                     mapped_conditions: Sequence[str | Path] = ()) -> None:
    """Greedy answers of one target, unsteered and under each source's mapped vector, classified.

    Per source and operator (the main one and each of ``compare``; the conditional one gated as in
    :func:`transfer_sweep`), the mapped vector of the method the matrix shows, at its best lambda
    inside the cost bound (:func:`answered_cells`): the behaviour beside the transfer efficiency.
    A cell whose best lambda is 0 reuses the unsteered answers. Rows: :data:`driftlib.steer.runs.ANSWER_COLUMNS`
    plus ``source`` and ``method`` (``""`` for the unsteered rows, operator ``none``, lambda 0).
    """
    from driftlib.core.artifacts import decode_metadata_value, load_tensors, read_table
    from driftlib.core.errors import ArtifactError
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.steer.runs import answer_rows
    from driftlib.steer.vectors import load_vectors

    pair_specs = PairSpecs(steering, compare, condition, mapped_conditions)
    operators = [steering.operator if op is None else op for op in pair_specs.operators()]
    cells = answered_cells(fits, efficiencies, name=name, matrix_method=matrix_method)
    sources = {}
    for path in mapped:  # which source each file maps from (its metadata)
        meta = {k: decode_metadata_value(v) for k, v in load_tensors(path, producer="fit_maps")[1].items()}
        if meta.get("target", name) != name:
            raise ArtifactError(f"{path}: mapped vectors into {meta.get('target')!r}, not into {name!r}; re-run fit_maps")
        sources[str(meta.get("source", ""))] = path
    table, prompts_meta = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    model, tokenizer = source.load()
    template = source.load_template()
    common = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "max_length": max_length,
              "template": template}
    unsteered = answer_rows(model, tokenizer, table, None, [0.0], name=name, variant="base", **common)
    frames = [unsteered.assign(source="", method="")]
    for cell in cells.itertuples():
        if cell.source not in sources:
            raise ArtifactError(f"--mapped: no mapped vectors from {cell.source} into {name}")
        if cell.operator not in operators:
            raise ArtifactError(f"the efficiency tables hold operator {cell.operator!r}, not swept here "
                                f"({', '.join(operators)})")
        if cell.lam == 0:  # no lambda raised the AQI inside the bound (a negative best lambda is steered)
            rows = unsteered.assign(operator=cell.operator)
        else:
            vectors = load_vectors(sources[cell.source], f"{cell.method}_mapped", producer="fit_maps")[0]
            by_name = {sp.operator: sp for sp in pair_specs.get(cell.source, cell.method)[0].values()}
            spec = by_name[cell.operator].with_vectors(vectors)
            rows = answer_rows(model, tokenizer, table, spec, [float(cell.lam)], name=name, variant="base", **common)
        frames.append(rows.assign(source=cell.source, method=cell.method))
    result = pd.concat(frames, ignore_index=True)
    write_table(result, out, metadata={"model": name, "operator": steering.operator,
                                       "compare": [op for op in pair_specs.operators() if op],
                                       "matrix_method": matrix_method, "max_new_tokens": max_new_tokens,
                                       "classifier": "string_match", "condition_source": pair_specs.source,
                                       "dataset_fingerprint": prompts_meta.get("dataset_fingerprint", "")})
    log.info("wrote %d answers of %s (unsteered and %d mapped vectors) to %s", len(result), name, len(cells), out)
