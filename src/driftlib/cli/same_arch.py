"""Phase 3 commands: ``sweep``, ``score-sweep``, ``cost``, ``summarize-steering``."""

from __future__ import annotations

import argparse

from driftlib.cli.common import (
    aqi_options,
    bound_options,
    command,
    cost,
    cost_options,
    layer,
    load_arguments,
    read,
    read_options,
    source,
    steering,
    steering_options,
)


def model_options(p: argparse.ArgumentParser) -> None:
    """A model to steer over a lambda grid (phases 3, 4 and 4.5)."""
    load_arguments(p, "hub id or local directory of the model to steer")
    p.add_argument("--name", required=True)
    p.add_argument("--lambdas", type=float, nargs="+", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of the random control vector")
    p.add_argument("--out", required=True)


def sweep(a: argparse.Namespace) -> None:
    from driftlib.phases.same_arch.run import sweep

    sweep(source=source(a), name=a.name, vectors=a.vectors, kind=a.kind, steering=steering(a), lambdas=a.lambdas,
          texts=a.texts, read=read(a), batch_size=a.batch_size, seed=a.seed, out=a.out, answers_out=a.answers_out,
          max_new_tokens=a.max_new_tokens)


def score_sweep(a: argparse.Namespace) -> None:
    from driftlib.phases.same_arch.evaluate import score_sweep

    score_sweep(a.sweep, a.prompts, method=a.method, n_components=a.pca_components, n_boot=a.bootstrap,
                n_perm=a.permutations, confidence=a.confidence, seed=a.seed, out=a.out, producer=a.producer,
                probe_folds=a.probe_folds, probe_permutations=a.probe_permutations, probe_axioms=a.probe_axioms,
                probe_vectors=a.probe_vectors)


def cost_command(a: argparse.Namespace) -> None:
    from driftlib.phases.same_arch.run import cost as run_cost

    run_cost(source=source(a), name=a.name, vectors=a.vectors, kind=a.kind, steering=steering(a), lambdas=a.lambdas,
             cost=cost(a), batch_size=a.batch_size, seed=a.seed, out=a.out)


def fit_condition(a: argparse.Namespace) -> None:
    from driftlib.phases.same_arch.run import fit_condition

    fit_condition(source=source(a), name=a.name, steering=steering(a), calibration=a.calibration, prompts=a.prompts,
                  layer=a.condition_layer, render=a.render, batch_size=a.batch_size, max_length=a.max_length,
                  confidence=a.confidence, out=a.out, adapter=a.adapter, class_means=a.class_means)


def summarize_operators(a: argparse.Namespace) -> None:
    from driftlib.phases.same_arch.operators import compare_operators

    compare_operators(a.sweep_aqis, a.costs, a.conditions, a.out_dir, max_kl=a.max_kl,
                      max_repetition_increase=a.max_repetition_increase, aqi_summary=a.aqi_summary,
                      confidence=a.confidence)


def summarize_steering(a: argparse.Namespace) -> None:
    from driftlib.phases.same_arch.summary import summarize_steering

    summarize_steering(a.sweeps, a.costs, a.baseline_summary, a.out_dir, max_kl=a.max_kl,
                       max_repetition_increase=a.max_repetition_increase, confidence=a.confidence, seed=a.seed,
                       answers=a.answers, behaviour=a.behaviour, stability_floor=a.stability_floor)


def _operator_parsers(sub) -> None:
    p = command(sub, "fit-condition", fit_condition,
                "phase 3: the condition of conditional steering, fitted on the calibration prompts")
    load_arguments(p, "hub id or local directory of the model to steer")
    p.add_argument("--name", required=True)
    steering_options(p)
    p.add_argument("--calibration", required=True, help="calibration prompts (prepare-prompts --calibration-out)")
    p.add_argument("--prompts", required=True, help="evaluation prompts (the condition's accuracy is measured on them)")
    p.add_argument("--condition-layer", type=layer, default=None, help="default: the first injection layer")
    p.add_argument("--adapter", default=None, help="a LoRA adapter merged in first (a dealigned phase-5 agent)")
    p.add_argument("--class-means", action="store_true",
                   help="also keep the calibration class means at every block (phase 4's mapped condition)")
    p.add_argument("--render", choices=["raw", "chat"], default="raw", help="how the prompts are read (as the sweep)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--out", required=True)

    p = command(sub, "summarize-operators", summarize_operators,
                "phase 3: the steering operators side by side (AQI along lambda, best lambda, condition accuracy)")
    p.add_argument("--sweep-aqis", nargs="+", required=True, help="score-sweep tables, one per model and operator")
    p.add_argument("--costs", nargs="+", required=True, help="cost tables, in the same order")
    p.add_argument("--conditions", nargs="*", default=[], help="fit-condition files")
    p.add_argument("--aqi-summary", default=None, help="phase 1's aqi_summary.parquet (for the share of the gap closed)")
    p.add_argument("--confidence", type=float, default=0.95)
    bound_options(p)
    p.add_argument("--out-dir", required=True)


def register(sub) -> None:
    for name, run, what in (("sweep", sweep, "phase 3: hidden states of a model steered over a lambda grid"),
                            ("cost", cost_command, "phase 3: capability cost (KL, repetition) along a lambda grid")):
        p = command(sub, name, run, what)
        model_options(p)
        p.add_argument("--vectors", required=True)
        p.add_argument("--kind", default=None, help="vector kind (default: the file's steering_kind)")
        steering_options(p)
        read_options(p) if name == "sweep" else cost_options(p)
        if name == "sweep":
            p.add_argument("--answers-out", default=None, help="also the greedy answers under the own vector "
                           "at every lambda, classified as refusal or not (Parquet)")
            p.add_argument("--max-new-tokens", type=int, default=24, help="answer length (with --answers-out)")

    p = command(sub, "score-sweep", score_sweep, "phases 3-4: AQI per vector and lambda from a sweep file")
    p.add_argument("--sweep", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--producer", default="sweep_same_arch", help="the rule that wrote the sweep (named in errors)")
    aqi_options(p)
    p.add_argument("--probe-permutations", type=int, default=0,
                   help="label shuffles of the probe's null at each distinct block (overall rows; 0: none)")
    p.add_argument("--probe-axioms", action="store_true", help="also the probe per axiom (descriptive, no null)")
    p.add_argument("--probe-vectors", nargs="+", default=None,
                   help="the null and per-axiom probe only for these vectors (a name before '/' counts; default: all)")
    p.add_argument("--out", required=True)

    _operator_parsers(sub)

    p = command(sub, "summarize-steering", summarize_steering, "phase 3 summary: curves, rho, best lambda, plots")
    p.add_argument("--sweeps", nargs="+", required=True)
    p.add_argument("--costs", nargs="+", required=True)
    p.add_argument("--baseline-summary", required=True)
    p.add_argument("--answers", nargs="*", default=[], help="steered answer tables (sweep --answers-out)")
    p.add_argument("--behaviour", default=None, help="phase 1's behaviour table (the aligned and base references)")
    p.add_argument("--stability-floor", type=float, default=0.5, help="mark vectors less stable than this")
    bound_options(p)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
