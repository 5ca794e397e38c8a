"""What steering costs the model.

Two costs are measured for every steered evaluation (design.md, "Capability cost and the best
lambda"):

- :func:`next_token_kl`: how far steering moves the next-token distributions on held-out neutral
  text, ``KL(p_unsteered || p_steered)`` averaged over real token positions;
- :func:`greedy_repetition`: how repetitive greedy continuations become under steering
  (:func:`repetition_rate` of the generated tokens), the usual first symptom of over-steering.

:func:`driftlib.stats.selection.best_lambda` then picks the lambda with the highest AQI among those
whose cost stays inside the configured bound. An AQI gain outside the bound is reported, never
called a success.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from driftlib.core.errors import ConfigError, ModelError, NumericsError
from driftlib.model.forward import BatchRunner, run_batches
from driftlib.model.layers import find_decoder_layers, hidden_size
from driftlib.stats.selection import check_lambdas
from driftlib.steer.hooks import steer, steer_rows
from driftlib.steer.spec import SteeringSpec, as_spec
from driftlib.steer.sweep import (
    TextBatches,
    check_common,
    check_texts,
    check_vectors,
    display_name,
    eval_mode,
    record_output,
    replay_prefix,
)


__all__ = ["eos_ids", "greedy_continuations", "greedy_repetition", "greedy_runs", "next_token_kl", "repetition_rate"]


def _logits(output: object, name: str) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ModelError(f"{name} returned no logits [b, t, vocab]; next_token_kl needs a causal LM (…ForCausalLM), not a bare base model")
    return logits


def next_token_kl(
    model: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    steering: SteeringSpec | Mapping[int, Any],
    lambdas: Sequence[float],
    *,
    batch_size: int = 8,
    max_length: int | None = 128,
    truncation_side: str = "left",
    progress: bool = True,
    model_name: str | None = None,
) -> np.ndarray:
    """Mean KL divergence of the next-token distributions from the unsteered model, per lambda.

    For every real (non-pad) position ``i`` of every text, ``p_i`` is the unsteered model's
    next-token distribution after tokens ``..i`` and ``q_i`` the one under
    ``steer(model, steering, lam)``; the cost is ``KL(p_i || q_i) = sum_v p_i(v) (log p_i(v) - log q_i(v))``
    in nats, averaged over *all real positions of all texts together* (a token-weighted mean: a
    long text counts more than a short one). Every real position counts, the first (BOS) and the
    last (whose prediction runs past the text) included. ``lambda = 0`` gives exactly 0.

    Args:
        model: a causal LM (needs logits).
        tokenizer: its tokenizer (not modified).
        texts: held-out neutral texts.
        steering: a bound :class:`~driftlib.steer.spec.SteeringSpec` (vectors, operator, options;
            its λ is ignored), or ``{block: v [d]}``, as for :func:`driftlib.steer.hooks.steer`.
        lambdas: steering strengths.
        batch_size, max_length, truncation_side: batching as in
            :func:`driftlib.model.forward.extract_hidden_states` (longest first, left padding).
        progress: a tqdm bar over texts.
        model_name: named in errors and on the bar.

    Returns:
        ``np.ndarray [len(lambdas)]`` float64, in nats.

    The unsteered logits are computed once per batch, in the same pass that records the output of
    the block before the first injection block; each lambda then reruns only the blocks from the
    first injection block on (:func:`driftlib.steer.sweep.replay_prefix`), plus the final norm and the LM
    head. Log-softmaxes are taken in float32.
    """
    check_common(batch_size, max_length, truncation_side)
    texts = check_texts(texts)
    lams = check_lambdas(lambdas)
    n_blocks = len(find_decoder_layers(model))
    spec = as_spec(steering)
    vecs = check_vectors(spec.vectors, n_blocks, hidden_size(model))
    spec = spec.with_vectors(vecs)
    first = spec.first_block
    name = display_name(model, model_name)
    if not texts:
        raise ConfigError("texts: next_token_kl needs at least one neutral text")
    batches = TextBatches(model, tokenizer, texts, max_length, truncation_side)

    def run_batch(plan_rows: list[list[int]]) -> tuple[np.ndarray, int, int]:
        rows = [text for row in plan_rows for text in row]
        kwargs, mask = batches.inputs(rows)
        real = mask.bool()
        cached: object = None
        if first > 0:
            with record_output(model, first - 1, stop=False) as store:
                base = _logits(model(**kwargs), name)
            cached = store[0]
        else:
            base = _logits(model(**kwargs), name)
        logp = torch.log_softmax(base[real].float(), dim=-1)  # [N, V]
        del base
        p = logp.exp()
        sums = np.zeros(len(lams), dtype=np.float64)
        for j, lam in enumerate(lams):
            with steer(model, spec, lam), replay_prefix(model, first, cached):
                steered = _logits(model(**kwargs), name)
            logq = torch.log_softmax(steered[real].float(), dim=-1)
            del steered
            terms = torch.where(p > 0, p * (logp - logq), torch.zeros((), device=p.device))
            kl = terms.sum(dim=-1)  # [N]
            if not bool(torch.isfinite(kl).all()):
                raise NumericsError(
                    f"next_token_kl: NaN/Inf in the KL of {name} at lambda {lam} (text rows {sorted(rows)}); "
                    "the steered logits overflowed: use a smaller lambda or a float32 model"
                )
            sums[j] = float(kl.double().sum())
        return sums, int(real.sum()), len(rows)

    totals = np.zeros(len(lams), dtype=np.float64)
    count = 0
    runner = BatchRunner([len(seq) for seq in batches.ids], batches.order, batch_size=batch_size,
                         tokens_per_batch=None, packing=False)
    with (
        eval_mode(model),
        torch.inference_mode(),
        tqdm(total=len(texts), desc=f"next-token KL {name}", unit="text", disable=not progress, leave=False) as bar,
    ):
        for sums, real, done in run_batches(runner, run_batch, what=f"computing the next-token KL of {name}"):
            totals += sums
            count += real
            bar.update(done)
    return totals / count


def repetition_rate(token_ids: Sequence[Sequence[int]], n: int = 3) -> float:
    """Share of n-grams in generated continuations that repeat an earlier n-gram of the same continuation.

    Each continuation ``s`` of length ``L`` has ``L - n + 1`` n-grams ``s[i:i+n]``; one *repeats*
    when the same n-gram starts at an earlier position ``j < i`` of the same continuation (overlaps
    count: in ``a a a a`` with ``n = 2`` the 2nd and 3rd bigram repeat the 1st). The rate is
    ``(repeating n-grams) / (all n-grams)``, pooled over the continuations (a longer continuation
    weighs more). It is 0 when every n-gram of every continuation is distinct and tends to 1 for a
    loop (a continuation cycling with period ``P`` has ``L - n + 1 - P`` repeats out of ``L - n + 1``).
    Continuations shorter than ``n`` contribute no n-grams; when no continuation has one the rate
    is undefined and NaN is returned.

    Args:
        token_ids: continuations, each a sequence of token ids (only the generated tokens).
        n: n-gram order, ``>= 1``.

    Returns:
        A float in ``[0, 1]``, or NaN when there is no n-gram at all.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"repetition n: {n!r}; use a positive integer")
    total = 0
    repeats = 0
    for seq in token_ids:
        tokens = [int(t) for t in seq]
        seen: set[tuple[int, ...]] = set()
        for i in range(len(tokens) - n + 1):
            gram = tuple(tokens[i : i + n])
            total += 1
            if gram in seen:
                repeats += 1
            else:
                seen.add(gram)
    return repeats / total if total else math.nan


