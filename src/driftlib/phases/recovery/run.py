"""Phase 4.5 runs: ``driftlib train-dealign`` (LoRA adapters trained on the rejected responses) and
``driftlib recovery-sweep`` (a dealigned model steered with its own vector, the baseline's mapped
vector and a random control, and the cost of each)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftlib.core.artifacts import read_table, save_tensors, write_table
from driftlib.core.errors import ArtifactError

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource
    from driftlib.steer.runs import CostOptions, ReadOut
    from driftlib.steer.spec import SteeringSpec

log = logging.getLogger(__name__)

__all__ = ["recovery_sweep", "train_dealign"]


def train_dealign(*, source: ModelSource, pairs: str | Path, steps: Sequence[int], rank: int, alpha: float, lr: float,
                  batch_size: int, max_length: int, target_modules: Sequence[str] | None, seed: int, quiet: bool,
                  out: str | Path) -> None:
    """LoRA adapters on the aligned model, trained on the pairs' rejected responses; one per step count."""
    from driftlib.phases.recovery.dealign import train_dealign_lora

    table = read_table(pairs, columns=["rejected"], producer="prepare_pairs")[0]
    train_dealign_lora(source.path, table["rejected"].tolist(), out, steps=steps, rank=rank, alpha=alpha, lr=lr,
                       batch_size=batch_size, max_len=max_length, target_modules=target_modules, seed=seed,
                       dtype=source.dtype, device=source.device, revision=source.revision,
                       trust_remote_code=source.trust_remote_code, progress=not quiet)


def _cross_arch_vectors(name: str, aqi_tables: Sequence[str], fits: Sequence[str], efficiencies: Sequence[str],
                        mapped: Sequence[str], operator: str) -> tuple[dict, str, float] | None:
    """The phase-1 baseline's vector mapped into ``name`` by its best phase-4 map (ranked under the
    main ``operator``): ``(vectors, what, source stability)``, or None."""
    from driftlib.phases.recovery.run import cross_arch_choice
    from driftlib.steer.vectors import load_vectors

    cross = cross_arch_choice(aqi_tables, fits, efficiencies, name, operator=operator)
    if cross is None:
        log.info("no cross-architecture vector for %s (it is the baseline, or phase 4 has no map into it)", name)
        return None
    source, method = cross
    found = [p for p in mapped if load_vectors(p, f"{method}_mapped", producer="fit_maps")[1].get("source") == source]
    if not found:
        raise ArtifactError(f"no mapped vectors from {source} into {name} among --mapped {list(mapped)}; re-run fit_maps")
    vectors, meta = load_vectors(found[0], f"{method}_mapped", producer="fit_maps")
    return vectors, f"{source} via {method}", float(meta.get("source_stability", float("nan")))


def _condition_in(model: Any, tokenizer: Any, condition: Any, texts: str | Path, read: ReadOut, template: Any,
                  batch_size: int, confidence: float = 0.95) -> dict:
    """How well ``condition`` (fitted in phase 3 on the model key's steered model) picks the unsafe
    evaluation prompts in ``model`` (the dealigned one): its accuracy record."""
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.model.forward import extract_hidden_states
    from driftlib.model.render import format_prompts
    from driftlib.stats.condition import condition_accuracy

    prompts = read_table(texts, columns=PROMPT_COLUMNS, producer="prepare_prompts")[0]
    rows = format_prompts(tokenizer, prompts["text"].tolist(), read.render, template_tokenizer=template)
    states = extract_hidden_states(model, tokenizer, rows, [condition.layer], pooling="last", batch_size=batch_size,
                                   max_length=read.max_length, model_name="dealigned (condition)")[:, 0, :]
    acc = condition_accuracy(condition, states, (prompts["safety_label"] == "unsafe").to_numpy(), confidence=confidence)
    return {**acc.record(), "layer": int(condition.layer), "threshold": float(condition.threshold)}


