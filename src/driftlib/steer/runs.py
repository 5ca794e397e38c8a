"""Steered runs over files, shared by every phase that steers (3, 4, 4.5 and 5's agents).

- :func:`sweep_file`: hidden states of a prompt table under several steering specs over a lambda
  grid (:func:`sweep_specs`: one unsteered prefix per batch for every spec and lambda), with the
  sweep's metadata;
- :func:`sweep_specs`: the sweep of several specs at once; equal, to float tolerance, to
  :func:`driftlib.steer.sweep.sweep_hidden_states` run once per spec;
- :func:`cost_rows`: the capability cost of each spec (next-token KL, greedy repetition) along
  the grid, the unsteered generations shared by every spec;
- :class:`CostOptions`: what the cost is measured on;
- :func:`answer_rows`: behaviour, the greedy answers to every prompt of a table under a spec along
  the grid, classified as refusal or not (one row per prompt and lambda, :data:`ANSWER_COLUMNS`).

Each spec arrives bound (vectors at its injection blocks) and carries the operator and options,
so a sweep and its cost always steer the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftlib.core.artifacts import read_table
from driftlib.core.layerspec import resolve_layers
from driftlib.datasets.neutral import neutral_texts
from driftlib.steer.capability import greedy_continuations, greedy_runs, next_token_kl, repetition_rate
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import sweep_hidden_states

logger = logging.getLogger(__name__)

__all__ = ["ANSWER_COLUMNS", "CostOptions", "ReadOut", "UNMEASURED_REPETITION", "answer_rows", "cost_rows",
           "sweep_file", "sweep_specs"]

#: one row per prompt and lambda (Parquet): who answered, under which steering, to what, and the verdict
ANSWER_COLUMNS = ["model", "variant", "operator", "lam", "id", "axiom", "safety_label", "text", "refused"]

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
        render: ``raw`` or ``chat`` (:func:`driftlib.model.render.format_prompts`).
    """

    measure: tuple[int | float, ...]
    pooling: str = "mean"
    skip_first: bool = True
    max_length: int = 256
    render: str = "raw"


def sweep_file(model: Any, tokenizer: Any, texts: str | Path, named: Mapping[str, SteeringSpec],
               lambdas: Sequence[float], read: ReadOut, *, batch_size: int, name: str, source: str, seed: int,
               template: Any = None) -> tuple[dict[str, np.ndarray], list[int], dict[str, Any]]:
    """Sweep every named spec over ``lambdas`` on the prompts of ``texts`` (a ``prepare_prompts`` table),
    read as ``read.render`` says (``template``: the tokenizer whose chat template renders them).

    The specs are swept together (:func:`sweep_specs`): per batch, the blocks below each spec's
    first injection block run once for every spec and lambda, and λ = 0 (unsteered for every spec)
    runs once.

    Returns:
        ``({name: [n_lambdas, n, n_measure, d]}, measurement blocks, metadata)``.
    """
    from driftlib.model.layers import num_layers
    from driftlib.model.render import format_prompts

    texts_df, texts_meta = read_table(texts, columns=["id", "text"], producer="prepare_prompts")
    measure = resolve_layers(list(read.measure), num_layers(model), key="steering.measure_layers")
    rows = format_prompts(tokenizer, texts_df["text"].tolist(), read.render, template_tokenizer=template)
    out = sweep_specs(model, tokenizer, rows, named, lambdas, measure, pooling=read.pooling,
                      skip_first=read.skip_first, batch_size=batch_size, max_length=read.max_length, model_name=name)
    first = next(iter(named.values()))
    meta = {"model": name, "model_source": source, "lambdas": list(lambdas), "measure_layers": measure,
            "pooling": read.pooling, "render": read.render, "preserve_norm": first.preserve_norm, "operator": first.operator,
            "seed": seed, "n_rows": len(rows), "vectors": list(named),
            "dataset_fingerprint": texts_meta.get("dataset_fingerprint", "")}
    return out, measure, meta


