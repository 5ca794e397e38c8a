"""Phase 4 with the steering operators side by side: the target's one transfer sweep also steers
every mapped vector under each compared operator (the conditional one gated by the target's own
condition), the efficiency per (pair, method, operator) is measured against the target's own vector
under the same operator, and the source vector's split-half stability travels into every table.

Checked against independent values: each compared-operator tensor equals a one-spec sweep under
that operator, the efficiency equals the paired-bootstrap ratio of the sweep slices at the lambdas
chosen here by hand from the AQI and cost tables, and the stability columns equal the values in the
mapped-vectors files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

from driftlib.core.artifacts import decode_metadata_value, load_tensors, read_table, save_tensors, write_table
from driftlib.core.errors import ArtifactError, ConfigError
from driftlib.model.forward import extract_hidden_states
from driftlib.model.source import ModelSource
from driftlib.phases.cross_arch import plots
from driftlib.core.records import transfer_key
from driftlib.phases.cross_arch.evaluate import evaluate_pair
from driftlib.phases.cross_arch.run import operator_specs, transfer_sweep
from driftlib.phases.cross_arch.summary import transfer_matrix
from driftlib.phases.same_arch.evaluate import score_sweep
from driftlib.stats.condition import Condition, load_condition, save_condition
from driftlib.stats.transfer import transfer_efficiency
from driftlib.steer.runs import CostOptions, ReadOut
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import random_like, sweep_hidden_states
from driftlib.steer.vectors import save_vectors

HIDDEN, LAYERS = 32, 5
LAMBDAS = [0.0, 1.0, 2.0]
METHODS = ["ridge"]
COMPARE = ["ablate", "conditional"]
STABILITY = {"a": 0.31, "b": 0.82}  # the source vectors' split-half stability, as fit_maps records it
MAX_KL, MAX_REP = 10.0, 1.0


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                      num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _mapped_file(path, source: str, seed: int) -> dict[str, dict[int, np.ndarray]]:
    sets = {f"{m}_{kind}": random_vectors([2], HIDDEN, seed=seed + (kind == "shuffled"), norm=6.0)
            for m in METHODS for kind in ("mapped", "shuffled")}
    save_vectors(path, {k: np.stack([v[2]]) for k, v in sets.items()}, [2],
                 metadata={"source": source, "target": "t", "model": "t", "matching": "cka",
                           "steering_kind": f"{METHODS[0]}_mapped", "source_stability": STABILITY[source]})
    return sets


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random target model, two sources' mapped vectors into it, the target's condition (read at
    block 1, threshold at the median score, so about half the prompts are steered), and the
    target's transfer sweep under add, ablate and conditional."""
    root = tmp_path_factory.mktemp("transfer_ops")
    model, tokenizer = _model(), bpe_tokenizer(SAMPLE_TEXTS)
    model.save_pretrained(root / "t")
    tokenizer.save_pretrained(root / "t")
    texts = SAMPLE_TEXTS + [f"{t} again, {i}" for i, t in enumerate(SAMPLE_TEXTS)]
    texts += [f"{t} once more {i}" for i, t in enumerate(SAMPLE_TEXTS)]
    texts = texts[: len(texts) // 4 * 4]
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "axiom": ["A", "B"] * (len(texts) // 2),
                            "safety_label": (["safe", "unsafe"] * len(texts))[: len(texts)], "text": texts})
    write_table(prompts, root / "prompts.parquet", metadata={"dataset_fingerprint": "fp"})
    sets = {s: _mapped_file(root / f"{s}.safetensors", s, seed) for s, seed in (("a", 100), ("b", 200))}
    states = extract_hidden_states(model, tokenizer, texts, [1], pooling="last", batch_size=4, max_length=64,
                                   progress=False)[:, 0, :]
    direction = np.random.default_rng(5).standard_normal(HIDDEN)
    direction /= np.linalg.norm(direction)
    cond = Condition(layer=1, direction=direction.astype(np.float32),
                     threshold=float(np.median(states @ direction)))
    save_condition(root / "condition.safetensors", cond, metadata={
        "model": "t", "condition_accuracy": 0.625, "condition_ci_low": 0.41, "condition_ci_high": 0.8,
        "condition_n": len(texts)})
    transfer_sweep(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                   mapped=[root / "a.safetensors", root / "b.safetensors"], methods=METHODS,
                   steering=SteeringSpec(layers=(2,)), lambdas=LAMBDAS, texts=root / "prompts.parquet",
                   read=ReadOut(measure=(4,), max_length=64), cost=CostOptions(n_texts=3, n_prompts=2, max_new_tokens=5),
                   batch_size=4, seed=7, out=root / "sweep.safetensors", cost_out=root / "cost.parquet",
                   compare=["add", *COMPARE], condition=root / "condition.safetensors")
    score_sweep(root / "sweep.safetensors", root / "prompts.parquet", out=root / "aqi.parquet",
                producer="transfer_sweep", n_boot=20, n_perm=0, n_components=4, seed=0)
    return root, model, tokenizer, prompts, sets, load_condition(root / "condition.safetensors")[0]