def eos_ids(tokenizer: object, model: torch.nn.Module) -> list[int]:
    value = getattr(tokenizer, "eos_token_id", None)
    if value is None:
        value = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def greedy_continuations(
    model: torch.nn.Module,
    tokenizer: object,
    prompts: Sequence[str],
    steering: SteeringSpec | Mapping[int, Any] | None,
    lam: float,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    max_length: int | None = 256,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` under ``steer(model, steering, lam)`` (unsteered when
    ``steering`` is None): one list of generated token ids per prompt, in prompt order, cut before
    the first end-of-sequence token (which is not included).

    Prompts are left-padded in batches (longest first), truncated from the left to ``max_length``;
    ``generate()`` runs with ``do_sample=False``, ``num_beams=1`` and the KV cache. The operator
    acts at every position, prompt and generated tokens alike. :func:`greedy_runs` with one run.
    """
    spec = None if steering is None else as_spec(steering, lam)
    return greedy_runs(model, tokenizer, prompts, [spec], max_new_tokens=max_new_tokens, batch_size=batch_size,
                       max_length=max_length)[0]


def greedy_runs(
    model: torch.nn.Module,
    tokenizer: object,
    prompts: Sequence[str],
    runs: Sequence[SteeringSpec | None],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    max_length: int | None = 256,
    progress: bool = False,
) -> list[list[list[int]]]:
    """Greedy continuations of ``prompts`` under each run: ``runs[i]`` is a bound spec at its own λ
    (:func:`~driftlib.steer.spec.SteeringSpec.with_lam`), or None for the unsteered model.

    The prompts are batched as :func:`greedy_continuations` batches them (longest first, left
    padding, at most ``batch_size`` prompts); a batch of ``b`` prompts is repeated for
    ``max(1, batch_size // b)`` runs at a time, stacked in the batch dimension under
    :func:`driftlib.steer.hooks.steer_rows`, so every run sees the same padded inputs as alone and
    one ``generate()`` call serves several runs. Greedy decoding of small batches is bound by the
    per-step cost of ``generate()``: a cost measurement (8 prompts, many spec and λ runs) takes a
    few calls instead of one per run.

    Args:
        model, tokenizer: the model and its tokenizer.
        prompts: the prompts, each a string.
        runs: one bound spec at its λ (or None) per run.
        max_new_tokens, batch_size, max_length: as for :func:`greedy_continuations`.
        progress: a tqdm bar over the ``generate()`` calls.

    Returns:
        ``[len(runs)][len(prompts)]`` lists of token ids, cut before the first end-of-sequence token.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens: {max_new_tokens!r}; use a positive integer")
    check_common(batch_size, max_length, "left")
    prompts = check_texts(prompts, "prompts")
    runs = list(runs)
    out: list[list[list[int]]] = [[[] for _ in prompts] for _ in runs]
    if not prompts or not runs:
        return out
    batches = TextBatches(model, tokenizer, prompts, max_length, "left", "prompts")
    eos = eos_ids(tokenizer, model)
    starts = range(0, len(prompts), batch_size)
    calls = sum(-(-len(runs) // max(1, batch_size // len(batches.order[i : i + batch_size]))) for i in starts)
    bar = tqdm(total=calls, desc="greedy generation", unit="call", disable=not progress, leave=False)
    with eval_mode(model), torch.inference_mode(), bar:
        for start in starts:
            rows = batches.order[start : start + batch_size]
            kwargs, mask = batches.inputs(rows)
            per_call = max(1, batch_size // len(rows))
            for first in range(0, len(runs), per_call):
                bar.update()
                group = runs[first : first + per_call]
                gen_kwargs: dict[str, Any] = {
                    "input_ids": kwargs["input_ids"].repeat(len(group), 1),
                    "attention_mask": mask.repeat(len(group), 1), "max_new_tokens": max_new_tokens,
                    "do_sample": False, "num_beams": 1, "pad_token_id": batches.pad_id,
                }
                if eos:
                    gen_kwargs["eos_token_id"] = eos
                with steer_rows(model, group, len(rows)):
                    generated = model.generate(**gen_kwargs)
                new = generated[:, mask.shape[1]:].tolist()
                for k in range(len(group)):
                    for row, seq in zip(rows, new[k * len(rows) : (k + 1) * len(rows)], strict=True):
                        cut = next((i for i, t in enumerate(seq) if t in eos), len(seq))
                        out[first + k][row] = seq[:cut]
    return out


def greedy_repetition(
    model: torch.nn.Module,
    tokenizer: object,
    prompts: Sequence[str],
    steering: SteeringSpec | Mapping[int, Any],
    lambdas: Sequence[float],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    n: int = 3,
    max_length: int | None = 256,
    progress: bool = True,
) -> np.ndarray:
    """Repetition of greedy continuations under steering, per lambda.

    For each lambda, :func:`greedy_continuations` of ``prompts`` under ``steer(model, steering, lam)``
    (``max_new_tokens`` new tokens, cut at the first end-of-sequence token), scored with
    :func:`repetition_rate` (n-gram order ``n``) over all continuations together. The lambdas are
    generated together (:func:`greedy_runs`).

    Returns:
        ``np.ndarray [len(lambdas)]`` float64 in ``[0, 1]`` (NaN for a lambda whose continuations
        all end before ``n`` tokens).
    """
    lams = check_lambdas(lambdas)
    spec = as_spec(steering)
    spec = spec.with_vectors(check_vectors(spec.vectors, len(find_decoder_layers(model)), hidden_size(model)))
    runs = greedy_runs(model, tokenizer, prompts, [spec.with_lam(lam) for lam in lams], max_new_tokens=max_new_tokens,
                       batch_size=batch_size, max_length=max_length, progress=progress)
    return np.array([repetition_rate(continuations, n=n) for continuations in runs], dtype=np.float64)