def sweep_specs(model: Any, tokenizer: Any, texts: Sequence[str], named: Mapping[str, SteeringSpec],
                lambdas: Sequence[float], measure: Sequence[int | float], *, pooling: str = "mean",
                skip_first: bool = True, batch_size: int = 16, max_length: int | None = 256,
                model_name: str | None = None) -> dict[str, np.ndarray]:
    """Pooled block outputs of ``texts`` under every named spec at every lambda, in one pass over the batches.

    Per batch (the padded batches of :func:`driftlib.steer.sweep.sweep_hidden_states`, longest
    text first), one unsteered forward pass records the output of the block before each spec's
    first block (:attr:`~driftlib.steer.spec.SteeringSpec.first_block`; specs need not share it)
    and, when the grid holds λ = 0, the measurement blocks: λ = 0 leaves every block output
    bit-identical (:func:`driftlib.steer.hooks.steer`), so it is the unsteered state for every spec.
    Each (spec, λ ≠ 0) then runs only its blocks from its first block on, replayed from the
    recorded state (:func:`driftlib.steer.sweep.replay_prefix`), up to the deepest measurement block.
    For ``S`` specs sharing first block ``k``, ``J`` lambdas (one of them 0) and deepest
    measurement block ``m``, a batch costs ``(m + 1) + S·(J - 1)·(m - k + 1)`` block passes
    instead of ``S·(k + J·(m - k + 1))`` with one sweep per spec. The specs are not stacked into
    the batch dimension: each (spec, λ) is its own suffix pass under
    :func:`~driftlib.steer.hooks.steer`, the one definition of steering.

    Args:
        model, tokenizer: the model steered and its tokenizer.
        texts: ``n`` strings.
        named: ``{name: bound SteeringSpec}`` (vectors at its injection blocks, operator, options).
        lambdas: the strengths, in the order of each result's axis 0.
        measure: measurement blocks (indices or relative depths), each after every injection block.
        pooling, skip_first, batch_size, max_length: as in
            :func:`driftlib.steer.sweep.sweep_hidden_states`.
        model_name: named in errors.

    Returns:
        ``{name: np.ndarray [len(lambdas), n, len(measure), d]}`` float32, equal to float tolerance
        to ``sweep_hidden_states(model, tokenizer, texts, named[name], lambdas, measure, ...)``.

    Raises:
        ConfigError, DataError, ModelError, NumericsError: as
            :func:`~driftlib.steer.sweep.sweep_hidden_states` (every spec is checked by it first).
    """
    import contextlib

    import torch

    from driftlib.core.errors import ConfigError, ModelError
    from driftlib.model.forward import (
        BatchRunner,
        StopForward,
        block_hooks,
        build_batch,
        raise_non_finite,
        run_batches,
    )
    from driftlib.model.layers import find_decoder_layers, hidden_size
    from driftlib.stats.selection import check_lambdas
    from driftlib.steer.hooks import steer
    from driftlib.steer.sweep import (
        TextBatches,
        check_texts,
        check_vectors,
        display_name,
        eval_mode,
        record_output,
        replay_prefix,
    )

    if not named:
        raise ConfigError("sweep: no steering specs given")
    common = {"pooling": pooling, "skip_first": skip_first, "batch_size": batch_size, "max_length": max_length,
              "progress": False}
    n_blocks, hidden = len(find_decoder_layers(model)), hidden_size(model)
    specs: dict[str, SteeringSpec] = {}
    for key, spec in named.items():
        # every check of a one-spec sweep (vectors, options, measurement after injection), on no texts
        sweep_hidden_states(model, tokenizer, [], spec, lambdas, measure, model_name=model_name, **common)
        specs[key] = spec.with_vectors(check_vectors(spec.vectors, n_blocks, hidden))
    texts = check_texts(texts)
    lams = check_lambdas(lambdas)
    layers = resolve_layers(measure, n_blocks, key="measure_layers")
    deepest, name = layers[-1], display_name(model, model_name)
    if not texts:
        return {key: np.empty((len(lams), 0, len(layers), hidden), dtype=np.float32) for key in specs}
    firsts = sorted({spec.first_block for spec in specs.values()})
    zero = lams.index(0.0) if 0.0 in lams else None
    batches = TextBatches(model, tokenizer, texts, max_length, "left")
    out = {key: np.empty((len(lams), len(texts), len(layers), hidden), dtype=np.float32) for key in specs}

    def run(kwargs: dict[str, object]) -> None:
        try:
            model(**kwargs)
        except StopForward:
            pass

    def run_batch(rows: list[list[int]]) -> tuple[list[int], torch.Tensor]:
        batch = build_batch(batches.ids, rows, batches.pad_id, packed=False, skip_first=skip_first).to(batches.device)
        kwargs = batch.forward_kwargs(batches.named_args)
        pooled: dict[int, torch.Tensor] = {}

        def on_output(layer: int, state: torch.Tensor) -> None:
            pooled[layer] = batch.pool(state, pooling)

        def states() -> torch.Tensor:
            missing = [layer for layer in layers if layer not in pooled]
            if missing:
                raise ModelError(f"the forward pass of {name} finished without running decoder block(s) {missing}")
            return torch.stack([pooled[layer] for layer in layers], dim=1)  # [b, M, d]

        # the unsteered pass: the prefix of every first block, and lambda 0
        stores: dict[int, list[object]] = {}
        recorded = [first for first in firsts if first > 0]
        if zero is not None or recorded:
            with contextlib.ExitStack() as stack:
                for first in recorded:
                    stop = zero is None and first == recorded[-1]
                    stores[first] = stack.enter_context(record_output(model, first - 1, stop=stop))
                if zero is not None:
                    stack.enter_context(block_hooks(model, layers, on_output, stop_after=deepest))
                run(kwargs)
        for first, store in stores.items():
            if not store:
                raise ModelError(f"the forward pass of {name} finished without running decoder block {first - 1}")
        unsteered = states() if zero is not None else None
        results = []
        for spec in specs.values():
            per_lam = []
            for lam in lams:
                if lam == 0.0:
                    per_lam.append(unsteered)
                    continue
                pooled.clear()
                first = spec.first_block
                with (
                    steer(model, spec, lam),
                    replay_prefix(model, first, stores[first][0] if first > 0 else None),
                    block_hooks(model, layers, on_output, stop_after=deepest),
                ):
                    run(kwargs)
                per_lam.append(states())
            results.append(torch.stack(per_lam))  # [J, b, M, d]
        return batch.texts, torch.stack(results).to("cpu", torch.float32)  # [S, J, b, M, d]

    with eval_mode(model), torch.inference_mode():
        runner = BatchRunner([len(seq) for seq in batches.ids], batches.order, batch_size=batch_size,
                             tokens_per_batch=None, packing=False)
        for done, block in run_batches(runner, run_batch, what=f"sweeping {name}"):
            array = block.numpy()
            for s, key in enumerate(specs):
                for j, lam in enumerate(lams):
                    bad = ~np.isfinite(array[s, j]).all(axis=2)
                    if bad.any():
                        raise_non_finite(bad, done, layers, f"{name} ({key}) at lambda {lam}", model)
                out[key][:, done] = array[s]
    logger.info("swept %d specs x %d lambdas on %s: measurement blocks %s, unsteered prefix once per batch "
                "(first blocks %s)", len(specs), len(lams), name, layers, firsts)
    return out