def test_compared_operators_are_more_specs_of_the_same_sweep(files) -> None:
    root, model, tokenizer, prompts, sets, cond = files
    arrays, raw = load_tensors(root / "sweep.safetensors")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    ops = [None, *COMPARE]  # "add" is the main operator: compared again, it is not swept twice
    keys = [transfer_key(s, m, k, op) for s in ("a", "b") for m in METHODS for op in ops
            for k in ("mapped", "shuffled", "random")]
    assert meta["vectors"] == keys and sorted(arrays) == sorted(keys)
    assert "a/ridge/mapped/conditional" in keys and meta["operator"] == "add" and meta["compare"] == COMPARE
    assert meta["operators"] == {k: (k.split("/")[3] if k.count("/") == 3 else "add") for k in keys}
    # the tensors under each operator are those of a sweep of that operator alone
    base = SteeringSpec(layers=(2,))
    for op in ops:
        spec = base if op is None else replace(base, operator=op, condition=cond if op == "conditional" else None)
        for kind, vec in (("mapped", sets["a"]["ridge_mapped"]), ("random", random_like(sets["a"]["ridge_mapped"], 7))):
            want = sweep_hidden_states(model, tokenizer, prompts["text"].tolist(), spec.with_vectors(vec), LAMBDAS,
                                       [4], batch_size=4, max_length=64, progress=False)
            np.testing.assert_allclose(arrays[transfer_key("a", "ridge", kind, op)], want, rtol=1e-5, atol=1e-5)
    # the operators steer differently (else the equalities above would prove little)
    lam = LAMBDAS.index(2.0)
    for op in COMPARE:
        assert np.abs(arrays[f"a/ridge/mapped/{op}"][lam] - arrays["a/ridge/mapped"][lam]).max() > 1e-2
    # the condition steers some prompts and leaves the others as they were
    moved = np.abs(arrays["a/ridge/mapped/conditional"][lam] - arrays["a/ridge/mapped"][0]).max(axis=(1, 2)) > 1e-4
    assert 0 < moved.sum() < len(prompts)
    # the condition's accuracy record is the file's
    assert meta["condition"]["condition_accuracy"] == 0.625 and meta["condition"]["layer"] == 1
    # each mapped vector is costed under each operator
    cost = read_table(root / "cost.parquet")[0]
    assert list(cost["vector"].unique()) == [k for k in keys if k.split("/")[2] == "mapped"]
    assert (cost["operator"] == cost["vector"].map(meta["operators"])).all()


