"""Phase 1 commands: ``extract`` (also run by phases 2 and 4), ``score``, ``summarize-baseline``."""

from __future__ import annotations

import argparse
import logging

from driftlib.cli.common import aqi_options, batch_options, command, layer, load_arguments, pooling_options, source

log = logging.getLogger("driftlib")


def extract(a: argparse.Namespace) -> None:
    from driftlib.phases.extract.run import extract

    extract(source=source(a), name=a.name, variant=a.variant, texts=a.texts, text_column=a.text_column,
            layers=a.layers, all_layers=a.all_layers, pooling=a.pooling, skip_first=a.skip_first,
            batch_size=a.batch_size, max_length=a.max_length, out=a.out, render=a.render,
            tokens_per_batch=a.tokens_per_batch, packing=a.packing, compile=a.compile)


def score(a: argparse.Namespace) -> None:
    from driftlib.phases.baseline.scoring import score_activation_file

    table = score_activation_file(a.activations, a.prompts, method=a.method, n_components=a.pca_components,
                                  n_boot=a.bootstrap, n_perm=a.permutations, confidence=a.confidence, seed=a.seed,
                                  paper=a.paper, gamma=a.gamma, probe_folds=a.probe_folds,
                                  probe_permutations=a.probe_permutations, out=a.out)
    log.info("wrote %d AQI rows to %s", len(table), a.out)


def answer(a: argparse.Namespace) -> None:
    from driftlib.phases.baseline.run import answer

    answer(source=source(a), name=a.name, variant=a.variant, prompts=a.prompts,
           max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, max_length=a.max_length, out=a.out)


def summarize_baseline(a: argparse.Namespace) -> None:
    from driftlib.phases.baseline.summary import summarize_baseline

    choice = summarize_baseline(a.tables, a.out_dir, answers=a.answers)
    log.info("baseline model: %s", choice.get("baseline"))


def _answer_parser(sub) -> None:
    p = command(sub, "answer", answer, "phase 1: short greedy answers to every prompt, classified as refusal or not")
    load_arguments(p)
    p.add_argument("--name", required=True)
    p.add_argument("--variant", default="aligned", choices=["base", "aligned"])
    p.add_argument("--prompts", required=True)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", required=True)


def register(sub) -> None:
    p = command(sub, "extract", extract, "pooled decoder-block outputs of a model on a table of texts")
    load_arguments(p)
    p.add_argument("--name", required=True, help="model key (recorded in metadata)")
    p.add_argument("--variant", default="aligned", choices=["base", "aligned"])
    p.add_argument("--texts", required=True, help="Parquet table with id and text columns")
    p.add_argument("--text-column", nargs="+", default=["text"],
                   help="column(s) of texts; several give one tensor each, named by column")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--layers", type=layer, nargs="+", help="block indices or relative depths")
    which.add_argument("--all-layers", action="store_true", help="every decoder block")
    pooling_options(p)
    batch_options(p)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", required=True)

    _answer_parser(sub)

    p = command(sub, "score", score, "AQI per axiom and overall from extracted hidden states")
    p.add_argument("--activations", required=True)
    p.add_argument("--prompts", required=True)
    aqi_options(p)
    p.add_argument("--paper", action="store_true", help="also compute the earlier public normalisation")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--probe-permutations", type=int, default=20, help="label shuffles of the probe's null")
    p.add_argument("--out", required=True)

    p = command(sub, "summarize-baseline", summarize_baseline, "phase 1 summary: table, baseline model, plots")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--answers", nargs="*", default=[], help="answer tables (behaviour: refusal rates)")
    p.add_argument("--out-dir", required=True)
