"""Phase 4: does a model's vector, mapped into another architecture, steer that model too?

Three steps per (source, target) pair, each one workflow rule and one CLI command:

1. :func:`fit_pair` (``driftlib fit-maps``): match layers on the anchor texts (linear CKA or
   relative depth, :mod:`driftlib.stats.layer_matching`), fit every map method from the matched source
   layer to each target injection layer (:mod:`driftlib.stats.maps`) with its cross-validated held-out
   fit, fit the same method on shuffled pairs (the shuffled-map control), and map the source's
   steering vector with the linear part of each map. Writes the maps, the mapped vectors (a
   vectors file that ``driftlib transfer-sweep`` steers with), a fit table and the matching.
2. ``driftlib transfer-sweep`` (:func:`driftlib.phases.cross_arch.run.transfer_sweep`), once per
   *target*: the target's base model steered over the lambda grid with the mapped vectors of
   every source into it, each method's shuffled-map vector and a random vector of the mapped
   vector's norms, all sharing one unsteered prefix per batch; plus the capability cost of each
   mapped vector. Tensors and cost rows are named ``{source}/{method}/{kind}`` (:func:`transfer_key`,
   kind one of :data:`~driftlib.stats.selection.TRANSFER_VECTORS`); ``driftlib score-sweep``
   scores the whole file.
3. :func:`evaluate_pair` (``driftlib transfer-efficiency``), per pair, on its source's slice of the
   target's sweep, scores and cost: per method, the best lambda of the
   mapped vector inside the cost bound, the target's own best lambda from phase 3, and the transfer
   efficiency (best AQI gain with the mapped vector / best AQI gain with the target's own vector)
   with a paired bootstrap interval (:func:`driftlib.stats.transfer.transfer_efficiency`); the controls
   the same way.

:func:`summarize_transfer` gathers every pair into the source x target matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.artifacts import (
    decode_metadata_value,
    load_tensors,
    read_table,
    write_json,
    write_table,
)
from driftlib.core.errors import ArtifactError
from driftlib.core.records import transfer_key
from driftlib.stats.selection import TRANSFER_VECTORS

logger = logging.getLogger(__name__)


def _anchor_states(path: str | Path) -> tuple[np.ndarray, dict]:
    arrays, raw = load_tensors(path, expect={"layer_spec": "all"}, producer="extract_anchors")
    if "hidden" not in arrays:
        raise ArtifactError(f"{path}: no 'hidden' tensor. Re-run the rule that writes it (extract_anchors).")
    return arrays["hidden"], {k: decode_metadata_value(v) for k, v in raw.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def fit_pair(source_anchors: str | Path, target_anchors: str | Path, source_vectors: str | Path,
             target_vectors: str | Path, *, source: str, target: str, inject: Sequence[int | float],
             matching: str = "cka", methods: Sequence[str] = ("ridge", "procrustes", "relative"),
             procrustes_components: int | None = 32, relative_anchors: int = 64, folds: int = 5,
             seed: int = 0, out_maps: str | Path, out_vectors: str | Path, out_fit: str | Path,
             out_matching: str | Path) -> pd.DataFrame:
    """Fit and evaluate every map from ``source`` into ``target``; map the source's vector.

    ``source_anchors``/``target_anchors``: pooled states ``[n, L, d]`` of the same anchor texts at
    every block (``driftlib extract --all-layers``). ``inject``: the target's injection layers
    (block indices or relative depths, resolved in the target's depth). Returns the fit table:
    one row per (method, target layer) with the matched source layer, held-out R^2 and cosine of
    the map and of its shuffled control, and how the mapped vector compares with the target's own.
    """
    from driftlib.core.layerspec import resolve_layers
    from driftlib.stats.layer_matching import cka_matrix, match_by_cka, match_by_depth
    from driftlib.stats.maps import fit_map, heldout_fit, save_maps, shuffled_control
    from driftlib.steer.vectors import load_steering_vectors, save_vectors

    hs, ms = _anchor_states(source_anchors)
    ht, mt = _anchor_states(target_anchors)
    if ms.get("ids") != mt.get("ids") or hs.shape[0] != ht.shape[0]:
        raise ArtifactError(f"{source_anchors} and {target_anchors} hold different anchor texts; re-run "
                            "extract_anchors for both models on the same anchors table")
    n_source, n_target = hs.shape[1], ht.shape[1]
    target_layers = resolve_layers(list(inject), n_target, key="steering.layers")
    cka = cka_matrix(hs, ht)
    by_depth = match_by_depth(target_layers, n_source, n_target)
    by_cka = match_by_cka(cka, target_layers)
    source_layers = by_cka if matching == "cka" else by_depth
    source_set, target_set = load_steering_vectors(source_vectors), load_steering_vectors(target_vectors)
    v_source, source_kind = source_set.vectors, source_set.kind
    # the source vector's split-half stability at the blocks it is mapped from travels with the mapped vectors
    source_stability = source_set.stability_at(sorted(set(source_layers)))
    v_target, target_kind = target_set.vectors, target_set.kind
    options = {"procrustes": {"n_components": procrustes_components},
               "relative": {"n_anchors": relative_anchors, "anchor_seed": seed}}
    maps, mapped, rows = {}, {}, []
    for method in methods:
        opts = options.get(method, {})
        mapped[f"{method}_mapped"], mapped[f"{method}_shuffled"] = [], []
        for s, t in zip(source_layers, target_layers):
            X, Y = hs[:, s, :].astype(np.float64), ht[:, t, :].astype(np.float64)
            fitted = fit_map(method, X, Y, **opts)
            fit = heldout_fit(method, X, Y, n_folds=folds, seed=seed, **opts)
            control, control_fit = shuffled_control(method, X, Y, seed=seed, n_folds=folds, **opts)
            name = f"{method}/L{s}->L{t}"
            maps[name], maps[f"{method}/shuffled/L{s}->L{t}"] = fitted, control
            vec = fitted.map_vector(v_source[s])
            ctrl_vec = control.map_vector(v_source[s])
            mapped[f"{method}_mapped"].append(vec)
            mapped[f"{method}_shuffled"].append(ctrl_vec)
            own = v_target.get(t)
            rows.append({
                "source": source, "target": target, "method": method, "source_layer": int(s),
                "target_layer": int(t), "matching": matching, "cka": float(cka[s, t]),
                "r2": fit["r2"], "cosine": fit["cosine"],
                "shuffled_r2": control_fit["r2"], "shuffled_cosine": control_fit["cosine"],
                "cos_own": _cosine(vec, own) if own is not None else float("nan"),
                "shuffled_cos_own": _cosine(ctrl_vec, own) if own is not None else float("nan"),
                "source_norm": float(np.linalg.norm(v_source[s])), "mapped_norm": float(np.linalg.norm(vec)),
                "own_norm": float(np.linalg.norm(own)) if own is not None else float("nan"),
                "n_anchors": int(X.shape[0]), "map_info": str(fitted.info),
            })
            logger.info("%s -> %s, %s, L%d -> L%d: held-out R^2 %.3f (shuffled %.3f), cos with own vector %.3f",
                        source, target, method, s, t, fit["r2"], control_fit["r2"], rows[-1]["cos_own"])
    table = pd.DataFrame(rows)
    meta = {"source": source, "target": target, "matching": matching, "source_layers": source_layers,
            "target_layers": target_layers, "source_kind": source_kind, "target_kind": target_kind,
            "methods": list(methods), "folds": folds, "seed": seed,
            "anchors_fingerprint": ms.get("dataset_fingerprint", "")}
    save_maps(out_maps, maps, metadata=meta)
    save_vectors(out_vectors, {k: np.stack(v) for k, v in mapped.items()}, target_layers,
                 metadata={**meta, "model": target, "steering_kind": f"{methods[0]}_mapped",
                           "source_stability": source_stability})
    write_table(table, out_fit, metadata=meta)
    write_json({"source": source, "target": target, "used": matching, "target_layers": target_layers,
                "source_layers": source_layers, "by_depth": by_depth, "by_cka": by_cka,
                "n_source_layers": n_source, "n_target_layers": n_target, "cka": cka.tolist()}, out_matching)
    return table


def map_pair_condition(source_condition: str | Path, target_condition: str | Path, maps: str | Path,
                       prompts: str | Path, *, confidence: float = 0.95, out: str | Path) -> dict:
    """The source's condition mapped into the target by each map method (``cross_arch.condition: mapped``).

    For each method of the pair's ``fit_maps`` file, the map that reads the target's condition block
    (a target injection block; its source block is the matched one) carries the source's calibration
    class means at that source block into the target (:func:`driftlib.stats.condition.map_condition`:
    direction and threshold from the mapped means, no target label). Its accuracy is measured on the
    target's own states of the evaluation prompts at that block (kept beside the target's
    ``fit-condition`` file), with a Wilson interval. Writes one file: a ``{method}.direction`` tensor
    per method; metadata ``source``, ``target``, ``layer``, ``source_layer`` and, per method, the
    threshold and the accuracy record (``conditions``); :func:`driftlib.stats.condition.load_mapped_conditions`
    reads it. Returns that metadata.

    Raises:
        ConfigError: the target's condition block is not an injection block (no map reads it).
    """
    from driftlib.core.artifacts import save_tensors
    from driftlib.core.errors import ConfigError
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.stats.condition import condition_accuracy, condition_arrays, load_condition, map_condition
    from driftlib.stats.maps import load_maps

    src_cond, src_meta = load_condition(source_condition)
    tgt_cond, tgt_meta = load_condition(target_condition)
    means = condition_arrays(source_condition, ["calibration_unsafe_mean", "calibration_safe_mean"])
    ev_states = condition_arrays(target_condition, ["evaluation_states"])["evaluation_states"]
    fitted = load_maps(maps)
    raw = load_tensors(maps, producer="fit_maps")[1]
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    layer = int(tgt_cond.layer)
    if layer not in meta["target_layers"]:
        raise ConfigError(f"cross_arch.condition: mapped needs the target's condition block ({layer}) to be one of "
                          f"its injection blocks {meta['target_layers']} (only those have maps); set "
                          "steering.condition.layer to null or use cross_arch.condition: target")
    source_layer = int(meta["source_layers"][meta["target_layers"].index(layer)])
    ev = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")[0]
    if len(ev) != ev_states.shape[0]:
        raise ArtifactError(f"{target_condition}: {ev_states.shape[0]} evaluation states for {len(ev)} prompts; "
                            "re-run fit_condition")
    unsafe = (ev["safety_label"] == "unsafe").to_numpy()
    tensors, conditions = {}, {}
    for method in meta["methods"]:
        cond = map_condition(means["calibration_unsafe_mean"][source_layer], means["calibration_safe_mean"][source_layer],
                             fitted[f"{method}/L{source_layer}->L{layer}"], layer=layer,
                             n_calibration=src_cond.n_calibration)
        acc = condition_accuracy(cond, ev_states, unsafe, confidence=confidence)
        tensors[f"{method}.direction"] = cond.direction
        conditions[method] = {"threshold": cond.threshold, **acc.record()}
        logger.info("%s -> %s, %s: mapped condition at L%d -> L%d, evaluation accuracy %.3f [%.3f, %.3f] "
                    "(the target's own: %.3f)", meta["source"], meta["target"], method, source_layer, layer,
                    acc.accuracy, acc.ci_low, acc.ci_high, float(tgt_meta.get("condition_accuracy", float("nan"))))
    record = {"source": meta["source"], "target": meta["target"], "layer": layer, "source_layer": source_layer,
              "conditions": conditions, "confidence": confidence,
              "target_condition_accuracy": float(tgt_meta.get("condition_accuracy", float("nan"))),
              "source_condition_accuracy": float(src_meta.get("condition_accuracy", float("nan")))}
    save_tensors(out, tensors, metadata=record)
    return record


# --------------------------------------------------------------------------------------------
# step 3: efficiency per method


def _paths(value: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [value] if isinstance(value, (str, Path)) else list(value)


def _own_operator(o_meta: dict, t_meta: dict, path: str | Path, transfer_sweep: str | Path) -> str | None:
    """The transfer-key suffix of an own phase-3 sweep's operator: None for the transfer sweep's main
    operator, the operator's name for a compared one."""
    op = str(o_meta.get("operator", "add"))
    if op == t_meta.get("operator", "add"):
        return None
    if op not in (t_meta.get("compare") or []):
        raise ArtifactError(f"{path} steers under {op!r}, but {transfer_sweep} has no vectors under it (operators "
                            f"{[t_meta.get('operator', 'add'), *(t_meta.get('compare') or [])]}); re-run transfer_sweep "
                            "with steering.compare as phase 3 ran it")
    return op


