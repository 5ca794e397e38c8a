"""Phase 4's behaviour: each target's greedy answers unsteered and under each source's mapped vector
at that vector's best lambda (``transfer-answers``), and the table the summary builds from them.

Checked against independent values: the answers of each cell equal ``answer_rows`` with the mapped
vector of the method the matrix picks, bound by hand, at the lambda written in the efficiency table
(a cell at lambda 0 repeats the unsteered answers); the behaviour table's rates, intervals, change
and minimum detectable effect equal hand computations from the counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

from driftlib.core.artifacts import read_table, write_table
from driftlib.core.errors import ArtifactError
from driftlib.model.source import ModelSource
from driftlib.phases.cross_arch.run import answered_cells, transfer_answers
from driftlib.phases.cross_arch.summary import BEHAVIOUR_COLUMNS, transfer_behaviour
from driftlib.stats.behaviour import newcombe_interval, split_se, wilson_interval
from driftlib.stats.power import minimum_detectable_effect
from driftlib.steer.runs import answer_rows
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.vectors import save_vectors

HIDDEN, LAYERS = 32, 4
METHODS = ("ridge", "procrustes")
#: (source, method, operator) -> (lambda, efficiency): ridge is a's best method, procrustes b's
CELLS = {("a", "ridge", "add"): (1.0, 0.9), ("a", "procrustes", "add"): (2.0, 0.2),
         ("a", "ridge", "ablate"): (0.0, 0.5), ("a", "procrustes", "ablate"): (1.0, 0.1),
         ("b", "ridge", "add"): (1.0, 0.1), ("b", "procrustes", "add"): (3.0, 0.7),
         ("b", "ridge", "ablate"): (1.0, 0.1), ("b", "procrustes", "ablate"): (-2.0, 0.4)}


def _mapped(path, source: str, seed: int) -> dict[str, dict[int, np.ndarray]]:
    sets = {f"{m}_{kind}": random_vectors([2], HIDDEN, seed=seed + 10 * i + (kind == "shuffled"), norm=8.0)
            for i, m in enumerate(METHODS) for kind in ("mapped", "shuffled")}
    save_vectors(path, {k: np.stack([v[2]]) for k, v in sets.items()}, [2],
                 metadata={"source": source, "target": "t", "model": "t", "matching": "cka",
                           "steering_kind": "ridge_mapped"})
    return sets


def _pair_tables(root, source: str) -> tuple:
    fit = pd.DataFrame([{"source": source, "target": "t", "method": m, "r2": 0.5, "cosine": 0.5, "shuffled_r2": 0.0,
                         "cos_own": 0.1, "shuffled_cos_own": 0.0, "source_layer": 1, "target_layer": 2}
                        for m in METHODS])
    rows = []
    for (s, method, op), (lam, eff) in CELLS.items():
        if s != source:
            continue
        for vector in ("mapped", "shuffled", "random"):
            rows.append({"source": s, "target": "t", "method": method, "operator": op, "vector": vector,
                         "lam": lam if vector == "mapped" else 0.0, "gain": 0.1, "efficiency": eff if vector == "mapped" else 0.0,
                         "ci_low": 0.0, "ci_high": 1.0, "defined": True})
    write_table(fit, root / f"{source}_fit.parquet")
    write_table(pd.DataFrame(rows), root / f"{source}_eff.parquet")
    return root / f"{source}_fit.parquet", root / f"{source}_eff.parquet"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer_answers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                      num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    tokenizer = bpe_tokenizer(SAMPLE_TEXTS)
    model.save_pretrained(root / "t")
    tokenizer.save_pretrained(root / "t")
    texts = SAMPLE_TEXTS + [f"{t} Why?" for t in SAMPLE_TEXTS[:1]]  # 8 prompts, 4 a class
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "axiom": ["A", "B"] * (len(texts) // 2),
                            "safety_label": (["safe", "unsafe"] * len(texts))[: len(texts)], "text": texts})
    write_table(prompts, root / "prompts.parquet", metadata={"dataset_fingerprint": "fp"})
    sets = {s: _mapped(root / f"{s}.safetensors", s, seed) for s, seed in (("a", 100), ("b", 200))}
    tables = {s: _pair_tables(root, s) for s in ("a", "b")}
    transfer_answers(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                     mapped=[root / "a.safetensors", root / "b.safetensors"],
                     fits=[tables["a"][0], tables["b"][0]], efficiencies=[tables["a"][1], tables["b"][1]],
                     steering=SteeringSpec(layers=(2,)), prompts=root / "prompts.parquet", matrix_method="best",
                     max_new_tokens=5, batch_size=4, max_length=64, out=root / "answers.parquet", compare=["ablate"])
    return root, model, tokenizer, prompts, sets, tables


def test_each_cell_is_the_best_methods_vector_at_its_lambda(files) -> None:
    root, model, tokenizer, prompts, sets, _ = files
    got, meta = read_table(root / "answers.parquet")
    common = {"name": "t", "variant": "base", "max_new_tokens": 5, "batch_size": 4, "max_length": 64}
    unsteered = answer_rows(model, tokenizer, prompts, None, [0.0], **common)
    base = got[got["source"] == ""].reset_index(drop=True)
    pd.testing.assert_frame_equal(base[unsteered.columns.tolist()], unsteered)
    # the best method per (source, operator): the highest efficiency of CELLS
    expected = {("a", "add"): ("ridge", 1.0), ("a", "ablate"): ("ridge", 0.0),
                ("b", "add"): ("procrustes", 3.0), ("b", "ablate"): ("procrustes", -2.0)}  # a negative best lambda steers
    steered = got[got["source"] != ""]
    assert sorted(set(zip(steered["source"], steered["operator"]))) == sorted(expected)
    for (source, op), (method, lam) in expected.items():
        rows = steered[(steered["source"] == source) & (steered["operator"] == op)].reset_index(drop=True)
        assert set(rows["method"]) == {method} and set(rows["lam"]) == {lam}
        if lam == 0:  # no lambda raised the AQI inside the bound: the unsteered answers, relabelled
            want = unsteered.assign(operator=op)
        else:
            spec = SteeringSpec(layers=(2,), operator=op).with_vectors(sets[source][f"{method}_mapped"])
            want = answer_rows(model, tokenizer, prompts, spec, [lam], **common)
        pd.testing.assert_frame_equal(rows[want.columns.tolist()], want)
    assert meta["matrix_method"] == "best"


def test_steering_changes_some_answers(files) -> None:
    """Not a vacuous comparison: a mapped vector of norm 8 changes the random model's greedy answers."""
    root = files[0]
    got = read_table(root / "answers.parquet")[0]
    base = got[got["source"] == ""].set_index("id")["text"]
    moved = got[(got["source"] == "b") & (got["operator"] == "add")].set_index("id")["text"]
    assert (base != moved.reindex(base.index)).any()


