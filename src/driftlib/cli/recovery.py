"""Phase 4.5 commands: ``train-dealign``, ``recovery-sweep``, ``evaluate-recovery``, ``summarize-recovery``."""

from __future__ import annotations

import argparse

from driftlib.cli.common import (
    aqi_options,
    bound_options,
    command,
    cost,
    cost_options,
    load_arguments,
    read,
    read_options,
    source,
    steering,
    steering_options,
)
from driftlib.cli.same_arch import model_options


def train_dealign(a: argparse.Namespace) -> None:
    from driftlib.phases.recovery.run import train_dealign

    train_dealign(source=source(a), pairs=a.pairs, steps=a.steps, rank=a.rank, alpha=a.alpha, lr=a.lr,
                  batch_size=a.batch_size, max_length=a.max_length, target_modules=a.target_modules, seed=a.seed,
                  quiet=a.quiet, out=a.out)


def recovery_sweep(a: argparse.Namespace) -> None:
    from driftlib.phases.recovery.run import recovery_sweep

    recovery_sweep(source=source(a), name=a.name, adapter=a.adapter, steps=a.steps, vectors=a.vectors,
                   steering=steering(a), aqi_tables=a.aqi_tables, fits=a.fits, efficiencies=a.efficiencies,
                   mapped=a.mapped, lambdas=a.lambdas, texts=a.texts, read=read(a), cost=cost(a),
                   batch_size=a.batch_size, seed=a.seed, out=a.out, cost_out=a.cost_out, compare=a.compare,
                   answers_out=a.answers_out, answer_tokens=a.answer_tokens)


def evaluate_recovery(a: argparse.Namespace) -> None:
    from driftlib.phases.recovery.evaluate import evaluate_recovery

    evaluate_recovery(a.sweep, a.sweep_aqi, a.cost, a.aligned, a.prompts, steps=a.steps, max_kl=a.max_kl,
                      max_repetition_increase=a.max_repetition_increase, method=a.method,
                      n_components=a.pca_components, n_boot=a.bootstrap, confidence=a.confidence, seed=a.seed,
                      out=a.out)


def summarize_recovery(a: argparse.Namespace) -> None:
    from driftlib.phases.recovery.summary import summarize_recovery

    summarize_recovery(a.tables, a.sweep_aqis, a.out_dir, fraction=a.fraction, adapters=a.adapters,
                       baseline_summary=a.baseline_summary, answers=a.answers, behaviour=a.behaviour,
                       stability_floor=a.stability_floor, confidence=a.confidence)


def _recovery_sweep_parser(sub) -> None:
    p = command(sub, "recovery-sweep", recovery_sweep,
                "phase 4.5: a dealigned model steered with same-arch, cross-arch and random vectors")
    model_options(p)
    p.add_argument("--adapter", required=True, help="a LoRA adapter folder (train-dealign output)")
    p.add_argument("--steps", type=int, required=True, help="the adapter's dealignment strength (recorded)")
    p.add_argument("--vectors", required=True, help="the model's own vectors (compute_vectors)")
    steering_options(p)
    p.add_argument("--aqi-tables", nargs="+", required=True, help="phase 1's AQI tables (they decide the baseline)")
    p.add_argument("--fits", nargs="*", default=[], help="phase 4's fit tables of the pairs into this model")
    p.add_argument("--efficiencies", nargs="*", default=[], help="phase 4's efficiency tables of those pairs")
    p.add_argument("--mapped", nargs="*", default=[], help="phase 4's mapped vectors into this model (fit-maps)")
    p.add_argument("--compare", nargs="*", default=[],
                   help="operators also swept, side by side (steering.compare; a gated one needs --condition)")
    read_options(p)
    cost_options(p)
    p.add_argument("--cost-out", required=True)
    p.add_argument("--answers-out", default=None, help="also the dealigned model's greedy answers under the "
                   "same-arch vector at every lambda, classified as refusal or not (Parquet)")
    p.add_argument("--answer-tokens", type=int, default=24, help="answer length (with --answers-out)")


def register(sub) -> None:
    p = command(sub, "train-dealign", train_dealign, "phase 4.5: LoRA adapters trained on the rejected responses")
    load_arguments(p, "the aligned model (hub id or local directory)")
    p.add_argument("--pairs", required=True, help="preference pairs (prepare-pairs output)")
    p.add_argument("--steps", type=int, nargs="+", required=True, help="save an adapter after each of these step counts")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--target-modules", nargs="+", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder: one adapter per step count, the loss curve, a record")

    _recovery_sweep_parser(sub)

    p = command(sub, "evaluate-recovery", evaluate_recovery, "phase 4.5: recovery rate of each vector, with intervals")
    for name in ("sweep", "sweep-aqi", "cost", "aligned", "prompts"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--steps", type=int, required=True)
    bound_options(p)
    aqi_options(p)
    p.add_argument("--out", required=True)

    p = command(sub, "summarize-recovery", summarize_recovery, "phase 4.5 summary: drops, recovery rates, limits, plots")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--sweep-aqis", nargs="+", required=True)
    p.add_argument("--adapters", nargs="*", default=[], help="train-dealign folders (for the loss curves)")
    p.add_argument("--baseline-summary", default=None, help="phase 1's aqi_summary.parquet (for the per-axiom drops)")
    p.add_argument("--answers", nargs="*", default=[], help="the recovery sweeps' answer tables (recovery-sweep --answers-out)")
    p.add_argument("--behaviour", default=None, help="phase 1's behaviour.parquet (the aligned models' refusal)")
    p.add_argument("--stability-floor", type=float, default=0.5, help="mark vectors less stable than this")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--out-dir", required=True)