def test_stability_travels_from_the_mapped_vectors_file(files) -> None:
    root, *_ = files
    meta = {k: decode_metadata_value(v) for k, v in load_tensors(root / "sweep.safetensors")[1].items()}
    aqi = read_table(root / "aqi.parquet")[0]
    for key in meta["vectors"]:
        source, _, kind = key.split("/")[:3]
        rows = aqi[aqi["vector"] == key]
        assert (rows["operator"] == meta["operators"][key]).all()
        if kind == "mapped":
            np.testing.assert_array_equal(rows["vector_stability"], STABILITY[source])
        else:  # the controls have no stability
            assert rows["vector_stability"].isna().all()


def _own_files(root, arrays, meta, op: str | None, tmp_path) -> tuple:
    """The target's phase-3 files under one operator: its "own" vector is b's ridge map under that
    operator, its costs are made up so that lambda 2 is outside the bound."""
    name = op or "add"
    own = {"own": arrays[transfer_key("b", "ridge", "mapped", op)], "random": arrays[transfer_key("b", "ridge", "random", op)]}
    save_tensors(tmp_path / f"own_{name}.safetensors", own,
                 metadata={**meta, "vectors": ["own", "random"], "operator": name, "stability": {"own": 0.55}})
    score_sweep(tmp_path / f"own_{name}.safetensors", root / "prompts.parquet", out=tmp_path / f"own_{name}.parquet",
                n_boot=20, n_perm=0, n_components=4, seed=0)
    cost = pd.DataFrame({"vector": ["own"] * 3 + ["random"] * 3, "lam": LAMBDAS * 2,
                         "kl": [0.0, 1.0, 50.0] * 2, "repetition": [0.1, 0.1, 0.1] * 2})
    write_table(cost, tmp_path / f"own_cost_{name}.parquet")
    return tmp_path / f"own_{name}.safetensors", tmp_path / f"own_{name}.parquet", tmp_path / f"own_cost_{name}.parquet"


def _best_by_hand(aqi: pd.DataFrame, cost: pd.DataFrame | None, key: str) -> float:
    """The highest overall AQI (primary layer) among the lambdas inside the cost bound."""
    rows = aqi[(aqi["vector"] == key) & aqi["primary"] & (aqi["category"] == "overall")].set_index("lam")["aqi"]
    inside = []
    for lam in LAMBDAS:
        if cost is not None and lam != 0:
            c = cost[cost["lam"] == lam].iloc[0]
            rep0 = cost[cost["lam"] == 0]["repetition"].iloc[0]
            if not (c["kl"] <= MAX_KL and c["repetition"] - rep0 <= MAX_REP):
                continue
        inside.append(lam)
    return max(inside, key=lambda lam: rows[lam])