def test_a_fixed_matrix_method_and_refusals(files, tmp_path) -> None:
    root, _, _, _, _, tables = files
    cells = answered_cells([tables["a"][0], tables["b"][0]], [tables["a"][1], tables["b"][1]], name="t",
                           matrix_method="ridge")
    assert set(cells["method"]) == {"ridge"}
    assert dict(zip(zip(cells["source"], cells["operator"]), cells["lam"])) == {
        ("a", "add"): 1.0, ("a", "ablate"): 0.0, ("b", "add"): 1.0, ("b", "ablate"): 1.0}
    with pytest.raises(ArtifactError, match="not only 'u'"):
        answered_cells([tables["a"][0]], [tables["a"][1]], name="u")


def _answers(counts: dict[tuple[str, str], tuple[int, int]], n: int = 10) -> pd.DataFrame:
    """Answer rows: per (source, operator) ``k_unsafe`` of ``n`` unsafe and ``k_safe`` of ``n`` safe refused."""
    frames = []
    for (source, op), (k_unsafe, k_safe) in counts.items():
        refused = [True] * k_unsafe + [False] * (n - k_unsafe) + [True] * k_safe + [False] * (n - k_safe)
        frames.append(pd.DataFrame({
            "model": "t", "variant": "base", "operator": op if source else "none", "lam": 1.0 if source else 0.0,
            "id": [f"p{i}" for i in range(2 * n)], "axiom": ["A"] * (2 * n),
            "safety_label": ["unsafe"] * n + ["safe"] * n, "text": "x", "refused": refused,
            "source": source, "method": "ridge" if source else ""}))
    return pd.concat(frames, ignore_index=True)


def test_behaviour_table_against_hand_values(tmp_path) -> None:
    write_table(_answers({("", "none"): (2, 1), ("a", "add"): (8, 2), ("a", "ablate"): (2, 1)}),
                tmp_path / "answers.parquet")
    table = transfer_behaviour([tmp_path / "answers.parquet"], confidence=0.95)
    # one axiom: an overall row and a (descriptive) axiom row per cell, with the same counts here
    assert list(table.columns) == BEHAVIOUR_COLUMNS and len(table) == 4
    assert list(table["axiom"]) == ["overall", "A"] * 2 and list(table["descriptive"]) == [False, True] * 2
    row = table[(table["operator"] == "add") & (table["axiom"] == "overall")].iloc[0]
    assert row["refusal_unsafe"] == pytest.approx(0.8) and row["over_refusal_safe"] == pytest.approx(0.2)
    assert (row["refusal_unsafe_ci_low"], row["refusal_unsafe_ci_high"]) == pytest.approx(wilson_interval(8, 10))
    assert (row["over_refusal_safe_ci_low"], row["over_refusal_safe_ci_high"]) == pytest.approx(wilson_interval(2, 10))
    assert row["split"] == pytest.approx(0.6) and row["unsteered_split"] == pytest.approx(0.1)
    assert row["change"] == pytest.approx(0.5)
    # MOVER from the two Newcombe intervals, by hand
    lo1, hi1 = newcombe_interval(8, 10, 2, 10)
    lo0, hi0 = newcombe_interval(2, 10, 1, 10)
    assert row["change_ci_low"] == pytest.approx(0.5 - math.hypot(0.6 - lo1, hi0 - 0.1))
    assert row["change_ci_high"] == pytest.approx(0.5 + math.hypot(hi1 - 0.6, 0.1 - lo0))
    se = math.hypot(split_se(0.8, 10, 0.2, 10), split_se(0.2, 10, 0.1, 10))
    assert row["change_se"] == pytest.approx(se)
    assert row["change_mde"] == pytest.approx(minimum_detectable_effect(se, alpha=0.05))
    assert bool(row["change_resolvable"]) == (0.5 >= row["change_mde"])
    assert table[table["operator"] == "add"].iloc[1]["change"] == pytest.approx(0.5)
    same = table[table["operator"] == "ablate"].iloc[0]  # the unsteered counts again: no change
    assert same["change"] == pytest.approx(0.0) and not bool(same["change_resolvable"])
