"""Phase 2 commands: ``vectors``, ``export-gguf``, ``summarize-vectors``."""

from __future__ import annotations

import argparse

from driftlib.cli.common import command, steering, steering_options


def vectors(a: argparse.Namespace) -> None:
    from driftlib.phases.vectors.run import compute

    compute(aligned=a.aligned, base=a.base, name=a.name, method=a.method, texts=a.texts, splits=a.splits,
            seed=a.seed, out=a.out, stats=a.stats)


def export_gguf(a: argparse.Namespace) -> None:
    from driftlib.phases.vectors.run import export_gguf

    export_gguf(vectors=a.vectors, kind=a.kind, layers=a.layers, scale=a.scale, model_hint=a.model_hint,
                steering=steering(a), out=a.out)


def summarize_vectors(a: argparse.Namespace) -> None:
    from driftlib.phases.vectors.summary import summarize_vectors

    summarize_vectors(a.tables, a.out_dir)


def register(sub) -> None:
    p = command(sub, "vectors", vectors, "phase 2: steering vectors of one model and their per-layer figures")
    p.add_argument("--aligned", required=True, help="pair states of the aligned variant (extract_pairs)")
    p.add_argument("--base", help="pair states of the base variant, where the model has one")
    p.add_argument("--name", required=True)
    p.add_argument("--method", choices=["mean_diff", "pca", "contrastive"], default="mean_diff")
    p.add_argument("--texts", dest="texts", choices=["chosen", "rejected", "both"], default="both")
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)

    p = command(sub, "export-gguf", export_gguf, "write a vector as a llama.cpp control vector (GGUF)")
    p.add_argument("--vectors", required=True)
    p.add_argument("--kind", default=None, help="vector kind (default: the file's steering_kind)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="blocks to export (default: all but 0)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the vectors (llama.cpp also scales)")
    p.add_argument("--model-hint", default=None)
    steering_options(p, inject_default=[0.5])
    p.add_argument("--out", required=True)

    p = command(sub, "summarize-vectors", summarize_vectors, "phase 2 summary table and plots")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
