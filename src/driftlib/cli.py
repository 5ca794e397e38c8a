"""The ``driftlib`` command line: one subcommand per workflow step.

Every Snakemake rule runs exactly one of these commands, so any step can be re-run by hand with
the same result the workflow gets (``snakemake -p`` prints the command lines). Errors that a user
can fix are printed as one line (``driftlib: error: ...``) with exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from driftlib import __version__
from driftlib.errors import DriftlibError

log = logging.getLogger("driftlib")


def _layer(value: str) -> int | float:
    """A layer on the command line: ``3`` / ``-1`` is a block index, ``0.5`` a relative depth."""
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a layer: {value!r} (an int block index or a float depth)")


def _none_or_int(value: str) -> int | None:
    return None if value.lower() in ("none", "null", "all") else int(value)


# --------------------------------------------------------------------------- data


def cmd_prepare_prompts(args: argparse.Namespace) -> None:
    from driftlib.artifacts import fingerprint, write_table
    from driftlib.prompts import load_prompts, sample_balanced

    df, load_report = load_prompts(args.source, split=args.split)
    sample, sample_report = sample_balanced(df, args.per_group, args.seed, axioms=args.axioms)
    meta = {"source": args.source, "split": args.split, "per_group": args.per_group,
            "seed": args.seed, "load": load_report, "sampling": sample_report,
            "dataset_fingerprint": fingerprint(sample)}
    write_table(sample, args.out, metadata=meta)
    log.info("wrote %d prompts to %s", len(sample), args.out)


def cmd_prepare_pairs(args: argparse.Namespace) -> None:
    from driftlib.artifacts import fingerprint, write_table
    from driftlib.preferences import load_pairs, sample_pairs

    df, report = load_pairs(args.source, data_dir=args.data_dir, split=args.split)
    sample = sample_pairs(df, args.n, args.seed)
    meta = {"source": args.source, "data_dir": args.data_dir, "split": args.split, "n": args.n,
            "seed": args.seed, "load": report, "dataset_fingerprint": fingerprint(sample)}
    write_table(sample, args.out, metadata=meta)
    log.info("wrote %d pairs to %s", len(sample), args.out)


# --------------------------------------------------------------------------- tiny family


def cmd_tiny_tokenizer(args: argparse.Namespace) -> None:
    from driftlib.tiny import train_tokenizer

    train_tokenizer(args.out, vocab_size=args.vocab_size, seed=args.seed)


def cmd_tiny_model(args: argparse.Namespace) -> None:
    from driftlib import tiny

    if args.variant == "base":
        record = tiny.build_base(args.arch, args.tokenizer, args.out, steps=args.steps, seed=args.seed)
    else:
        record = tiny.build_aligned(args.base, args.out, steps=args.steps, seed=args.seed)
    log.info("built %s: final loss %.3f", args.out, record.get("final_loss", float("nan")))


# --------------------------------------------------------------------------- phase 1


def cmd_extract(args: argparse.Namespace) -> None:
    from driftlib.activations import extract_hidden_states
    from driftlib.artifacts import read_table, save_tensors
    from driftlib.layers import num_layers, resolve_layers
    from driftlib.models import describe_model, load_model

    texts_df, texts_meta = read_table(args.texts, columns=["id", *args.text_column])
    model, tokenizer = load_model(args.model, revision=args.revision, dtype=args.dtype,
                                  device=args.device, trust_remote_code=args.trust_remote_code)
    depth = num_layers(model)
    layers = list(range(depth)) if args.all_layers else resolve_layers(args.layers, depth, key="aqi.layers")
    # one tensor per text column; a single column is stored as "hidden"
    tensors = {}
    for column in args.text_column:
        tensors[column if len(args.text_column) > 1 else "hidden"] = extract_hidden_states(
            model, tokenizer, texts_df[column].tolist(), layers, pooling=args.pooling,
            skip_first=args.skip_first, batch_size=args.batch_size, max_length=args.max_length,
            model_name=f"{args.name}/{args.variant}",
        )
    hidden = next(iter(tensors.values()))
    info = describe_model(model)
    meta = {
        "model": args.name, "variant": args.variant, "model_source": args.model,
        "revision": args.revision or "", "model_type": info.get("model_type", ""),
        "n_layers": depth, "hidden_size": int(hidden.shape[-1]), "layers": layers,
        "layer_spec": "all" if args.all_layers else args.layers, "pooling": args.pooling, "skip_first": args.skip_first,
        "max_length": args.max_length, "truncation_side": "left",
        "dataset_fingerprint": texts_meta.get("dataset_fingerprint", ""),
        "n_rows": int(hidden.shape[0]), "ids": texts_df["id"].astype(str).tolist(),
        "dtype": str(info.get("dtype", "")), "text_columns": args.text_column,
    }
    save_tensors(args.out, tensors, metadata=meta)
    log.info("wrote hidden states %s to %s", tuple(hidden.shape), args.out)


def cmd_score(args: argparse.Namespace) -> None:
    from driftlib.scoring import score_activation_file

    table = score_activation_file(
        args.activations, args.prompts, method=args.method, n_components=args.pca_components,
        n_boot=args.bootstrap, n_perm=args.permutations, confidence=args.confidence,
        seed=args.seed, paper=args.paper, gamma=args.gamma, out=args.out,
    )
    log.info("wrote %d AQI rows to %s", len(table), args.out)


def cmd_summarize_baseline(args: argparse.Namespace) -> None:
    from driftlib.baseline import summarize_baseline

    choice = summarize_baseline(args.tables, args.out_dir)
    log.info("baseline model: %s", choice.get("baseline"))


# --------------------------------------------------------------------------- phase 2


def _load_pair_states(path: str) -> tuple:
    """Last-token states at every block, ``[n, L, d]`` for the chosen and the rejected texts, and
    their metadata (written by ``extract --text-column chosen rejected --all-layers --pooling last``)."""
    from driftlib.artifacts import decode_metadata_value, load_tensors
    from driftlib.errors import ArtifactError

    arrays, meta = load_tensors(path, expect={"layer_spec": "all", "pooling": "last"}, producer="extract_pairs")
    if "chosen" not in arrays or "rejected" not in arrays:
        raise ArtifactError(f"{path}: no 'chosen'/'rejected' tensors. Re-run the rule that writes it (extract_pairs).")
    return arrays["chosen"], arrays["rejected"], {k: decode_metadata_value(v) for k, v in meta.items() if k != "ids"}


def cmd_vectors(args: argparse.Namespace) -> None:
    from driftlib.artifacts import write_table
    from driftlib.vector_stats import compute_vectors, steering_kind
    from driftlib.vectors import save_vectors

    ac, ar, meta = _load_pair_states(args.aligned)
    bc = br = None
    if args.base:
        bc, br, base_meta = _load_pair_states(args.base)
        if bc.shape != ac.shape:
            raise DriftlibError(f"base states {bc.shape} and aligned states {ac.shape} differ in shape: "
                                "the base and aligned models must share an architecture")
    kinds, stats = compute_vectors(ac, ar, bc, br, n_splits=args.splits, seed=args.seed)
    kind = steering_kind(args.method, args.texts, bc is not None)
    layers = list(range(ac.shape[1]))
    save_vectors(args.out, kinds, layers, metadata={
        "model": args.name, "steering_kind": kind, "n_pairs": int(ac.shape[0]),
        "dataset_fingerprint": meta.get("dataset_fingerprint", ""), "pooling": "last",
        "aligned_source": meta.get("model_source", ""), "model_type": meta.get("model_type", ""),
        "base_source": base_meta.get("model_source", "") if bc is not None else ""})
    stats.insert(0, "steering_kind", stats["kind"] == kind)
    stats.insert(0, "model", args.name)
    write_table(stats, args.stats, metadata={"model": args.name, "steering_kind": kind})
    log.info("wrote %d vector kinds x %d layers to %s (later phases use %s)", len(kinds), len(layers), args.out, kind)


def cmd_export_gguf(args: argparse.Namespace) -> None:
    from driftlib.artifacts import decode_metadata_value, load_tensors
    from driftlib.gguf_export import export_control_vector
    from driftlib.vectors import load_vectors

    _, meta = load_tensors(args.vectors, producer="compute_vectors")
    kind = args.kind or decode_metadata_value(meta.get("steering_kind", "mean_diff_both"))
    vectors, vmeta = load_vectors(args.vectors, kind, producer="compute_vectors")
    layers = args.layers or [layer for layer in sorted(vectors) if layer > 0]
    hint = args.model_hint or str(vmeta.get("model_type", "")) or "llama"
    export_control_vector(args.out, {layer: vectors[layer] * args.scale for layer in layers}, model_hint=hint,
                          metadata={"kind": kind, "source": str(args.vectors)})
    log.info("wrote %s (%d layers, kind %s) for llama.cpp --control-vector", args.out, len(layers), kind)


def cmd_summarize_vectors(args: argparse.Namespace) -> None:
    from driftlib.vector_stats import summarize_vectors

    summarize_vectors(args.tables, args.out_dir)


# --------------------------------------------------------------------------- phase 3


def _steering_inputs(args: argparse.Namespace):
    from driftlib.artifacts import decode_metadata_value, load_tensors
    from driftlib.layers import num_layers, resolve_layers
    from driftlib.models import load_model
    from driftlib.vectors import load_vectors

    _, vmeta = load_tensors(args.vectors, producer="compute_vectors")
    kind = args.kind or decode_metadata_value(vmeta.get("steering_kind", "mean_diff_both"))
    vectors, _ = load_vectors(args.vectors, kind, producer="compute_vectors")
    model, tokenizer = load_model(args.model, revision=args.revision, dtype=args.dtype,
                                  device=args.device, trust_remote_code=args.trust_remote_code)
    depth = num_layers(model)
    inject = resolve_layers(args.inject, depth, key="steering.layers")
    missing = [layer for layer in inject if layer not in vectors]
    if missing:
        raise DriftlibError(f"{args.vectors}: no {kind} vector at layers {missing}. Re-run compute_vectors.")
    return model, tokenizer, {layer: vectors[layer] for layer in inject}, kind, depth


def cmd_sweep(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table, save_tensors
    from driftlib.layers import resolve_layers
    from driftlib.sweep import random_like, sweep_hidden_states

    texts_df, texts_meta = read_table(args.texts, columns=["id", "text"], producer="prepare_prompts")
    model, tokenizer, vectors, kind, depth = _steering_inputs(args)
    measure = resolve_layers(args.measure, depth, key="steering.measure_layers")
    common = dict(pooling=args.pooling, skip_first=args.skip_first, batch_size=args.batch_size,
                  max_length=args.max_length, preserve_norm=args.preserve_norm)
    texts = texts_df["text"].tolist()
    own = sweep_hidden_states(model, tokenizer, texts, vectors, args.lambdas, measure,
                              model_name=f"{args.name} (own vector)", **common)
    rnd = sweep_hidden_states(model, tokenizer, texts, random_like(vectors, args.seed), args.lambdas, measure,
                              model_name=f"{args.name} (random vector)", **common)
    save_tensors(args.out, {"own": own, "random": rnd}, metadata={
        "model": args.name, "model_source": args.model, "kind": kind, "lambdas": list(args.lambdas),
        "inject_layers": sorted(vectors), "measure_layers": measure, "pooling": args.pooling,
        "preserve_norm": args.preserve_norm, "seed": args.seed, "n_rows": len(texts),
        "dataset_fingerprint": texts_meta.get("dataset_fingerprint", "")})
    log.info("wrote sweep %s to %s", tuple(own.shape), args.out)


def cmd_score_sweep(args: argparse.Namespace) -> None:
    from driftlib.steering_eval import score_sweep

    score_sweep(args.sweep, args.prompts, method=args.method, n_components=args.pca_components,
                n_boot=args.bootstrap, n_perm=args.permutations, confidence=args.confidence,
                seed=args.seed, out=args.out)


def cmd_cost(args: argparse.Namespace) -> None:
    import pandas as pd

    from driftlib.artifacts import write_table
    from driftlib.capability import greedy_repetition, next_token_kl
    from driftlib.sweep import random_like

    if args.neutral == "bundled":
        from importlib import resources

        source = resources.files("driftlib") / "data" / "neutral.txt"
    else:
        source = Path(args.neutral)
    neutral = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = neutral[: args.n_texts]
    prompts = [" ".join(t.split()[:8]) for t in neutral[-args.n_prompts:]]
    model, tokenizer, vectors, kind, _ = _steering_inputs(args)
    rows = []
    for name, vec in (("own", vectors), ("random", random_like(vectors, args.seed))):
        kl = next_token_kl(model, tokenizer, texts, vec, args.lambdas, batch_size=args.batch_size)
        rep = greedy_repetition(model, tokenizer, prompts, vec, args.lambdas,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        rows += [{"vector": name, "lam": float(lam), "kl": float(k), "repetition": float(r)}
                 for lam, k, r in zip(args.lambdas, kl, rep)]
    write_table(pd.DataFrame(rows), args.out, metadata={"model": args.name, "kind": kind, "n_texts": len(texts),
                                                        "n_prompts": len(prompts), "seed": args.seed})


def cmd_summarize_steering(args: argparse.Namespace) -> None:
    from driftlib.steering_eval import summarize_steering

    summarize_steering(args.sweeps, args.costs, args.baseline_summary, args.out_dir, max_kl=args.max_kl,
                       max_repetition_increase=args.max_repetition_increase, confidence=args.confidence, seed=args.seed)


def cmd_check_config(args: argparse.Namespace) -> None:
    from driftlib.config import iter_model_variants, load_config

    config = load_config(args.config)
    variants = list(iter_model_variants(config))
    print(f"{args.config}: valid ({len(config['models'])} models, {len(variants)} variants)")


# --------------------------------------------------------------------------- parser


def aqi_options(p: argparse.ArgumentParser) -> None:
    """The AQI settings (config section ``aqi``) shared by ``score`` and ``score-sweep``."""
    p.add_argument("--method", choices=["standardize", "none"], default="standardize")
    p.add_argument("--pca-components", type=_none_or_int, default=32)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftlib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"driftlib {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare-prompts", help="load LITMUS-form prompts and sample n per (axiom, label)")
    p.add_argument("--source", default="bundled", help="bundled | FILE | hf:<dataset id>")
    p.add_argument("--split", default="train")
    p.add_argument("--per-group", type=_none_or_int, default=20)
    p.add_argument("--axioms", nargs="+", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_prompts)

    p = sub.add_parser("prepare-pairs", help="load hh-rlhf-form preference pairs and sample n")
    p.add_argument("--source", default="bundled", help="bundled | FILE | hf:Anthropic/hh-rlhf")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=_none_or_int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_pairs)

    p = sub.add_parser("tiny-tokenizer", help="train the tiny family's tokenizer on bundled text")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_tiny_tokenizer)

    p = sub.add_parser("tiny-model", help="train a tiny base model, or fine-tune its aligned counterpart")
    p.add_argument("variant", choices=["base", "aligned"])
    p.add_argument("--arch", help="tiny architecture (base only)")
    p.add_argument("--tokenizer", help="tokenizer directory (base only)")
    p.add_argument("--base", help="base model directory (aligned only)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("extract", help="pooled decoder-block outputs of a model on a table of texts")
    p.add_argument("--model", required=True, help="hub id or local directory")
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--name", required=True, help="model key (recorded in metadata)")
    p.add_argument("--variant", default="aligned", choices=["base", "aligned"])
    p.add_argument("--texts", required=True, help="Parquet table with id and text columns")
    p.add_argument("--text-column", nargs="+", default=["text"],
                   help="column(s) of texts; several give one tensor each, named by column")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--layers", type=_layer, nargs="+", help="block indices or relative depths")
    which.add_argument("--all-layers", action="store_true", help="every decoder block")
    p.add_argument("--pooling", choices=["mean", "last"], default="mean")
    p.add_argument("--no-skip-first", dest="skip_first", action="store_false")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("score", help="AQI per axiom and overall from extracted hidden states")
    p.add_argument("--activations", required=True)
    p.add_argument("--prompts", required=True)
    aqi_options(p)
    p.add_argument("--paper", action="store_true", help="also compute the earlier public normalisation")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("summarize-baseline", help="phase 1 summary: table, baseline model, plots")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_baseline)

    p = sub.add_parser("vectors", help="phase 2: steering vectors of one model and their per-layer figures")
    p.add_argument("--aligned", required=True, help="pair states of the aligned variant (extract_pairs)")
    p.add_argument("--base", help="pair states of the base variant, where the model has one")
    p.add_argument("--name", required=True)
    p.add_argument("--method", choices=["mean_diff", "pca", "contrastive"], default="mean_diff")
    p.add_argument("--texts", dest="texts", choices=["chosen", "rejected", "both"], default="both")
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("export-gguf", help="write a vector as a llama.cpp control vector (GGUF)")
    p.add_argument("--vectors", required=True)
    p.add_argument("--kind", default=None, help="vector kind (default: the file's steering_kind)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="blocks to export (default: all but 0)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the vectors (llama.cpp also scales)")
    p.add_argument("--model-hint", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_gguf)

    p = sub.add_parser("summarize-vectors", help="phase 2 summary table and plots")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_vectors)

    def steering_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="hub id or local directory of the model to steer")
        p.add_argument("--revision", default=None)
        p.add_argument("--dtype", default="auto")
        p.add_argument("--device", default="auto")
        p.add_argument("--trust-remote-code", action="store_true")
        p.add_argument("--name", required=True)
        p.add_argument("--vectors", required=True)
        p.add_argument("--kind", default=None, help="vector kind (default: the file's steering_kind)")
        p.add_argument("--inject", type=_layer, nargs="+", required=True)
        p.add_argument("--lambdas", type=float, nargs="+", required=True)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--seed", type=int, default=0, help="seed of the random control vector")
        p.add_argument("--out", required=True)

    p = sub.add_parser("sweep", help="phase 3: hidden states of a model steered over a lambda grid")
    steering_options(p)
    p.add_argument("--texts", required=True)
    p.add_argument("--measure", type=_layer, nargs="+", required=True)
    p.add_argument("--pooling", choices=["mean", "last"], default="mean")
    p.add_argument("--no-skip-first", dest="skip_first", action="store_false")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--preserve-norm", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("score-sweep", help="phase 3: AQI per lambda from a sweep file")
    p.add_argument("--sweep", required=True)
    p.add_argument("--prompts", required=True)
    aqi_options(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score_sweep)

    p = sub.add_parser("cost", help="phase 3: capability cost (KL, repetition) along a lambda grid")
    steering_options(p)
    p.add_argument("--neutral", default="bundled", help="bundled, or a text file with one neutral text per line")
    p.add_argument("--n-texts", type=int, default=40)
    p.add_argument("--n-prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("summarize-steering", help="phase 3 summary: curves, rho, best lambda, plots")
    p.add_argument("--sweeps", nargs="+", required=True)
    p.add_argument("--costs", nargs="+", required=True)
    p.add_argument("--baseline-summary", required=True)
    p.add_argument("--max-kl", type=float, required=True)
    p.add_argument("--max-repetition-increase", type=float, required=True)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_steering)

    p = sub.add_parser("check-config", help="validate a config file against the schema and checks")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except DriftlibError as exc:
        print(f"driftlib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("driftlib: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