def evaluate_pair(transfer_sweep: str | Path, transfer_aqi: str | Path, transfer_cost: str | Path,
                  own_sweep: str | Path | Sequence[str | Path], own_aqi: str | Path | Sequence[str | Path],
                  own_cost: str | Path | Sequence[str | Path], prompts: str | Path, *,
                  source: str, max_kl: float, max_repetition_increase: float, method: str = "standardize",
                  n_components: int | None = 32, n_boot: int = 1000, confidence: float = 0.95,
                  seed: int = 0, out: str | Path | None = None) -> pd.DataFrame:
    """Transfer efficiency of each method's mapped vector and of its controls, per operator, with intervals.

    The mapped vector's best lambda is the highest overall AQI (primary measure layer) inside the
    capability-cost bound, as in phase 3; the target's own best lambda comes from its phase-3
    sweep the same way. The controls (shuffled map, random vector) were not costed: each is taken
    at its highest AQI over the grid, which favours the control (a conservative comparison).
    Efficiency = gain / own gain at those lambdas, with a paired bootstrap over prompts.

    ``transfer_sweep``, ``transfer_aqi`` and ``transfer_cost`` are the target's files (every source
    into it, every operator); only ``source``'s vectors (``{source}/{method}/{kind}[/{operator}]``)
    are read. ``own_sweep``, ``own_aqi``, ``own_cost``: the target's phase-3 files, one path each, or
    one per operator (the main operator's and those of ``steering.compare``, in the same order);
    each sweep's operator is read from its metadata, and the mapped vectors under that operator are
    compared with the own vector under the same operator. Every operator shares the unsteered state
    (lambda 0 steers nothing). Rows carry the mapped vector's ``vector_stability`` (the source
    vector's, NaN for the controls), the own vector's ``own_stability`` and, for the conditional
    operator, the condition's accuracy on the evaluation prompts and where it came from
    (``condition_source``: ``target``, fitted in the target; ``mapped``, the source's mapped in).
    """
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.stats.selection import best_in_bound, overall_curve, states_at
    from driftlib.stats.transfer import transfer_efficiency

    own_sweeps, own_aqis, own_costs = _paths(own_sweep), _paths(own_aqi), _paths(own_cost)
    if not len(own_sweeps) == len(own_aqis) == len(own_costs):
        raise ArtifactError(f"give one own sweep, AQI table and cost table per operator; got {len(own_sweeps)}, "
                            f"{len(own_aqis)} and {len(own_costs)}")
    prompts_df, _ = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    y = (prompts_df["safety_label"].to_numpy() == "safe").astype(np.int8)
    t_arrays, t_raw = load_tensors(transfer_sweep, producer="transfer_sweep")
    t_meta = {k: decode_metadata_value(v) for k, v in t_raw.items()}
    t_aqi = read_table(transfer_aqi, columns=["vector", "lam", "layer", "category", "aqi"], producer="score_transfer")[0]
    t_cost = read_table(transfer_cost, columns=["vector", "lam", "kl", "repetition"], producer="transfer_sweep")[0]
    if source not in t_meta.get("sources", []):
        raise ArtifactError(f"{transfer_sweep}: no vectors from {source!r} (sources {t_meta.get('sources')}); "
                            "re-run transfer_sweep")
    t_lams = list(t_meta["lambdas"])
    primary = 0  # the first measure layer is the primary one
    h0 = states_at(t_arrays, transfer_key(source, t_meta["methods"][0], "mapped"), t_lams, 0.0, primary, transfer_sweep)
    stability, operators = t_meta.get("stability") or {}, t_meta.get("operators") or {}
    # the conditional operator's condition: the target's own (one record), or each source's mapped one
    # (``cross_arch.condition: mapped``; one record per vector)
    condition, per_vector = t_meta.get("condition") or {}, t_meta.get("conditions") or {}
    rows = []
    for o_path, o_aqi_path, o_cost_path in zip(own_sweeps, own_aqis, own_costs):
        o_arrays, o_raw = load_tensors(o_path, producer="sweep_same_arch")
        o_meta = {k: decode_metadata_value(v) for k, v in o_raw.items()}
        for key in ("dataset_fingerprint", "measure_layers"):
            if t_meta.get(key) != o_meta.get(key):
                raise ArtifactError(f"{transfer_sweep} and {o_path} differ in {key} ({t_meta.get(key)!r} vs "
                                    f"{o_meta.get(key)!r}); re-run transfer_sweep")
        op = _own_operator(o_meta, t_meta, o_path, transfer_sweep)
        o_aqi = read_table(o_aqi_path, columns=["vector", "lam", "layer", "category", "aqi"], producer="score_sweep")[0]
        o_cost = read_table(o_cost_path, columns=["vector", "lam", "kl", "repetition"], producer="capability_cost")[0]
        own_best = best_in_bound(overall_curve(o_aqi, "own"), o_cost[o_cost["vector"] == "own"], max_kl,
                                 max_repetition_increase)
        own_lam = own_best.lam if own_best.lam is not None else 0.0
        h_own = states_at(o_arrays, "own", list(o_meta["lambdas"]), own_lam, primary, o_path)
        own_stability = float((o_meta.get("stability") or {}).get("own", float("nan")))
        for m in t_meta["methods"]:
            mapped_key = transfer_key(source, m, "mapped", op)
            best = best_in_bound(overall_curve(t_aqi, mapped_key), t_cost[t_cost["vector"] == mapped_key], max_kl,
                                 max_repetition_increase)
            lam_mapped = best.lam if best.lam is not None else 0.0
            for vector in TRANSFER_VECTORS:
                key = transfer_key(source, m, vector, op)
                lam = lam_mapped if vector == "mapped" else best_in_bound(overall_curve(t_aqi, key), None, 0, 0).lam or 0.0
                h = states_at(t_arrays, key, t_lams, lam, primary, transfer_sweep)
                eff = transfer_efficiency(h0, h, h_own, y, method=method, n_components=n_components,
                                          n_boot=n_boot, confidence=confidence, seed=seed)
                operator = operators.get(key, op or t_meta.get("operator", "add"))
                cond = per_vector.get(key, condition) if operator == "conditional" else {}
                rows.append({"source": source, "target": t_meta.get("model", ""), "method": m, "operator": operator,
                             "vector": vector, "lam": float(lam), "own_lam": float(own_lam),
                             "layer": int(t_meta["measure_layers"][primary]),
                             "gain": eff["gain_mapped"], "gain_ci_low": eff["gain_mapped_ci"][0],
                             "gain_ci_high": eff["gain_mapped_ci"][1], "gain_mde": eff["gain_mapped_mde"],
                             "gain_resolvable": bool(abs(eff["gain_mapped"]) >= eff["gain_mapped_mde"]),
                             "own_gain": eff["gain_own"],
                             "own_gain_ci_low": eff["gain_own_ci"][0], "own_gain_ci_high": eff["gain_own_ci"][1],
                             "own_gain_mde": eff["gain_own_mde"],
                             "efficiency": eff["efficiency"], "ci_low": eff["ci_low"], "ci_high": eff["ci_high"],
                             "defined": bool(eff["defined"]),
                             "vector_stability": float(stability.get(key, float("nan"))),
                             "own_stability": own_stability,
                             "condition_accuracy": float(cond.get("condition_accuracy", float("nan"))),
                             "condition_ci_low": float(cond.get("condition_ci_low", float("nan"))),
                             "condition_ci_high": float(cond.get("condition_ci_high", float("nan"))),
                             "condition_source": (t_meta.get("condition_source") or "target") if cond else "",
                             "note": "; ".join(x for x in (eff["note"], best.note if vector == "mapped" else "") if x)})
    table = pd.DataFrame(rows)
    if out is not None:
        write_table(table, out, metadata={"source": source, "target": t_meta.get("model", ""),
                                          "operator": t_meta.get("operator", "add"), "n_boot": n_boot,
                                          "confidence": confidence, "seed": seed, "max_kl": max_kl,
                                          "max_repetition_increase": max_repetition_increase})
    return table


__all__ = ["evaluate_pair", "fit_pair", "map_pair_condition"]