def test_efficiency_per_operator_equals_the_hand_computation(files, tmp_path) -> None:
    root, _, _, prompts, _, _ = files
    arrays, raw = load_tensors(root / "sweep.safetensors")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    aqi = read_table(root / "aqi.parquet")[0]
    cost = read_table(root / "cost.parquet")[0]
    owns = {op: _own_files(root, arrays, meta, op, tmp_path) for op in [None, *COMPARE]}
    table = evaluate_pair(root / "sweep.safetensors", root / "aqi.parquet", root / "cost.parquet",
                          [o[0] for o in owns.values()], [o[1] for o in owns.values()], [o[2] for o in owns.values()],
                          root / "prompts.parquet", source="a", max_kl=MAX_KL, max_repetition_increase=MAX_REP,
                          n_components=4, n_boot=30, seed=0)
    assert len(table) == 3 * 3 * len(METHODS) and set(table["operator"]) == {"add", *COMPARE}
    y = (prompts["safety_label"] == "safe").to_numpy().astype(np.int8)
    h0 = arrays["a/ridge/mapped"][0, :, 0, :]
    for op, (own_sweep, own_aqi, own_cost) in owns.items():
        own_table = read_table(own_aqi)[0]
        own_lam = _best_by_hand(own_table, read_table(own_cost)[0], "own")
        h_own = load_tensors(own_sweep)[0]["own"][LAMBDAS.index(own_lam), :, 0, :]
        for kind in ("mapped", "shuffled", "random"):
            key = transfer_key("a", "ridge", kind, op)
            lam = _best_by_hand(aqi, cost[cost["vector"] == key] if kind == "mapped" else None, key)
            want = transfer_efficiency(h0, arrays[key][LAMBDAS.index(lam), :, 0, :], h_own, y, n_components=4,
                                       n_boot=30, seed=0)
            got = table[(table["operator"] == (op or "add")) & (table["vector"] == kind)].iloc[0]
            assert got["lam"] == lam and got["own_lam"] == own_lam
            np.testing.assert_allclose([got["gain"], got["own_gain"], got["gain_mde"]],
                                       [want["gain_mapped"], want["gain_own"], want["gain_mapped_mde"]], rtol=1e-12)
            np.testing.assert_allclose(got["efficiency"], want["efficiency"], rtol=1e-12, equal_nan=True)
            assert got["defined"] == want["defined"] and got["own_stability"] == 0.55
            assert got["vector_stability"] == STABILITY["a"] if kind == "mapped" else np.isnan(got["vector_stability"])
            if op == "conditional":
                assert got["condition_accuracy"] == 0.625 and got["condition_ci_low"] == 0.41
            else:
                assert np.isnan(got["condition_accuracy"])
    # the operators' gains differ: each row reads its own operator's slice
    gains = table[table["vector"] == "mapped"].set_index("operator")["gain"]
    assert len(set(np.round(gains.to_numpy(), 9))) == 3
    # an own sweep under an operator the transfer sweep did not run is refused
    wrong = _own_files(root, arrays, meta, None, tmp_path)
    save_tensors(wrong[0], load_tensors(wrong[0])[0], metadata={**meta, "vectors": ["own", "random"],
                                                                 "operator": "ablate_add"})
    with pytest.raises(ArtifactError, match="ablate_add"):
        evaluate_pair(root / "sweep.safetensors", root / "aqi.parquet", root / "cost.parquet", [wrong[0]], [wrong[1]],
                      [wrong[2]], root / "prompts.parquet", source="a", max_kl=MAX_KL,
                      max_repetition_increase=MAX_REP, n_components=4, n_boot=5, seed=0)


