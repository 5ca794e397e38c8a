"""Phase 5 runs: ``driftlib prepare-tasks``, ``collaborate`` (agents take turns on every task),
``solo`` (one agent alone, the length-matched control), ``collab-states`` (an agent's hidden
states alone, after the collaboration and after its control), ``score-collab`` and
``summarize-collab``.

Each agent's posture is a :class:`~driftlib.steer.spec.SteeringSpec` made from the run's steering
options (``--inject``, ``--operator``, ``--preserve-norm``) and its own λ, so an agent steers
exactly as phase 3's sweeps do. A *dealigned* agent (``KEY@dealigned``, :mod:`driftlib.core.agents`)
is its key's aligned model with phase 4.5's LoRA adapter merged in (``adapter`` in ``--agents``,
``--adapter`` for ``solo`` and ``collab-states``; :func:`driftlib.model.adapters.merge_lora`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftlib.core.artifacts import read_table, save_tensors, write_table
from driftlib.core.errors import ConfigError, DataError

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource
    from driftlib.steer.runs import CostOptions
    from driftlib.steer.spec import SteeringSpec

log = logging.getLogger(__name__)

__all__ = ["agent_specs", "collab_states", "collaborate", "load_agent", "prepare_tasks", "score_collab", "solo",
           "summarize_collab"]


def prepare_tasks(*, source: str, n: int | None, loaded_share: float | None, seed: int, out: str | Path) -> None:
    """The collaboration tasks, sampled from the task file."""
    from driftlib.datasets.tasks import load_tasks, sample_tasks, table_fingerprint

    df, report = load_tasks(source)
    sample = sample_tasks(df, n, seed, loaded_share=loaded_share)
    write_table(sample, out, metadata={"source": source, "n": n, "seed": seed, "loaded_share": loaded_share,
                                       "load": report, "tasks_fingerprint": table_fingerprint(sample)})
    log.info("wrote %d tasks (%d loaded) to %s", len(sample), int(sample["loaded"].sum()), out)


def agent_specs(value: str) -> list[dict[str, Any]]:
    """``--agents``: a JSON list (inline, or a path to a JSON file) of agent objects."""
    try:
        text = Path(value).read_text(encoding="utf-8") if not value.lstrip().startswith("[") else value
    except OSError as exc:
        raise ConfigError(f"--agents: {value!r} is neither a JSON list nor a readable file ({exc.strerror})") from None
    try:
        specs = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--agents: not valid JSON ({exc})") from None
    if not isinstance(specs, list) or not all(isinstance(a, dict) and "name" in a and "model" in a for a in specs):
        raise ConfigError("--agents: give a JSON list of objects with at least 'name' and 'model' "
                          "(optional: vectors, lam, condition, adapter, dtype, device, revision, trust_remote_code)")
    return specs


def load_agent(spec: dict[str, Any], steering: SteeringSpec, *, dtype: str, device: str):
    """An :class:`~driftlib.phases.collaboration.protocol.Agent` from one agent object; its posture
    is ``steering`` bound to its own vectors at λ ``spec['lam']`` (none at λ 0), gated by the agent's
    own ``condition`` (a ``fit-condition`` file) when the object names one. With ``adapter`` (a
    peft LoRA folder, phase 4.5's dealignment adapter), the adapter is merged into the model first."""
    from driftlib.model.adapters import merge_lora
    from driftlib.model.layers import num_layers
    from driftlib.model.source import ModelSource
    from driftlib.phases.collaboration.protocol import Agent
    from driftlib.steer.vectors import load_steering_vectors

    source = ModelSource(spec["model"], revision=spec.get("revision"), dtype=spec.get("dtype") or dtype,
                         device=spec.get("device") or device, trust_remote_code=bool(spec.get("trust_remote_code")))
    model, tokenizer = source.load()
    if spec.get("adapter"):
        model = merge_lora(model, spec["adapter"])
    lam = float(spec.get("lam", 0.0))
    posture = None
    if lam != 0.0:
        if not spec.get("vectors"):
            raise ConfigError(f"agent {spec['name']}: lambda {lam} needs its vectors")
        own = load_steering_vectors(spec["vectors"])
        if spec.get("condition"):
            from driftlib.stats.condition import load_condition

            steering = steering.with_condition(load_condition(spec["condition"])[0])
        posture = steering.bind(own.vectors, num_layers(model), what=f"{spec['vectors']}: {own.kind}").with_lam(lam)
    return Agent(spec["name"], model, tokenizer, posture)


def collaborate(*, agents: str, steering: SteeringSpec, tasks: str | Path, rounds: int, order: str,
                seeds: Sequence[int], max_new_tokens: int, temperature: float, top_p: float, context_tokens: int,
                batch_size: int, dtype: str, device: str, out: str | Path) -> None:
    """The agents of ``--agents`` take turns on every task; the transcripts table."""
    from driftlib.phases.collaboration.protocol import run_collaboration

    table, tasks_meta = read_table(tasks, columns=["id", "prompt"], producer="prepare_tasks")
    specs = agent_specs(agents)
    team = [load_agent(spec, steering, dtype=dtype, device=device) for spec in specs]
    df = run_collaboration(team, table, rounds=rounds, seeds=seeds, order=order, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, context_tokens=context_tokens, batch_size=batch_size)
    meta = {"agents": [{k: v for k, v in s.items() if k != "device"} for s in specs], "rounds": rounds,
            "seeds": list(seeds), "order": order, "max_new_tokens": max_new_tokens, "temperature": temperature,
            "top_p": top_p, "context_tokens": context_tokens, "tasks_fingerprint": tasks_meta.get("tasks_fingerprint"),
            **steering.metadata()}
    write_table(df, out, metadata=meta)
    log.info("wrote %d turns (%d transcripts) to %s", len(df), df.groupby(["run", "agent", "task", "seed"]).ngroups, out)


def _agent(source: ModelSource, name: str, vectors: str | None, lam: float, steering: SteeringSpec,
           adapter: str | None = None):
    spec = {"name": name, "model": source.path, "vectors": vectors, "lam": lam, "revision": source.revision,
            "trust_remote_code": source.trust_remote_code, "adapter": adapter}
    return load_agent(spec, steering, dtype=source.dtype, device=source.device)


def solo(*, source: ModelSource, name: str, vectors: str | None, lam: float, steering: SteeringSpec,
         tasks: str | Path, turns: int, seeds: Sequence[int], max_new_tokens: int, temperature: float, top_p: float,
         context_tokens: int, batch_size: int, out: str | Path, adapter: str | None = None) -> None:
    """One agent alone on every task for ``turns`` turns (the length-matched control)."""
    from driftlib.phases.collaboration.protocol import run_solo

    table, tasks_meta = read_table(tasks, columns=["id", "prompt"], producer="prepare_tasks")
    df = run_solo(_agent(source, name, vectors, lam, steering, adapter), table, turns=turns, seeds=seeds,
                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, context_tokens=context_tokens,
                  batch_size=batch_size)
    meta = {"agent": name, "model": source.path, "adapter": adapter, "lam": lam, "turns": turns, "seeds": list(seeds),
            "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
            "context_tokens": context_tokens, "tasks_fingerprint": tasks_meta.get("tasks_fingerprint"),
            **steering.metadata()}
    write_table(df, out, metadata=meta)
    log.info("wrote %d solo turns of %s to %s", len(df), name, out)


def collab_states(*, source: ModelSource, name: str, vectors: str | None, lam: float, steering: SteeringSpec,
                  tasks: str | Path, team: Sequence[str], transcripts: str | Path, solo: str | Path,
                  prompts: str | Path, measure: Sequence[int | float], pooling: str, cost: CostOptions,
                  context_tokens: int, batch_size: int, out: str | Path, adapter: str | None = None,
                  answers_out: str | Path | None = None, max_new_tokens: int = 24) -> None:
    """The agent's hidden states on every prompt alone, after the collaboration and after its solo run;
    with ``answers_out``, also its greedy answers to the same inputs (at most ``max_new_tokens``)."""
    from driftlib.core.agents import agent_key
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.phases.collaboration.measure import measure_agent

    table, _ = read_table(tasks, columns=["id", "prompt"], producer="prepare_tasks")
    prompts_df, prompts_meta = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    collab, tr_meta = read_table(transcripts, producer="collaborate")
    alone, _ = read_table(solo, producer="solo_run")
    agent = _agent(source, name, vectors, lam, steering, adapter)
    neutral = cost.texts()[0] if agent.steered else []
    labels = {"model": agent_key(name), "variant": "dealigned" if adapter else "aligned"}
    arrays, meta, answers = measure_agent(
        agent, pd.concat([collab, alone], ignore_index=True), table, prompts_df, team=team, layers=measure,
        rounds=int(tr_meta["rounds"]), pooling=pooling, context_tokens=context_tokens, batch_size=batch_size,
        neutral=neutral, answer_tokens=max_new_tokens if answers_out else None, answer_labels=labels)
    meta.update(model=source.path, adapter=adapter, dataset_fingerprint=prompts_meta.get("dataset_fingerprint", ""))
    save_tensors(out, arrays, metadata=meta)
    if answers is not None:
        write_table(answers, answers_out, metadata={"producer": "collab_states", "agent": name, "adapter": adapter,
                                                    "max_new_tokens": max_new_tokens, "classifier": "string_match",
                                                    "dataset_fingerprint": meta["dataset_fingerprint"]})
        log.info("%s: refused %d of %d answers", name, int(answers["refused"].sum()), len(answers))


def score_collab(*, states: str | Path, prompts: str | Path, vectors: str | Path, transcripts: str | Path,
                 tasks: str | Path, pairing: str, profile: str, model_key: str, method: str,
                 pca_components: int | None, bootstrap: int, permutations: int, drift_permutations: int,
                 confidence: float, seed: int, out: str | Path, probe_folds: int = 0,
                 answers: str | Path | None = None, condition: str | Path | None = None,
                 probe_permutations: int = 0) -> None:
    """AQIs (and probe AUCs), the drift with its permutation test and MDE, projection drift, the task
    outcome and, with ``answers``, the refusal rates and the behavioural drift of one agent."""
    from driftlib.phases.collaboration.evaluate import score_agent

    table, _ = read_table(tasks, columns=["id", "rubric"], producer="prepare_tasks")
    answers_df = read_table(answers, producer="collab_states")[0] if answers else None
    r = score_agent(states, prompts, vectors, transcripts, table, method=method, n_components=pca_components,
                    n_boot=bootstrap, n_perm=permutations, n_drift_perm=drift_permutations, confidence=confidence,
                    seed=seed, pairing=pairing, profile=profile, model=model_key, out=out, probe_folds=probe_folds,
                    answers=answers_df, condition=condition, probe_permutations=probe_permutations)
    d = r["drift"]
    log.info("%s in %s (%s): drift %.3g [%.3g, %.3g], p = %.3g, MDE %.3g", r["agent"], pairing, profile,
             d["difference"], *d["ci"], d["p_value"], d["mde"])
    b = r.get("behaviour")
    if b:
        bd = b["drift"]
        log.info("behavioural drift (refusal split) %.3g [%.3g, %.3g], p = %.3g, MDE %.3g", bd["difference"],
                 bd["ci_low"], bd["ci_high"], bd["p_value"], bd["mde"])


def summarize_collab(*, drift: Sequence[str], transcripts: Sequence[str], tasks: str | Path, plain: float,
                     prevention: float | None, out_dir: str | Path, operator: str = "add",
                     stability_floor: float = 0.5) -> None:
    """The phase-5 drift table, plots and sample transcripts."""
    from driftlib.phases.collaboration.summary import summarize_collaboration

    table, _ = read_table(tasks, columns=["id", "prompt"], producer="prepare_tasks")
    if not drift:
        raise DataError("summarize-collab: no drift files given")
    summarize_collaboration(drift, transcripts, table, out_dir, plain=plain, prevention=prevention, operator=operator,
                            stability_floor=stability_floor)
