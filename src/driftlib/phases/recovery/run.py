"""Phase 4.5 runs: ``driftlib train-dealign`` (LoRA adapters trained on the rejected responses) and
``driftlib recovery-sweep`` (a dealigned model steered with its own vector, the baseline's mapped
vector and a random control, and the cost of each)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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


def _cross_arch_spec(steering: SteeringSpec, name: str, aqi_tables: Sequence[str], fits: Sequence[str],
                     efficiencies: Sequence[str], mapped: Sequence[str]) -> tuple[SteeringSpec, str] | None:
    """The phase-1 baseline's vector mapped into ``name`` by its best phase-4 map, or None."""
    from driftlib.phases.recovery.run import cross_arch_choice
    from driftlib.steer.vectors import load_vectors

    cross = cross_arch_choice(aqi_tables, fits, efficiencies, name)
    if cross is None:
        log.info("no cross-architecture vector for %s (it is the baseline, or phase 4 has no map into it)", name)
        return None
    source, method = cross
    found = [p for p in mapped if load_vectors(p, f"{method}_mapped", producer="fit_maps")[1].get("source") == source]
    if not found:
        raise ArtifactError(f"no mapped vectors from {source} into {name} among --mapped {list(mapped)}; re-run fit_maps")
    return steering.with_vectors(load_vectors(found[0], f"{method}_mapped", producer="fit_maps")[0]), \
        f"{source} via {method}"


def recovery_sweep(*, source: ModelSource, name: str, adapter: str | Path, steps: int, vectors: str | Path,
                   steering: SteeringSpec, aqi_tables: Sequence[str], fits: Sequence[str],
                   efficiencies: Sequence[str], mapped: Sequence[str], lambdas: Sequence[float], texts: str | Path,
                   read: ReadOut, cost: CostOptions, batch_size: int, seed: int, out: str | Path,
                   cost_out: str | Path) -> None:
    """Steer the dealigned model (the aligned model with the adapter merged) over ``lambdas``."""
    from driftlib.model.layers import num_layers
    from driftlib.phases.recovery.dealign import load_dealigned
    from driftlib.steer.runs import cost_rows, sweep_file
    from driftlib.steer.sweep import random_like
    from driftlib.steer.vectors import load_steering_vectors

    model, tokenizer = load_dealigned(source.path, adapter, dtype=source.dtype, device=source.device,
                                      revision=source.revision, trust_remote_code=source.trust_remote_code)
    own = load_steering_vectors(vectors)
    named = {"same_arch": steering.bind(own.vectors, num_layers(model), what=f"{vectors}: {own.kind}")}
    sources = {"same_arch": f"{name} ({own.kind})"}
    cross = _cross_arch_spec(steering, name, aqi_tables, fits, efficiencies, mapped)
    if cross is not None:
        named["cross_arch"], sources["cross_arch"] = cross
    named["random"] = named["same_arch"].with_vectors(random_like(named["same_arch"].vectors, seed))
    sources["random"] = "random, same-arch norms"
    tensors, _, meta = sweep_file(model, tokenizer, texts, named, lambdas, read, batch_size=batch_size, name=name,
                                  source=source.path, seed=seed)
    save_tensors(out, tensors, metadata={**meta, "steps": steps, "sources": sources, "adapter": str(adapter),
                                         "inject_layers": named["same_arch"].blocks})
    costed = {k: v for k, v in named.items() if k != "random"}
    write_table(pd.DataFrame(cost_rows(model, tokenizer, costed, lambdas, cost, batch_size=batch_size)), cost_out,
                metadata={"model": name, "steps": steps, **cost.metadata(), "seed": seed, **steering.metadata()})


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
                      efficiencies: Sequence[str | Path], model: str) -> tuple[str, str] | None:
    """The phase-1 baseline (from the AQI tables, as ``baseline_summary`` chooses it) and its best
    phase-4 map into ``model`` (from the pair tables, as ``transfer_summary`` ranks them).

    Read from phase 1's and phase 4's per-model tables (their output files) rather than the phase
    summaries, so that a change to a summary's plots does not re-run the recovery sweeps; the
    choices themselves are :mod:`driftlib.stats.selection`'s, as the summaries make them.
    """
    from driftlib.stats.selection import choose_baseline, transfer_matrix

    aqi = pd.concat([read_table(t, producer="score_aqi")[0] for t in aqi_tables], ignore_index=True)
    baseline = choose_baseline(aqi).get("baseline")
    if not fits or not efficiencies:
        return None
    fit = pd.concat([read_table(f, producer="fit_maps")[0] for f in fits], ignore_index=True)
    eff = pd.concat([read_table(f, producer="transfer_efficiency")[0] for f in efficiencies], ignore_index=True)
    return pick_cross_arch(transfer_matrix(fit, eff), baseline, model)