def test_a_compared_gated_operator_needs_the_targets_condition(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a condition"):
        operator_specs(SteeringSpec(layers=(2,)), ["conditional"])
    specs, record = operator_specs(SteeringSpec(layers=(2,)), ["ablate", "add"])
    assert list(specs) == [None, "ablate"] and specs["ablate"].operator == "ablate" and record == {}


def test_matrix_ranks_each_operator_and_marks_unstable_sources(tmp_path) -> None:
    fits, effs = [], []
    for source, target in (("a", "t"), ("b", "t")):
        fit = pd.DataFrame({"source": source, "target": target, "method": ["ridge", "procrustes"], "source_layer": 1,
                            "target_layer": 2, "r2": [0.5, 0.4], "cosine": 0.3, "shuffled_r2": 0.0, "cos_own": 0.1,
                            "shuffled_cos_own": 0.0})
        write_table(fit, tmp_path / f"fit_{source}.parquet")
        fits.append(tmp_path / f"fit_{source}.parquet")
        rows = []
        for op, scale in (("add", 1.0), ("conditional", -1.0)):
            for i, method in enumerate(("ridge", "procrustes")):
                for vector in ("mapped", "shuffled", "random"):
                    eff = scale * (0.2 + 0.5 * i) if vector == "mapped" else 0.0
                    rows.append({"source": source, "target": target, "method": method, "operator": op,
                                 "vector": vector, "lam": 1.0, "gain": eff, "efficiency": eff, "ci_low": eff - 0.1,
                                 "ci_high": eff + 0.1, "defined": True,
                                 "vector_stability": STABILITY[source] if vector == "mapped" else np.nan})
        write_table(pd.DataFrame(rows), tmp_path / f"eff_{source}.parquet", metadata={"operator": "add"})
        effs.append(tmp_path / f"eff_{source}.parquet")
    matrix = transfer_matrix(fits, effs, stability_floor=0.5)
    assert len(matrix) == 2 * 2 * 2
    best = matrix[matrix["best"]].set_index(["source", "operator"])["method"]
    # under add procrustes is best (0.7 > 0.2); under conditional the signs flip, so ridge is
    assert best[("a", "add")] == best[("b", "add")] == "procrustes"
    assert best[("a", "conditional")] == best[("b", "conditional")] == "ridge"
    np.testing.assert_array_equal(matrix["below_stability_floor"], matrix["source"] == "a")
    np.testing.assert_array_equal(matrix["vector_stability"], matrix["source"].map(STABILITY))
    plots.transfer_matrix(matrix, tmp_path / "m.png", baseline="a", main="add")
    assert (tmp_path / "m.png").stat().st_size > 0
    # the summary: the baseline's row under the main operator, and under each operator
    from driftlib.core.artifacts import write_json
    from driftlib.phases.cross_arch.summary import summarize_transfer

    write_json({"baseline": "a"}, tmp_path / "baseline.json")
    write_json({"source": "a", "target": "t", "used": "cka", "target_layers": [2], "by_cka": [1], "by_depth": [1],
                "cka": np.eye(3).tolist()}, tmp_path / "matching.json")
    summary = summarize_transfer(fits, effs, tmp_path / "baseline.json", [tmp_path / "matching.json"], tmp_path / "out",
                                 stability_floor=0.5)
    assert summary["operator"] == "add" and set(summary["baseline_by_operator"]) == {"add", "conditional"}
    assert summary["baseline_row"]["t"]["method"] == "procrustes" and summary["baseline_row"]["t"]["below_stability_floor"]
    assert summary["baseline_by_operator"]["conditional"]["t"]["efficiency"] == pytest.approx(-0.2)


def test_fit_maps_records_the_source_vectors_stability_at_the_blocks_it_maps(tmp_path) -> None:
    from driftlib.core.layerspec import resolve_layers
    from driftlib.phases.cross_arch.evaluate import fit_pair
    from driftlib.stats.layer_matching import match_by_depth
    from driftlib.steer.vectors import load_vectors

    rng = np.random.default_rng(0)
    n, layers_s, layers_t, d = 40, 6, 4, 8
    ids = [f"a{i}" for i in range(n)]
    for name, depth in (("s", layers_s), ("t", layers_t)):
        save_tensors(tmp_path / f"{name}_anchors.safetensors",
                     {"hidden": rng.standard_normal((n, depth, d)).astype(np.float32)},
                     metadata={"layer_spec": "all", "ids": ids})
        stab = [round(0.9 - 0.1 * i, 2) for i in range(depth)]
        save_vectors(tmp_path / f"{name}_vectors.safetensors",
                     {"mean_diff_both": rng.standard_normal((depth, d)).astype(np.float32)}, list(range(depth)),
                     metadata={"steering_kind": "mean_diff_both", "stability": {"mean_diff_both": stab}})
    fit_pair(tmp_path / "s_anchors.safetensors", tmp_path / "t_anchors.safetensors", tmp_path / "s_vectors.safetensors",
             tmp_path / "t_vectors.safetensors", source="s", target="t", inject=[1, 2], matching="depth",
             methods=["ridge"], folds=2, out_maps=tmp_path / "maps.safetensors", out_vectors=tmp_path / "mapped.safetensors",
             out_fit=tmp_path / "fit.parquet", out_matching=tmp_path / "matching.json")
    source_layers = match_by_depth(resolve_layers([1, 2], layers_t), layers_s, layers_t)
    meta = load_vectors(tmp_path / "mapped.safetensors", "ridge_mapped", producer="fit_maps")[1]
    assert meta["source_stability"] == pytest.approx(min(0.9 - 0.1 * s for s in source_layers))
