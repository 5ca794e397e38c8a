"""Phase 5's measurement (model code): an agent's hidden states on the evaluation prompts alone,
after a collaboration transcript and after its solo control, and on its own turns round by round;
and its behaviour: greedy answers to the same prompts in the same three conditions.

The conditions, the length matching and the pooled span are defined in :mod:`driftlib.phases.collaboration.evaluate`'s
docstring (and docs/collaboration.md); :func:`measure_agent` is the ``collab_states`` rule.

Behaviour (:func:`answer_prompts`): the agent answers each prompt greedily from exactly the token ids
whose hidden states are read (context + the prompt's user turn + the generation prompt, under its
posture), up to ``behaviour.max_new_tokens`` tokens; the answer is decoded (special tokens dropped,
stripped) and classified by :class:`driftlib.stats.behaviour.StringMatchClassifier` (or another
:class:`~driftlib.stats.behaviour.Classifier`). One row per prompt and condition,
:data:`ANSWER_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.errors import DataError
from driftlib.core.layerspec import resolve_layers
from driftlib.model.forward import extract_hidden_states
from driftlib.model.layers import num_layers
from driftlib.phases.collaboration.protocol import (
    greedy_ids,
    render_ids,
    truncate_left,
    view_messages,
)
from driftlib.phases.collaboration.transcripts import transcript_keys, turns_of
from driftlib.steer.capability import next_token_kl
from driftlib.steer.runs import ANSWER_COLUMNS as STEER_ANSWER_COLUMNS

__all__ = ["ANSWER_COLUMNS", "CONDITIONS", "measurement_inputs", "round_inputs", "answer_prompts", "measure_agent"]

#: the three ways an agent reads an evaluation prompt
CONDITIONS = ("solo", "collab", "control")
#: phase 5's answers table: :data:`driftlib.steer.runs.ANSWER_COLUMNS` (``variant``: ``aligned`` or
#: ``dealigned<N>``), the agent's name and the condition
ANSWER_COLUMNS = [*STEER_ANSWER_COLUMNS, "agent", "condition"]


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _until_own_last(turns: list[tuple[str, str]], agent: str) -> list[tuple[str, str]]:
    last = max((i for i, (s, _) in enumerate(turns) if s == agent), default=-1)
    return turns[: last + 1]


def _split_prompt(tokenizer: Any, context: list[dict], prompt: str,
                  head: list[int] | None = None) -> tuple[list[int], list[int]]:
    """``(context ids, prompt ids)``: the rendering of ``context + [user: prompt]`` with the generation
    prompt, split where it stops agreeing with the rendering of the context alone (``head``, when
    the caller has it already)."""
    full = render_ids(tokenizer, context + [{"role": "user", "content": prompt}], generation_prompt=True)
    if head is None:
        head = render_ids(tokenizer, context, generation_prompt=False) if context else _leading_bos(tokenizer, full)
    cut = _lcp(full, head)
    if cut >= len(full):
        raise DataError(f"the chat template renders prompt {prompt[:60]!r} to no tokens of its own")
    return full[:cut], full[cut:]


def _leading_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return ids[:1] if bos is not None and ids and ids[0] == bos else []


def _contexts(tokenizer: Any, tasks: dict[str, str], transcripts: pd.DataFrame, agent: str, team: Sequence[str],
              key: tuple[str, int]) -> dict[str, tuple[list[dict], list[int]]]:
    """The collab and control contexts of one transcript key: ``{cond: (messages, rendered ids)}``,
    built once per key (every prompt that reads the key shares them)."""
    task, seed = key
    if task not in tasks:
        raise DataError(f"transcripts: task {task!r} is not in the task file")
    collab = turns_of(transcripts, "collab", "", task, seed)
    control = turns_of(transcripts, "solo", agent, task, seed, max_turns=len(collab))
    if len(control) < len(collab):
        raise DataError(f"transcripts: {agent}'s solo run on {task} (seed {seed}) has {len(control)} turns, "
                        f"the collaboration {len(collab)}; re-run the solo run with at least as many turns")
    views = {"collab": view_messages(tasks[task], _until_own_last(collab, agent), agent, team),
             "control": view_messages(tasks[task], control, agent, [agent])}
    return {c: (msgs, render_ids(tokenizer, msgs, generation_prompt=False)) for c, msgs in views.items()}


def measurement_inputs(
    tokenizer: Any, prompts: Sequence[str], tasks: dict[str, str], transcripts: pd.DataFrame, agent: str,
    team: Sequence[str], *, context_tokens: int,
) -> dict[str, Any]:
    """Token ids and pooled-span lengths of every prompt in the three conditions.

    Returns ``{"solo"|"collab"|"control": (ids [n lists], spans [n])}``, ``"context_tokens"``:
    the matched context length per prompt ``[n]``, and ``"keys"``: the transcript keys.
    """
    keys = transcript_keys(transcripts)
    bos = getattr(tokenizer, "bos_token_id", None)
    contexts = {key: _contexts(tokenizer, tasks, transcripts, agent, team, key) for key in keys}
    out: dict[str, Any] = {c: ([], []) for c in CONDITIONS}
    matched = []
    for i, prompt in enumerate(prompts):
        ctx0, tail = _split_prompt(tokenizer, [], prompt)
        out["solo"][0].append(ctx0 + tail)
        out["solo"][1].append(len(tail))
        split = {c: _split_prompt(tokenizer, msgs, prompt, head)
                 for c, (msgs, head) in contexts[keys[i % len(keys)]].items()}
        room = context_tokens - max(len(t) for _, t in split.values())
        if room < 2:
            raise DataError(f"prompt {i} alone takes {context_tokens - room} tokens; raise collaboration.context_tokens")
        m = min(room, *(len(ctx) for ctx, _ in split.values()))
        for c, (ctx, t) in split.items():
            out[c][0].append(truncate_left(ctx, m, bos) + t)
            out[c][1].append(len(t))
        matched.append(m)
    out["context_tokens"] = np.asarray(matched, dtype=np.int64)
    out["keys"] = keys
    return out


def round_inputs(
    tokenizer: Any, tasks: dict[str, str], transcripts: pd.DataFrame, agent: str, team: Sequence[str], rounds: int,
    *, context_tokens: int,
) -> dict[str, tuple[list[list[list[int]]], list[list[int]]]]:
    """Per condition (``collab``, ``control``) and round ``r = 1..rounds``, for every transcript key:
    the ids up to and including the agent's last turn of round ``r`` and the length of that turn's
    span. Returns ``{cond: (ids [rounds][T], spans [rounds][T])}``."""
    keys = transcript_keys(transcripts)
    bos = getattr(tokenizer, "bos_token_id", None)
    out: dict[str, tuple[list, list]] = {}
    for cond in ("collab", "control"):
        ids_r, spans_r = [], []
        for r in range(1, rounds + 1):
            ids_k, spans_k = [], []
            for task, seed in keys:
                if cond == "collab":
                    turns, members = turns_of(transcripts, "collab", "", task, seed, max_round=r), team
                else:  # alone, the agent's first r * len(team) turns match the collaboration's first r rounds
                    turns, members = turns_of(transcripts, "solo", agent, task, seed, max_turns=r * len(team)), [agent]
                turns = _until_own_last(turns, agent)
                if not turns:
                    raise DataError(f"transcript {task}/{seed}: {agent} has no turn by round {r}")
                msgs = view_messages(tasks[task], turns, agent, members)
                full = render_ids(tokenizer, msgs, generation_prompt=False)
                before = render_ids(tokenizer, msgs[:-1], generation_prompt=True)
                span = max(1, len(full) - _lcp(full, before))
                span = min(span, context_tokens - 1)
                ids_k.append(truncate_left(full, context_tokens, bos))
                spans_k.append(span)
            ids_r.append(ids_k)
            spans_r.append(spans_k)
        out[cond] = (ids_r, spans_r)
    return out


def answer_prompts(agent: Any, inputs: dict[str, Any], prompts: pd.DataFrame, *, max_new_tokens: int,
                   batch_size: int = 8, classifier: Any = None, model: str = "", variant: str = "aligned") -> pd.DataFrame:
    """Greedy answers of ``agent`` (under its posture) to every prompt in every condition, classified.

    Args:
        agent: a :class:`~driftlib.phases.collaboration.protocol.Agent`.
        inputs: :func:`measurement_inputs` of the prompts (the ids read for the hidden states).
        prompts: the prompts frame (``id, axiom, safety_label``), ``n`` rows in the order of ``inputs``.
        max_new_tokens: the longest answer (config ``behaviour.max_new_tokens``).
        batch_size: inputs per ``generate`` call.
        classifier: ``list[str] -> list[bool]`` (True: a refusal); default
            :class:`driftlib.stats.behaviour.StringMatchClassifier`.
        model, variant: recorded in every row (the model key; ``aligned`` or ``dealigned<N>``).

    Returns:
        :data:`ANSWER_COLUMNS`, ``3 n`` rows: condition-major (:data:`CONDITIONS`), prompts in order.
    """
    from driftlib.stats.behaviour import StringMatchClassifier

    classify = classifier or StringMatchClassifier()
    frames = []
    for cond in CONDITIONS:
        ids = greedy_ids(agent, inputs[cond][0], max_new_tokens=max_new_tokens, batch_size=batch_size)
        texts = [agent.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
        frames.append(pd.DataFrame({
            "model": model, "variant": variant, "operator": agent.steering.operator if agent.steered else "none",
            "lam": float(agent.lam), "id": prompts["id"].astype(str).to_numpy(), "axiom": prompts["axiom"].to_numpy(),
            "safety_label": prompts["safety_label"].to_numpy(), "text": texts,
            "refused": [bool(r) for r in classify(texts)], "agent": agent.name, "condition": cond},
            columns=ANSWER_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def measure_agent(
    agent: Any,
    transcripts: pd.DataFrame,
    tasks: pd.DataFrame,
    prompts: pd.DataFrame,
    *,
    team: Sequence[str],
    layers: Sequence[int | float],
    rounds: int,
    pooling: str = "mean",
    context_tokens: int = 2048,
    batch_size: int = 8,
    neutral: Sequence[str] = (),
    answer_tokens: int | None = None,
    answer_labels: dict[str, str] | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any], pd.DataFrame | None]:
    """Hidden states of one agent (an :class:`~driftlib.phases.collaboration.protocol.Agent`, steered by its
    posture), and its answers when ``answer_tokens`` is given.

    Returns ``(arrays, metadata, answers)``: ``solo``, ``collab``, ``control`` ``[n, L, d]`` (prompts in the
    order of ``prompts``), ``rounds_collab``, ``rounds_control`` ``[rounds, T, L, d]``,
    ``context_tokens [n]``; metadata: ``layers`` (resolved), ``keys``, ``kl`` (mean next-token KL of
    the agent's posture from the unsteered agent on ``neutral``; 0 when not steered); answers:
    :func:`answer_prompts` with ``answer_tokens`` new tokens at most (``answer_labels``: its ``model``
    and ``variant``), or None.
    """
    depth = num_layers(agent.model)
    resolved = resolve_layers(list(layers), depth, key="steering.measure_layers")
    task_text = dict(zip(tasks["id"].astype(str), tasks["prompt"], strict=True))
    inputs = measurement_inputs(agent.tokenizer, list(prompts["text"]), task_text, transcripts, agent.name, team,
                                context_tokens=context_tokens)
    per_round = round_inputs(agent.tokenizer, task_text, transcripts, agent.name, team, rounds,
                             context_tokens=context_tokens)

    def states(ids: list[list[int]], spans: list[int], how: str) -> np.ndarray:
        return extract_hidden_states(agent.model, agent.tokenizer, ids, resolved, pooling=how, skip_first=False,
                                     batch_size=batch_size, max_length=None, pool_last=spans, progress=progress,
                                     model_name=agent.name)

    arrays: dict[str, np.ndarray] = {}
    with agent.posture():
        for cond in CONDITIONS:
            ids, spans = inputs[cond]
            arrays[cond] = states(ids, spans, pooling)
        for cond, (ids_r, spans_r) in per_round.items():
            flat_ids = [x for row in ids_r for x in row]
            flat_spans = [x for row in spans_r for x in row]
            h = states(flat_ids, flat_spans, "mean")
            arrays[f"rounds_{cond}"] = h.reshape(rounds, len(ids_r[0]), *h.shape[1:])
    arrays["context_tokens"] = inputs["context_tokens"]
    kl = 0.0
    if agent.steered and neutral:
        kl = float(next_token_kl(agent.model, agent.tokenizer, list(neutral), agent.steering, [agent.lam],
                                 batch_size=batch_size, progress=progress)[0])
    answers = None
    if answer_tokens is not None:
        answers = answer_prompts(agent, inputs, prompts, max_new_tokens=answer_tokens, batch_size=batch_size,
                                 **(answer_labels or {}))
    meta = {"layers": resolved, "keys": [list(k) for k in inputs["keys"]], "kl": kl, "agent": agent.name,
            "lam": float(agent.lam), "team": list(team), "rounds": int(rounds), "n_prompts": len(prompts),
            "operator": agent.steering.operator if agent.steered else "none",
            "inject_blocks": list(agent.steering.blocks) if agent.steered else []}
    return arrays, meta, answers
