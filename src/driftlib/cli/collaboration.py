"""Phase 5 commands: ``prepare-tasks``, ``collaborate``, ``solo``, ``collab-states``, ``score-collab``,
``summarize-collab``."""

from __future__ import annotations

import argparse

from driftlib.cli.common import (
    aqi_options,
    command,
    cost,
    cost_options,
    layer,
    none_or_float,
    none_or_int,
    steering,
    steering_options,
)


def agent_source(a: argparse.Namespace):
    """The agent's model: ``--model``, ``--revision``, ``--trust-remote-code``, and the run's ``--dtype``/``--device``."""
    from driftlib.model.source import ModelSource

    return ModelSource(a.model, revision=a.revision, dtype=a.dtype, device=a.device,
                       trust_remote_code=a.trust_remote_code)


def prepare_tasks(a: argparse.Namespace) -> None:
    from driftlib.phases.collaboration.run import prepare_tasks

    prepare_tasks(source=a.source, n=a.n, loaded_share=a.loaded_share, seed=a.seed, out=a.out)


def collaborate(a: argparse.Namespace) -> None:
    from driftlib.phases.collaboration.run import collaborate

    collaborate(agents=a.agents, steering=steering(a), tasks=a.tasks, rounds=a.rounds, order=a.order, seeds=a.seeds,
                max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                context_tokens=a.context_tokens, batch_size=a.batch_size, dtype=a.dtype, device=a.device, out=a.out)


def solo(a: argparse.Namespace) -> None:
    from driftlib.phases.collaboration.run import solo

    solo(source=agent_source(a), name=a.name, vectors=a.vectors, lam=a.lam, steering=steering(a), tasks=a.tasks,
         turns=a.turns, seeds=a.seeds, max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
         context_tokens=a.context_tokens, batch_size=a.batch_size, out=a.out, adapter=a.adapter)


def collab_states(a: argparse.Namespace) -> None:
    from driftlib.phases.collaboration.run import collab_states

    collab_states(source=agent_source(a), name=a.name, vectors=a.vectors, lam=a.lam, steering=steering(a),
                  tasks=a.tasks, team=a.team, transcripts=a.transcripts, solo=a.solo, prompts=a.prompts,
                  measure=a.measure, pooling=a.pooling, cost=cost(a), context_tokens=a.context_tokens,
                  batch_size=a.batch_size, out=a.out, adapter=a.adapter, answers_out=a.answers_out,
                  max_new_tokens=a.answer_tokens)


def score_collab(a: argparse.Namespace) -> None:
    from driftlib.phases.collaboration.run import score_collab

    score_collab(states=a.states, prompts=a.prompts, vectors=a.vectors, transcripts=a.transcripts, tasks=a.tasks,
                 pairing=a.pairing, profile=a.profile, model_key=a.model_key, method=a.method,
                 pca_components=a.pca_components, bootstrap=a.bootstrap, permutations=a.permutations,
                 drift_permutations=a.drift_permutations, confidence=a.confidence, seed=a.seed, out=a.out,
                 probe_folds=a.probe_folds, answers=a.answers, condition=a.condition,
                 probe_permutations=a.probe_permutations)


def summarize_collab(a: argparse.Namespace) -> None:
    from driftlib.phases.collaboration.run import summarize_collab

    summarize_collab(drift=a.drift, transcripts=a.transcripts, tasks=a.tasks, plain=a.plain,
                     prevention=a.prevention, out_dir=a.out_dir, operator=a.operator,
                     stability_floor=a.stability_floor)


def protocol_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True, help="prepare-tasks output")
    steering_options(p, inject_default=[0.5])
    p.add_argument("--context-tokens", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")


def generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--out", required=True)


def agent_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="hub id or local directory of the agent's model")
    p.add_argument("--revision", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--name", required=True, help="the agent's name in the transcripts")
    p.add_argument("--vectors", default=None, help="the agent's own vectors (compute_vectors)")
    p.add_argument("--lam", type=float, default=0.0, help="the agent's posture (0: not steered)")
    p.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder merged into the model (a dealigned agent: phase 4.5's adapter)")


def _run_parsers(sub) -> None:
    p = command(sub, "collaborate", collaborate, "phase 5: agents take turns on every task")
    p.add_argument("--agents", required=True,
                   help="JSON list (inline or a file) of {name, model, vectors, lam[, dtype, device, revision]}")
    protocol_options(p)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--order", choices=["round_robin", "random"], default="round_robin")
    generation_options(p)

    p = command(sub, "solo", solo, "phase 5: one agent alone on every task (the length-matched control)")
    protocol_options(p)
    agent_options(p)
    p.add_argument("--turns", type=int, required=True, help="rounds x the largest team the agent is in")
    generation_options(p)

    p = command(sub, "collab-states", collab_states,
                "phase 5: an agent's hidden states alone, after the collaboration, after its control")
    protocol_options(p)
    agent_options(p)
    p.add_argument("--team", nargs="+", required=True, help="the pairing's agents in turn order")
    p.add_argument("--transcripts", required=True, help="the collaboration (collaborate)")
    p.add_argument("--solo", required=True, help="the agent's solo run at the same lambda (solo)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--measure", type=layer, nargs="+", required=True)
    p.add_argument("--pooling", choices=["mean", "last"], default="mean")
    cost_options(p)
    p.add_argument("--answers-out", default=None,
                   help="also write greedy answers to every prompt in each condition, classified (Parquet)")
    p.add_argument("--answer-tokens", type=int, default=24, help="the longest answer (with --answers-out)")
    p.add_argument("--out", required=True)


def register(sub) -> None:
    p = command(sub, "prepare-tasks", prepare_tasks, "phase 5: the collaboration tasks, sampled from the task file")
    p.add_argument("--source", default="bundled", help="bundled, or a .jsonl task file")
    p.add_argument("--n", type=none_or_int, default=None, help="tasks to sample (none = all)")
    p.add_argument("--loaded-share", type=float, default=None, help="share of loaded tasks in the sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    _run_parsers(sub)

    p = command(sub, "score-collab", score_collab,
                "phase 5: AQIs, probe AUCs, drift with its test and MDE, behaviour, projection drift, outcome")
    for name in ("states", "prompts", "vectors", "transcripts", "tasks"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--pairing", default="")
    p.add_argument("--profile", default="")
    p.add_argument("--model-key", default="", help="the config's model key (recorded)")
    aqi_options(p)
    p.add_argument("--drift-permutations", type=int, default=1000, help="swaps of the paired permutation test")
    p.add_argument("--answers", default=None, help="the agent's answers (collab-states --answers-out): behaviour")
    p.add_argument("--condition", default=None, help="a gated agent's condition (its accuracy is recorded)")
    p.add_argument("--probe-permutations", type=int, default=0, help="label shuffles of each probe's null")
    p.add_argument("--out", required=True)

    p = command(sub, "summarize-collab", summarize_collab, "phase 5 summary: drift table, plots, sample transcripts")
    p.add_argument("--drift", nargs="+", required=True)
    p.add_argument("--transcripts", nargs="+", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--plain", type=float, default=0.0, help="every agent's lambda in the plain runs")
    p.add_argument("--prevention", type=none_or_float, default=None,
                   help="every agent's lambda in the pre-steered runs (none: no such runs)")
    p.add_argument("--operator", default="add", help="the main steering operator (runs without an @operator)")
    p.add_argument("--stability-floor", type=float, default=0.5, help="mark agents whose vector is less stable")
    p.add_argument("--out-dir", required=True)
