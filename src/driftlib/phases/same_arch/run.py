"""Phase 3 runs: ``driftlib sweep`` (a model steered with its own vector and a random control over
the lambda grid) and ``driftlib cost`` (what that steering costs the model)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftlib.core.artifacts import save_tensors, write_table

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource
    from driftlib.steer.runs import CostOptions, ReadOut
    from driftlib.steer.spec import SteeringSpec

log = logging.getLogger(__name__)

__all__ = ["cost", "fit_condition", "own_and_random", "sweep"]


def own_and_random(source: ModelSource, vectors: str | Path, kind: str | None, steering: SteeringSpec,
                   seed: int) -> tuple[Any, Any, dict[str, SteeringSpec], str, float]:
    """The model, its tokenizer, the two specs phase 3 steers with: ``own`` (the model's vector
    at the injection layers) and ``random`` (random directions of the same norms), the vector kind,
    and the own vector's split-half stability at the injection blocks (the lowest; NaN if unknown)."""
    from driftlib.model.layers import num_layers
    from driftlib.steer.sweep import random_like
    from driftlib.steer.vectors import load_steering_vectors

    found = load_steering_vectors(vectors, kind)
    model, tokenizer = source.load()
    own = steering.bind(found.vectors, num_layers(model), what=f"{vectors}: {found.kind}")
    return (model, tokenizer, {"own": own, "random": own.with_vectors(random_like(own.vectors, seed))}, found.kind,
            found.stability_at(own.blocks))