def cost_rows(model: Any, tokenizer: Any, named: Mapping[str, SteeringSpec], lambdas: Sequence[float],
              cost: CostOptions, *, batch_size: int) -> list[dict[str, Any]]:
    """Capability cost (next-token KL, repetition of greedy generations) of each named spec per lambda,
    one row per (spec, lambda) with ``cost_note`` saying why a cost is NaN ("" when measured).

    λ = 0 leaves every block output bit-identical (:func:`driftlib.steer.hooks.steer`): its KL is 0
    (what :func:`~driftlib.steer.capability.next_token_kl` returns there) and its greedy
    continuations are the unsteered ones, generated once for every spec. Every (spec, λ) generates
    in the same :func:`~driftlib.steer.capability.greedy_runs` call, stacked in the batch dimension.
    """
    texts, prompts = cost.texts()
    lams = [float(lam) for lam in lambdas]
    steered = [lam for lam in lams if lam != 0.0]
    runs: list[SteeringSpec | None] = [None] if len(steered) < len(lams) else []
    for spec in named.values():
        runs.extend(spec.with_lam(lam) for lam in steered)
    rates = iter([repetition_rate(c) for c in greedy_runs(model, tokenizer, prompts, runs, batch_size=batch_size,
                                                          max_new_tokens=cost.max_new_tokens)])
    rep0 = next(rates) if len(steered) < len(lams) else None
    rows = []
    for key, spec in named.items():
        kl = dict(zip(steered, next_token_kl(model, tokenizer, texts, spec, steered, batch_size=batch_size))) \
            if steered else {}
        rep = {lam: next(rates) for lam in steered}
        for lam in lams:
            k, r = (kl[lam], rep[lam]) if lam != 0.0 else (0.0, rep0)
            rows.append({"vector": key, "lam": lam, "kl": float(k), "repetition": float(r),
                         "cost_note": "" if np.isfinite(r) else UNMEASURED_REPETITION.format(n=cost.max_new_tokens)})
    return rows