def recovery_sweep(*, source: ModelSource, name: str, adapter: str | Path, steps: int, vectors: str | Path,
                   steering: SteeringSpec, aqi_tables: Sequence[str], fits: Sequence[str],
                   efficiencies: Sequence[str], mapped: Sequence[str], lambdas: Sequence[float], texts: str | Path,
                   read: ReadOut, cost: CostOptions, batch_size: int, seed: int, out: str | Path,
                   cost_out: str | Path, compare: Sequence[str] = (), answers_out: str | Path | None = None,
                   answer_tokens: int = 24) -> None:
    """Steer the dealigned model (the aligned model with the adapter merged) over ``lambdas``.

    Vectors: ``same_arch`` (the model's own), ``cross_arch`` (the baseline's, mapped by its best
    phase-4 map) and ``random`` (the same-arch norms), under the main operator and each operator
    of ``compare`` (:func:`recovery_key`). A gated operator is gated by ``steering.condition``: the
    model key's phase-3 condition (fitted on the model phase 3 steers, nothing is fitted on the
    dealigned model); its accuracy in the dealigned model is measured here and recorded
    (``condition`` in the metadata). The metadata also records each vector's ``operators`` and
    split-half ``stability`` (same-arch: the model's own at its injection blocks; cross-arch: the
    source vector's, from the mapped-vectors file; NaN for the random control). With
    ``answers_out``, the greedy answers of the dealigned model under the same-arch vector (main
    operator) at every lambda, classified (:func:`driftlib.steer.runs.answer_rows`; lambda 0 is the
    dealigned model unsteered).
    """
    from driftlib.model.layers import num_layers
    from driftlib.phases.recovery.dealign import load_dealigned
    from driftlib.phases.recovery.evaluate import recovery_key
    from driftlib.steer.runs import answer_rows, cost_rows, sweep_file
    from driftlib.steer.sweep import random_like
    from driftlib.steer.vectors import load_steering_vectors

    model, tokenizer = load_dealigned(source.path, adapter, dtype=source.dtype, device=source.device,
                                      revision=source.revision, trust_remote_code=source.trust_remote_code)
    template = source.load_template()
    own = load_steering_vectors(vectors)
    bound = steering.bind(own.vectors, num_layers(model), what=f"{vectors}: {own.kind}")
    base = {"same_arch": bound.vectors}
    sources = {"same_arch": f"{name} ({own.kind})"}
    stabilities = {"same_arch": own.stability_at(bound.blocks)}
    cross = _cross_arch_vectors(name, aqi_tables, fits, efficiencies, mapped, steering.operator)
    if cross is not None:
        base["cross_arch"], sources["cross_arch"], stabilities["cross_arch"] = cross
    base["random"] = random_like(bound.vectors, seed)
    sources["random"] = "random, same-arch norms"
    stabilities["random"] = float("nan")
    specs = steering.for_operators(compare, steering.condition)
    named, operators, stability, costed = {}, {}, {}, {}
    for op, spec in specs.items():
        for vector, vecs in base.items():
            key = recovery_key(vector, op)
            named[key], operators[key], stability[key] = spec.with_vectors(vecs), spec.operator, stabilities[vector]
            sources.setdefault(key, sources[vector])
            if vector != "random":
                costed[key] = named[key]
    condition = {}
    gated = [spec for spec in specs.values() if spec.gated]
    if gated:
        condition = _condition_in(model, tokenizer, gated[0].condition, texts, read, template, batch_size)
    tensors, _, meta = sweep_file(model, tokenizer, texts, named, lambdas, read, batch_size=batch_size, name=name,
                                  source=source.path, seed=seed, template=template)
    save_tensors(out, tensors, metadata={**meta, "steps": steps, "sources": sources, "adapter": str(adapter),
                                         "inject_layers": bound.blocks, "operator": steering.operator,
                                         "compare": [op for op in specs if op], "operators": operators,
                                         "stability": stability, "condition": condition,
                                         "condition_source": "the model key's phase-3 condition" if condition else ""})
    table = pd.DataFrame(cost_rows(model, tokenizer, costed, lambdas, cost, batch_size=batch_size))
    table.insert(1, "operator", table["vector"].map(operators))
    write_table(table, cost_out, metadata={"model": name, "steps": steps, **cost.metadata(), "seed": seed,
                                           **specs[None].metadata(), "compare": [op for op in specs if op]})
    if answers_out is not None:
        from driftlib.datasets.prompts import PROMPT_COLUMNS

        prompts, prompts_meta = read_table(texts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
        answers = answer_rows(model, tokenizer, prompts, named["same_arch"], lambdas, name=name, variant="dealigned",
                              max_new_tokens=answer_tokens, batch_size=batch_size, max_length=read.max_length,
                              template=template)
        answers.insert(2, "steps", int(steps))
        write_table(answers, answers_out, metadata={
            "model": name, "steps": steps, "operator": steering.operator, "vector": "same_arch", "kind": own.kind,
            "max_new_tokens": answer_tokens, "classifier": "string_match",
            "dataset_fingerprint": prompts_meta.get("dataset_fingerprint", "")})


def pick_cross_arch(matrix: pd.DataFrame, baseline: str | None, model: str) -> tuple[str, str] | None:
    """``(source, method)`` of the baseline's best phase-4 map into ``model``, or None where phase
    4 has no such pair (the model is the baseline, or it has no base variant to be a target)."""
    if baseline is None or baseline == model:
        return None
    cell = matrix[(matrix["source"] == baseline) & (matrix["target"] == model) & matrix["best"].astype(bool)]
    if cell.empty:
        return None
    return baseline, str(cell["method"].iloc[0])


def cross_arch_choice(aqi_tables: Sequence[str | Path], fits: Sequence[str | Path],
                      efficiencies: Sequence[str | Path], model: str, *, operator: str | None = None
                      ) -> tuple[str, str] | None:
    """The phase-1 baseline (from the AQI tables, as ``baseline_summary`` chooses it) and its best
    phase-4 map into ``model`` (from the pair tables, as ``transfer_summary`` ranks them).

    Read from phase 1's and phase 4's per-model tables (their output files) rather than the phase
    summaries, so that a change to a summary's plots does not re-run the recovery sweeps; the
    choices themselves are :mod:`driftlib.stats.selection`'s, as the summaries make them. The
    cells are ranked on the efficiencies under ``operator`` (the main one; None: the tables' only
    operator).
    """
    from driftlib.stats.selection import choose_baseline, transfer_matrix

    aqi = pd.concat([read_table(t, producer="score_aqi")[0] for t in aqi_tables], ignore_index=True)
    baseline = choose_baseline(aqi).get("baseline")
    if not fits or not efficiencies:
        return None
    fit = pd.concat([read_table(f, producer="fit_maps")[0] for f in fits], ignore_index=True)
    eff = pd.concat([read_table(f, producer="transfer_efficiency")[0] for f in efficiencies], ignore_index=True)
    if "operator" in eff:
        ops = list(dict.fromkeys(eff["operator"]))
        if operator is None and len(ops) > 1:
            raise ArtifactError(f"phase 4's efficiency tables hold several operators {ops}; name the main one")
        eff = eff[eff["operator"] == (operator if operator is not None else ops[0])]
    return pick_cross_arch(transfer_matrix(fit, eff), baseline, model)