def sweep(*, source: ModelSource, name: str, vectors: str | Path, kind: str | None, steering: SteeringSpec,
          lambdas: Sequence[float], texts: str | Path, read: ReadOut, batch_size: int, seed: int,
          out: str | Path, answers_out: str | Path | None = None, max_new_tokens: int = 24) -> None:
    """Hidden states of the prompts steered over ``lambdas``, with the own vector and the random control;
    with ``answers_out``, also the greedy answers under the own vector at every lambda, classified as
    refusal or not (:func:`driftlib.steer.runs.answer_rows`; the same model load serves both)."""
    from driftlib.steer.runs import answer_rows, sweep_file
    model, tokenizer, named, kind, stability = own_and_random(source, vectors, kind, steering, seed)
    template = source.load_template()
    tensors, _, meta = sweep_file(model, tokenizer, texts, named, lambdas, read, batch_size=batch_size, name=name,
                                  source=source.path, seed=seed, template=template)
    save_tensors(out, tensors, metadata={**meta, "kind": kind, "inject_layers": named["own"].blocks,
                                         "stability": {"own": stability}})
    log.info("wrote sweep %s to %s", tuple(tensors["own"].shape), out)
    if answers_out is not None:
        from driftlib.core.artifacts import read_table
        from driftlib.datasets.prompts import PROMPT_COLUMNS

        prompts, prompts_meta = read_table(texts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
        df = answer_rows(model, tokenizer, prompts, named["own"], lambdas, name=name, variant="steered",
                         max_new_tokens=max_new_tokens, batch_size=batch_size, max_length=read.max_length,
                         template=template)
        write_table(df, answers_out, metadata={"model": name, "operator": steering.operator, "kind": kind,
                                               "max_new_tokens": max_new_tokens, "classifier": "string_match",
                                               "dataset_fingerprint": prompts_meta.get("dataset_fingerprint", "")})


def cost(*, source: ModelSource, name: str, vectors: str | Path, kind: str | None, steering: SteeringSpec,
         lambdas: Sequence[float], cost: CostOptions, batch_size: int, seed: int, out: str | Path) -> None:
    """Capability cost (next-token KL, repetition) of the own vector and the random control per lambda."""
    from driftlib.steer.runs import cost_rows
    model, tokenizer, named, kind, _ = own_and_random(source, vectors, kind, steering, seed)
    rows = cost_rows(model, tokenizer, named, lambdas, cost, batch_size=batch_size)
    write_table(pd.DataFrame(rows), out, metadata={"model": name, "kind": kind, **cost.metadata(), "seed": seed,
                                                   **steering.metadata()})


def fit_condition(*, source: ModelSource, name: str, steering: SteeringSpec, calibration: str | Path,
                  prompts: str | Path, layer: int | float | None, batch_size: int, max_length: int,
                  confidence: float, out: str | Path, render: str = "raw", adapter: str | None = None,
                  class_means: bool = False) -> None:
    """The condition of conditional steering for one model: its direction and threshold fitted on
    the calibration prompts' states at the condition layer (last real token), and its accuracy on
    the evaluation prompts, with a Wilson interval (stored in the file's metadata). Both prompt sets
    are read as ``render`` says (``raw`` | ``chat``), as the sweeps read them. Kept beside it: the
    calibration class means at every block (``calibration_unsafe_mean``/``calibration_safe_mean``
    ``[L, d]``) and the evaluation prompts' states at the condition block (``evaluation_states``
    ``[n, d]``), so that phase 4 can map the condition into another model and score it there. The
    class means need the calibration prompts read at every block (a full forward pass instead of
    one that stops at the condition block), so they are kept only with ``class_means``
    (``cross_arch.condition: mapped``)."""
    from driftlib.core.artifacts import read_table
    from driftlib.core.layerspec import resolve_layers
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.model.forward import extract_hidden_states
    from driftlib.model.layers import num_layers
    from driftlib.model.render import format_prompts
    from driftlib.stats.condition import condition_accuracy, save_condition
    from driftlib.stats.condition import fit_condition as fit

    cal, cal_meta = read_table(calibration, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    ev, ev_meta = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    model, tokenizer = source.load()
    if adapter:  # a dealigned agent of phase 5: phase 4.5's LoRA merged in
        from driftlib.model.adapters import merge_lora

        model = merge_lora(model, adapter)
    template = source.load_template()
    depth = num_layers(model)
    inject = resolve_layers(list(steering.layers), depth, key="steering.layers")
    block = min(inject) if layer is None else resolve_layers([layer], depth, key="steering.condition.layer")[0]

    def states(table, blocks):
        texts = format_prompts(tokenizer, table["text"].tolist(), render, template_tokenizer=template)
        return extract_hidden_states(model, tokenizer, texts, blocks, pooling="last",
                                     batch_size=batch_size, max_length=max_length,
                                     model_name=f"{name} (condition)")

    # with class_means, the calibration states at every block: their class means let phase 4 map this
    # condition into another model through a map that reads any block (stats.condition.map_condition)
    unsafe = (cal["safety_label"] == "unsafe").to_numpy()
    cal_states = states(cal, list(range(depth)) if class_means else [block])
    ev_states = states(ev, [block])[:, 0, :]
    condition = fit(cal_states[:, block if class_means else 0, :], unsafe, layer=block)
    acc = condition_accuracy(condition, ev_states, (ev["safety_label"] == "unsafe").to_numpy(), confidence=confidence)
    arrays = {"evaluation_states": ev_states}
    if class_means:
        arrays.update(calibration_unsafe_mean=cal_states[unsafe].mean(axis=0),
                      calibration_safe_mean=cal_states[~unsafe].mean(axis=0))
    save_condition(out, condition, arrays=arrays, metadata={
        "model": name, "model_source": source.path, "adapter": adapter or "", "inject_layers": inject, "render": render, **acc.record(), "confidence": confidence,
        "calibration_fingerprint": cal_meta.get("dataset_fingerprint", ""),
        "dataset_fingerprint": ev_meta.get("dataset_fingerprint", "")})
    log.info("%s: condition at block %d, calibration balanced accuracy %.3f (n=%d), evaluation accuracy %.3f "
             "[%.3f, %.3f]", name, block, condition.calibration_accuracy, condition.n_calibration, acc.accuracy,
             acc.ci_low, acc.ci_high)
