"""Phase 4 commands: ``prepare-anchors``, ``fit-maps``, ``transfer-sweep``, ``transfer-efficiency``,
``transfer-answers``, ``map-condition``, ``summarize-transfer``."""

from __future__ import annotations

import argparse
import logging

from driftlib.cli.common import (
    aqi_options,
    bound_options,
    command,
    cost,
    cost_options,
    layer,
    load_arguments,
    none_or_int,
    read,
    read_options,
    source,
    steering,
    steering_options,
)
from driftlib.cli.same_arch import model_options

log = logging.getLogger("driftlib")


def prepare_anchors(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.run import prepare_anchors

    prepare_anchors(source=a.source, prompts=a.prompts, split=a.split, n=a.n, seed=a.seed, out=a.out)


def fit_maps(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.evaluate import fit_pair

    fit_pair(a.source_anchors, a.target_anchors, a.source_vectors, a.target_vectors, source=a.source,
             target=a.target, inject=a.inject, matching=a.matching, methods=a.methods,
             procrustes_components=a.procrustes_components, relative_anchors=a.relative_anchors, folds=a.folds,
             seed=a.seed, out_maps=a.out_maps, out_vectors=a.out_vectors, out_fit=a.out_fit,
             out_matching=a.out_matching)


def transfer_sweep(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.run import transfer_sweep

    transfer_sweep(source=source(a), name=a.name, mapped=a.mapped, methods=a.methods, steering=steering(a),
                   lambdas=a.lambdas, texts=a.texts, read=read(a), cost=cost(a), batch_size=a.batch_size,
                   seed=a.seed, out=a.out, cost_out=a.cost_out, compare=a.compare, condition=a.condition,
                   mapped_conditions=a.mapped_conditions)


def transfer_answers(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.run import transfer_answers

    transfer_answers(source=source(a), name=a.name, mapped=a.mapped, fits=a.fits, efficiencies=a.efficiencies,
                     steering=steering(a), prompts=a.prompts, matrix_method=a.matrix_method,
                     max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, max_length=a.max_length, out=a.out,
                     compare=a.compare, condition=a.condition, mapped_conditions=a.mapped_conditions)


def map_condition(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.evaluate import map_pair_condition

    map_pair_condition(a.source_condition, a.target_condition, a.maps, a.prompts, confidence=a.confidence, out=a.out)


def transfer_efficiency(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.evaluate import evaluate_pair

    evaluate_pair(a.transfer_sweep, a.transfer_aqi, a.transfer_cost, a.own_sweep, a.own_aqi, a.own_cost, a.prompts,
                  source=a.source, max_kl=a.max_kl, max_repetition_increase=a.max_repetition_increase, method=a.method,
                  n_components=a.pca_components, n_boot=a.bootstrap, confidence=a.confidence, seed=a.seed,
                  out=a.out)


def summarize_transfer(a: argparse.Namespace) -> None:
    from driftlib.phases.cross_arch.summary import summarize_transfer

    summary = summarize_transfer(a.fits, a.efficiencies, a.baseline, a.matchings, a.out_dir,
                                 matrix_method=a.matrix_method, stability_floor=a.stability_floor,
                                 answers=a.answers, confidence=a.confidence)
    log.info("%s", summary["note"])


def _fit_maps_parser(sub) -> None:
    p = command(sub, "fit-maps", fit_maps, "phase 4: match layers, fit maps source -> target, map the source's vector")
    for name in ("source", "target", "source-anchors", "target-anchors", "source-vectors", "target-vectors"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--inject", type=layer, nargs="+", required=True, help="the target's injection layers")
    p.add_argument("--matching", choices=["cka", "depth"], default="cka")
    p.add_argument("--methods", nargs="+", default=["ridge", "procrustes", "relative"],
                   help="map methods (driftlib.stats.maps.METHODS)")
    p.add_argument("--procrustes-components", type=none_or_int, default=32)
    p.add_argument("--relative-anchors", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    for name in ("out-maps", "out-vectors", "out-fit", "out-matching"):
        p.add_argument(f"--{name}", required=True)


def mapped_conditions_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mapped-conditions", nargs="*", default=[],
                   help="each source's condition mapped into this target (map-condition), instead of --condition")


def _transfer_sweep_parser(sub) -> None:
    p = command(sub, "transfer-sweep", transfer_sweep,
                "phase 4: a target steered with every source's mapped vectors and controls, and their cost")
    model_options(p)
    p.add_argument("--mapped", nargs="+", required=True,
                   help="mapped vectors into this target, one file per source (fit-maps --out-vectors)")
    p.add_argument("--methods", nargs="+", required=True)
    steering_options(p, inject_default=[0.5])
    p.add_argument("--compare", nargs="*", default=[],
                   help="operators also swept, side by side (steering.compare; a gated one needs --condition "
                        "or --mapped-conditions)")
    mapped_conditions_option(p)
    read_options(p)
    cost_options(p)
    p.add_argument("--cost-out", required=True)


def _transfer_answers_parser(sub) -> None:
    p = command(sub, "transfer-answers", transfer_answers,
                "phase 4: a target's greedy answers unsteered and under each source's mapped vector at its best lambda")
    load_arguments(p, "hub id or local directory of the target model (its steered variant)")
    p.add_argument("--name", required=True)
    p.add_argument("--mapped", nargs="+", required=True, help="mapped vectors into this target (fit-maps --out-vectors)")
    p.add_argument("--fits", nargs="+", required=True, help="the pairs' fit-maps tables (for the matrix's method)")
    p.add_argument("--efficiencies", nargs="+", required=True, help="the pairs' transfer-efficiency tables")
    p.add_argument("--prompts", required=True)
    p.add_argument("--matrix-method", default="best", help="best, or one map method (as summarize-transfer)")
    steering_options(p, inject_default=[0.5])
    p.add_argument("--compare", nargs="*", default=[], help="the operators the transfer sweep compared")
    mapped_conditions_option(p)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", required=True)


def _map_condition_parser(sub) -> None:
    p = command(sub, "map-condition", map_condition,
                "phase 4: a source's condition mapped into a target by each map method, scored on the target")
    p.add_argument("--source-condition", required=True, help="the source's fit-condition file")
    p.add_argument("--target-condition", required=True, help="the target's fit-condition file (its evaluation states)")
    p.add_argument("--maps", required=True, help="the pair's fit-maps file")
    p.add_argument("--prompts", required=True)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--out", required=True)


def register(sub) -> None:
    p = command(sub, "prepare-anchors", prepare_anchors, "phase 4: the anchor texts, minus any evaluation prompt")
    p.add_argument("--source", default="bundled", help="bundled, or a text file with one anchor text per line")
    p.add_argument("--prompts", default="bundled", help="the evaluation prompt source (every row, not the sample)")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=none_or_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    _fit_maps_parser(sub)

    _transfer_sweep_parser(sub)
    _transfer_answers_parser(sub)
    _map_condition_parser(sub)

    p = command(sub, "transfer-efficiency", transfer_efficiency, "phase 4: efficiency of each mapped vector and its controls")
    for name in ("transfer-sweep", "transfer-aqi", "transfer-cost", "prompts"):
        p.add_argument(f"--{name}", required=True)
    for name in ("own-sweep", "own-aqi", "own-cost"):
        p.add_argument(f"--{name}", nargs="+", required=True,
                       help="the target's phase-3 file, one per operator (main first), in the same order")
    p.add_argument("--source", required=True, help="the source whose vectors are read from the target's transfer files")
    bound_options(p)
    aqi_options(p)
    p.add_argument("--out", required=True)

    p = command(sub, "summarize-transfer", summarize_transfer, "phase 4 summary: the source x target matrix and heatmaps")
    p.add_argument("--fits", nargs="+", required=True)
    p.add_argument("--efficiencies", nargs="+", required=True)
    p.add_argument("--matchings", nargs="+", required=True)
    p.add_argument("--baseline", required=True, help="phase 1's baseline.json")
    p.add_argument("--matrix-method", default="best", help="best, or one map method")
    p.add_argument("--stability-floor", type=float, default=0.5, help="mark source vectors less stable than this")
    p.add_argument("--answers", nargs="*", default=[], help="the targets' transfer-answers tables (behaviour)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--out-dir", required=True)
