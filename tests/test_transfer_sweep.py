"""Phase 4's transfer sweep, one job per target: every spec shares the unsteered prefix, and the
per-target files equal the per-(source, target) sweeps they replace (computed here independently,
one spec at a time, with sweep_hidden_states and the capability functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

from driftlib.core.artifacts import decode_metadata_value, load_tensors, read_table, save_tensors, write_table
from driftlib.core.errors import ArtifactError, ConfigError
from driftlib.model.source import ModelSource
from driftlib.core.records import transfer_key
from driftlib.phases.cross_arch.evaluate import evaluate_pair
from driftlib.phases.cross_arch.run import transfer_sweep
from driftlib.phases.same_arch.evaluate import score_sweep
from driftlib.steer.capability import greedy_repetition, next_token_kl
from driftlib.steer.runs import CostOptions, ReadOut, cost_rows, sweep_specs
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import random_like, sweep_hidden_states
from driftlib.steer.vectors import save_vectors

HIDDEN, LAYERS = 32, 5
LAMBDAS = [0.0, 0.5, 1.0, -1.0]
METHODS = ["ridge", "procrustes"]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                      num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(SAMPLE_TEXTS)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


def _specs() -> dict[str, SteeringSpec]:
    """Specs of different operators and options; one starts earlier (block 1), so the specs do not
    share one first block."""
    base = SteeringSpec(layers=(2,))
    return {
        "add": base.with_vectors(random_vectors([2], HIDDEN, seed=1, norm=4.0)),
        "norm": SteeringSpec(layers=(2,), preserve_norm=True).with_vectors(random_vectors([2], HIDDEN, seed=2, norm=4.0)),
        "ablate_add": SteeringSpec(layers=(2,), operator="ablate_add").with_vectors(random_vectors([2], HIDDEN, seed=3)),
        "two_blocks": SteeringSpec(layers=(1, 2)).with_vectors(random_vectors([1, 2], HIDDEN, seed=4)),
    }


@pytest.mark.parametrize("lambdas", [LAMBDAS, [0.5, 2.0]], ids=["with-zero", "without-zero"])
def test_sweep_specs_equals_one_sweep_per_spec(model, tokenizer, lambdas) -> None:
    specs = _specs()
    got = sweep_specs(model, tokenizer, SAMPLE_TEXTS, specs, lambdas, [3, 4], batch_size=3)
    assert list(got) == list(specs)
    for key, spec in specs.items():
        want = sweep_hidden_states(model, tokenizer, SAMPLE_TEXTS, spec, lambdas, [3, 4], batch_size=3, progress=False)
        assert got[key].shape == want.shape == (len(lambdas), len(SAMPLE_TEXTS), 2, HIDDEN)
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-5)
    # the specs do steer, each differently (else the equality above would prove little)
    assert np.abs(got["add"][-1] - got["norm"][-1]).max() > 0.05
    assert np.abs(got["add"][-1] - got["add"][0]).max() > 0.05


def test_sweep_specs_checks_every_spec_as_a_sweep_does(model, tokenizer) -> None:
    specs = {"ok": SteeringSpec(layers=(2,)).with_vectors(random_vectors([2], HIDDEN)),
             "late": SteeringSpec(layers=(4,)).with_vectors(random_vectors([4], HIDDEN))}
    with pytest.raises(ConfigError, match="do not lie after the injection"):
        sweep_specs(model, tokenizer, SAMPLE_TEXTS, specs, LAMBDAS, [4])
    with pytest.raises(ConfigError, match="no steering specs"):
        sweep_specs(model, tokenizer, SAMPLE_TEXTS, {}, LAMBDAS, [4])


def test_cost_rows_equal_the_cost_of_each_spec_alone(model, tokenizer) -> None:
    specs = {k: v for k, v in _specs().items() if k in ("add", "two_blocks")}
    cost = CostOptions(n_texts=4, n_prompts=3, max_new_tokens=6)
    rows = pd.DataFrame(cost_rows(model, tokenizer, specs, LAMBDAS, cost, batch_size=2))
    texts, prompts = cost.texts()
    assert list(rows["vector"]) == [k for k in specs for _ in LAMBDAS]
    for key, spec in specs.items():
        got = rows[rows["vector"] == key]
        np.testing.assert_array_equal(got["lam"], LAMBDAS)
        kl = next_token_kl(model, tokenizer, texts, spec, LAMBDAS, batch_size=2, progress=False)
        rep = greedy_repetition(model, tokenizer, prompts, spec, LAMBDAS, max_new_tokens=6, batch_size=2, progress=False)
        np.testing.assert_allclose(got["kl"], kl, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["repetition"], rep, rtol=0, atol=0, equal_nan=True)
        assert got["kl"].iloc[0] == 0.0 and (got["kl"].iloc[1:] > 0).all()


# --------------------------------------------------------------------------------------------
# the phase function: every source into one target


def _prompts(path) -> pd.DataFrame:
    texts = SAMPLE_TEXTS + [f"{t} again, {i}" for i, t in enumerate(SAMPLE_TEXTS)]
    df = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "axiom": ["A", "B"] * (len(texts) // 2),
                       "safety_label": (["safe", "safe", "unsafe", "unsafe"] * len(texts))[: len(texts)],
                       "text": texts})
    write_table(df, path, metadata={"dataset_fingerprint": "fp"})
    return df


def _mapped_file(path, source: str, target: str, seed: int) -> dict[str, dict[int, np.ndarray]]:
    sets = {}
    for i, method in enumerate(METHODS):
        for kind in ("mapped", "shuffled"):
            sets[f"{method}_{kind}"] = random_vectors([2], HIDDEN, seed=seed + 10 * i + (kind == "shuffled"),
                                                      norm=seed / 50 + i)
    save_vectors(path, {k: np.stack([v[2]]) for k, v in sets.items()}, [2],
                 metadata={"source": source, "target": target, "model": target, "matching": "cka",
                           "steering_kind": f"{METHODS[0]}_mapped"})
    return sets


@pytest.fixture(scope="module")
def target_files(tmp_path_factory, model, tokenizer):
    """A saved random model (the target ``t``), two sources' mapped vectors into it, and the
    per-target sweep and cost."""
    root = tmp_path_factory.mktemp("transfer")
    model.save_pretrained(root / "t")
    tokenizer.save_pretrained(root / "t")
    prompts = _prompts(root / "prompts.parquet")
    sets = {s: _mapped_file(root / f"{s}.safetensors", s, "t", seed) for s, seed in (("a", 100), ("b", 200))}
    read = ReadOut(measure=(1.0,), max_length=64)
    cost = CostOptions(n_texts=3, n_prompts=2, max_new_tokens=5)
    transfer_sweep(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                   mapped=[root / "a.safetensors", root / "b.safetensors"], methods=METHODS,
                   steering=SteeringSpec(layers=(0.5,)), lambdas=LAMBDAS, texts=root / "prompts.parquet", read=read,
                   cost=cost, batch_size=4, seed=7, out=root / "sweep.safetensors", cost_out=root / "cost.parquet")
    return root, prompts, sets, cost


def test_transfer_sweep_names_each_source_and_equals_the_per_pair_sweeps(target_files, model, tokenizer) -> None:
    root, prompts, sets, cost = target_files
    arrays, raw = load_tensors(root / "sweep.safetensors")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    keys = [transfer_key(s, m, k) for s in ("a", "b") for m in METHODS for k in ("mapped", "shuffled", "random")]
    assert sorted(arrays) == sorted(keys) and meta["vectors"] == keys
    assert keys[0] == "a/ridge/mapped"
    assert meta["sources"] == ["a", "b"] and meta["methods"] == METHODS and meta["model"] == "t"
    assert meta["matching"] == {"a": "cka", "b": "cka"} and meta["inject_layers"] == [2]
    assert meta["random_seeds"] == {transfer_key(s, m, "random"): 7 + i for s in ("a", "b") for i, m in enumerate(METHODS)}
    spec = SteeringSpec(layers=(0.5,))
    for source, vectors in sets.items():
        for i, method in enumerate(METHODS):
            controls = {"mapped": vectors[f"{method}_mapped"], "shuffled": vectors[f"{method}_shuffled"],
                        "random": random_like(vectors[f"{method}_mapped"], 7 + i)}
            for kind, vec in controls.items():
                want = sweep_hidden_states(model, tokenizer, prompts["text"].tolist(), spec.with_vectors(vec), LAMBDAS,
                                           [4], batch_size=4, max_length=64, progress=False)
                np.testing.assert_allclose(arrays[transfer_key(source, method, kind)], want, rtol=1e-5, atol=1e-5)
    # each source's random control has its mapped vector's norms, so the controls differ per source
    # (the direction comes from seed + method index, as in the per-pair sweeps, and is shared)
    assert np.abs(arrays["a/ridge/random"][-1] - arrays["b/ridge/random"][-1]).max() > 1e-3
    table = read_table(root / "cost.parquet")[0]
    assert list(table["vector"].unique()) == [transfer_key(s, m, "mapped") for s in ("a", "b") for m in METHODS]
    assert (table["source"] == table["vector"].str.split("/").str[0]).all()
    texts, _ = cost.texts()
    kl = next_token_kl(model, tokenizer, texts, spec.with_vectors(sets["b"]["procrustes_mapped"]), LAMBDAS,
                       batch_size=4, progress=False)
    np.testing.assert_allclose(table[table["vector"] == "b/procrustes/mapped"]["kl"], kl, rtol=1e-9, atol=1e-12)


def test_transfer_sweep_refuses_a_file_into_another_target(target_files, tmp_path) -> None:
    root, *_ = target_files
    _mapped_file(tmp_path / "x.safetensors", "a", "other", 1)
    with pytest.raises(ArtifactError, match="not into 't'"):
        transfer_sweep(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                       mapped=[tmp_path / "x.safetensors"], methods=METHODS, steering=SteeringSpec(layers=(0.5,)),
                       lambdas=LAMBDAS, texts=root / "prompts.parquet", read=ReadOut(measure=(1.0,)),
                       cost=CostOptions(), batch_size=4, seed=0, out=tmp_path / "s.safetensors",
                       cost_out=tmp_path / "c.parquet")


def test_efficiency_reads_only_its_sources_slice(target_files, tmp_path) -> None:
    """The efficiency of source a from the target's file equals the one from a file that holds a's
    vectors only (what the per-pair sweep held), and differs from source b's."""
    root, prompts, _, _ = target_files
    arrays, raw = load_tensors(root / "sweep.safetensors")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    opts = dict(n_boot=20, n_perm=0, n_components=4, seed=0)
    score_sweep(root / "sweep.safetensors", root / "prompts.parquet", out=tmp_path / "aqi.parquet",
                producer="transfer_sweep", **opts)
    # the target's own phase-3 files: its "own" vector is a's ridge map here
    save_tensors(tmp_path / "own.safetensors", {"own": arrays["a/ridge/mapped"], "random": arrays["a/ridge/random"]},
                 metadata={**meta, "vectors": ["own", "random"]})
    score_sweep(tmp_path / "own.safetensors", root / "prompts.parquet", out=tmp_path / "own_aqi.parquet", **opts)
    cost = read_table(root / "cost.parquet")[0]
    own_cost = cost[cost["vector"] == "a/ridge/mapped"].assign(vector="own").drop(columns="source")
    write_table(own_cost, tmp_path / "own_cost.parquet")
    # a's slice alone, as the per-pair files held it
    mine = [k for k in meta["vectors"] if k.startswith("a/")]
    save_tensors(tmp_path / "a.safetensors", {k: arrays[k] for k in mine}, metadata={**meta, "vectors": mine, "sources": ["a"]})
    aqi = read_table(tmp_path / "aqi.parquet")[0]
    write_table(aqi[aqi["vector"].isin(mine)], tmp_path / "a_aqi.parquet")
    write_table(cost[cost["source"] == "a"], tmp_path / "a_cost.parquet")

    def efficiency(sweep, aqi_table, cost_table, source):
        return evaluate_pair(sweep, aqi_table, cost_table, tmp_path / "own.safetensors", tmp_path / "own_aqi.parquet",
                             tmp_path / "own_cost.parquet", root / "prompts.parquet", source=source, max_kl=10.0,
                             max_repetition_increase=1.0, n_components=4, n_boot=30, seed=0)

    both = efficiency(root / "sweep.safetensors", tmp_path / "aqi.parquet", root / "cost.parquet", "a")
    alone = efficiency(tmp_path / "a.safetensors", tmp_path / "a_aqi.parquet", tmp_path / "a_cost.parquet", "a")
    pd.testing.assert_frame_equal(both, alone)
    assert set(both["source"]) == {"a"} and set(both["target"]) == {"t"} and len(both) == 3 * len(METHODS)
    other = efficiency(root / "sweep.safetensors", tmp_path / "aqi.parquet", root / "cost.parquet", "b")
    assert set(other["source"]) == {"b"}
    assert not np.allclose(other["gain"].to_numpy(), both["gain"].to_numpy())
    with pytest.raises(ArtifactError, match="no vectors from 'c'"):
        efficiency(root / "sweep.safetensors", tmp_path / "aqi.parquet", root / "cost.parquet", "c")