def answer_rows(model: Any, tokenizer: Any, prompts: Any, spec: SteeringSpec | None, lambdas: Sequence[float], *,
                name: str, variant: str, max_new_tokens: int, batch_size: int, max_length: int,
                template: Any = None, classifier: Any = None) -> Any:
    """Greedy answers to every prompt of ``prompts`` under ``spec`` at each lambda, classified.

    Args:
        model, tokenizer: the model that answers.
        prompts: a ``prepare_prompts`` frame (``id, axiom, safety_label, text``), ``n`` rows.
        spec: the steering (bound), or None for the unsteered model (then ``lambdas`` is ``[0]``).
        lambdas: the strengths.
        name, variant: the model key and variant (recorded in every row).
        max_new_tokens, batch_size, max_length: generation settings
            (:func:`driftlib.steer.capability.greedy_continuations`).
        template: the tokenizer whose chat template renders the prompts (the aligned variant's; None:
            the model's own). Answers are always read in chat form (:func:`driftlib.model.render.format_prompts`).
        classifier: a callable ``list[str] -> list[bool]`` (default
            :class:`driftlib.stats.behaviour.StringMatchClassifier`).

    Returns:
        A frame with :data:`ANSWER_COLUMNS`, ``len(lambdas) * n`` rows, lambda-major.
    """
    import pandas as pd

    from driftlib.model.render import format_prompts
    from driftlib.stats.behaviour import StringMatchClassifier
    from driftlib.steer.capability import greedy_continuations

    classify = classifier or StringMatchClassifier()
    texts = format_prompts(tokenizer, prompts["text"].tolist(), "chat", template_tokenizer=template)
    frames = []
    for lam in lambdas:
        ids = greedy_continuations(model, tokenizer, texts, spec, float(lam) if spec is not None else 0.0,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, max_length=max_length)
        answers = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
        frames.append(pd.DataFrame({
            "model": name, "variant": variant, "operator": spec.operator if spec is not None else "none",
            "lam": float(lam), "id": prompts["id"].astype(str).to_numpy(), "axiom": prompts["axiom"].to_numpy(),
            "safety_label": prompts["safety_label"].to_numpy(), "text": answers,
            "refused": [bool(r) for r in classify(answers)]}, columns=ANSWER_COLUMNS))
    return pd.concat(frames, ignore_index=True)
