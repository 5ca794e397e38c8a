"""Phase 4's mapped condition (``cross_arch.condition: mapped``): a source's condition carried into a
target by the same affine map as its vector.

Checked against independent values: on target states that are an exact affine image of the source's,
the mapped condition equals the condition fitted on the target's own class means (direction and
midpoint threshold, by hand); the phase-3 condition file keeps the calibration class means at every
block and the evaluation states, equal to an independent extraction; the per-pair file's accuracy is
the condition's accuracy on the target's states, computed here; and the transfer sweep's conditional
tensors under mapped conditions equal a one-spec sweep gated by that method's mapped condition."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

from driftlib.core.artifacts import decode_metadata_value, load_tensors, save_tensors, write_table
from driftlib.core.errors import ConfigError
from driftlib.core.records import transfer_key
from driftlib.model.forward import extract_hidden_states
from driftlib.model.source import ModelSource
from driftlib.phases.cross_arch.evaluate import map_pair_condition
from driftlib.phases.cross_arch.run import transfer_sweep
from driftlib.phases.same_arch.run import fit_condition
from driftlib.stats.condition import (
    Condition,
    condition_accuracy,
    condition_arrays,
    load_condition,
    load_mapped_conditions,
    map_condition,
    save_condition,
)
from driftlib.stats.maps import LinearMap, save_maps
from driftlib.steer.runs import CostOptions, ReadOut
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import sweep_hidden_states
from driftlib.steer.vectors import save_vectors

HIDDEN, LAYERS = 32, 4


def _affine(rng: np.random.Generator, d_s: int, d_t: int) -> LinearMap:
    return LinearMap(method="ridge", weight=rng.standard_normal((d_s, d_t)), source_mean=rng.standard_normal(d_s),
                     target_mean=rng.standard_normal(d_t))


def test_map_condition_is_the_condition_of_the_mapped_class_means() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    unsafe = np.arange(40) % 2 == 0
    X[unsafe] += 1.5
    A = _affine(rng, 6, 9)
    Y = A.transform(X)  # the target's states: an exact affine image
    cond = map_condition(X[unsafe].mean(axis=0), X[~unsafe].mean(axis=0), A, layer=3, n_calibration=40)
    # by hand, in the target: the unit difference of its class means and the midpoint's projection
    diff = Y[unsafe].mean(axis=0) - Y[~unsafe].mean(axis=0)
    c = diff / np.linalg.norm(diff)
    np.testing.assert_allclose(cond.direction, c, rtol=1e-5, atol=1e-6)
    assert cond.threshold == pytest.approx(float((Y[unsafe].mean(axis=0) + Y[~unsafe].mean(axis=0)) / 2 @ c))
    assert cond.layer == 3 and cond.n_calibration == 40
    # a map that sends both classes to one point leaves no direction
    flat = LinearMap(method="ridge", weight=np.zeros((6, 9)), source_mean=np.zeros(6), target_mean=np.ones(9))
    with pytest.raises(Exception, match="coincide"):
        map_condition(X[unsafe].mean(axis=0), X[~unsafe].mean(axis=0), flat, layer=0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                      num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _prompts(texts: list[str], prefix: str) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{prefix}{i}" for i in range(len(texts))], "axiom": ["A", "B"] * (len(texts) // 2),
                         "safety_label": (["safe", "safe", "unsafe", "unsafe"] * len(texts))[: len(texts)],
                         "text": texts})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random model ``t`` saved with its tokenizer, evaluation and calibration prompts, and its
    phase-3 condition (fit_condition, at block 1 = the first injection block)."""
    root = tmp_path_factory.mktemp("mapped_condition")
    model, tokenizer = _model(), bpe_tokenizer(SAMPLE_TEXTS)
    model.save_pretrained(root / "t")
    tokenizer.save_pretrained(root / "t")
    ev = _prompts(SAMPLE_TEXTS + [f"{t} please" for t in SAMPLE_TEXTS[:1]], "e")
    cal = _prompts([f"{t} again" for t in SAMPLE_TEXTS] + ["One more."], "c")
    write_table(ev, root / "prompts.parquet", metadata={"dataset_fingerprint": "fp"})
    write_table(cal, root / "calibration.parquet", metadata={"dataset_fingerprint": "cfp"})
    fit_condition(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                  steering=SteeringSpec(layers=(1, 2)), calibration=root / "calibration.parquet",
                  prompts=root / "prompts.parquet", layer=None, batch_size=4, max_length=64, confidence=0.95,
                  out=root / "condition.safetensors", class_means=True)
    return root, model, tokenizer, ev, cal


def test_the_condition_file_keeps_class_means_at_every_block_and_the_evaluation_states(files) -> None:
    root, model, tokenizer, ev, cal = files
    cond, meta = load_condition(root / "condition.safetensors")
    arrays = condition_arrays(root / "condition.safetensors",
                              ["calibration_unsafe_mean", "calibration_safe_mean", "evaluation_states"])
    h = extract_hidden_states(model, tokenizer, cal["text"].tolist(), list(range(LAYERS)), pooling="last",
                              batch_size=4, max_length=64, progress=False)
    unsafe = (cal["safety_label"] == "unsafe").to_numpy()
    np.testing.assert_allclose(arrays["calibration_unsafe_mean"], h[unsafe].mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arrays["calibration_safe_mean"], h[~unsafe].mean(axis=0), rtol=1e-5, atol=1e-5)
    e = extract_hidden_states(model, tokenizer, ev["text"].tolist(), [1], pooling="last", batch_size=4,
                              max_length=64, progress=False)[:, 0, :]
    np.testing.assert_allclose(arrays["evaluation_states"], e, rtol=1e-5, atol=1e-5)
    assert cond.layer == 1
    acc = condition_accuracy(cond, e, (ev["safety_label"] == "unsafe").to_numpy())
    assert meta["condition_accuracy"] == pytest.approx(acc.accuracy)
    # without class_means (the default: cross_arch.condition target) the pass stops at the condition
    # block and no class means are kept; the condition itself is the same
    fit_condition(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                  steering=SteeringSpec(layers=(1, 2)), calibration=root / "calibration.parquet",
                  prompts=root / "prompts.parquet", layer=None, batch_size=4, max_length=64, confidence=0.95,
                  out=root / "plain.safetensors")
    plain = load_condition(root / "plain.safetensors")[0]
    np.testing.assert_allclose(plain.direction, cond.direction, rtol=1e-5, atol=1e-6)
    assert plain.threshold == pytest.approx(cond.threshold, rel=1e-5, abs=1e-6)
    with pytest.raises(Exception, match="calibration_unsafe_mean"):
        condition_arrays(root / "plain.safetensors", ["calibration_unsafe_mean"])


def _pair(root, source_layers: list[int], target_layers: list[int], rng) -> dict[str, LinearMap]:
    maps = {f"{m}/L{s}->L{t}": _affine(rng, HIDDEN, HIDDEN)
            for m in ("ridge", "procrustes") for s, t in zip(source_layers, target_layers)}
    save_maps(root / "maps.safetensors", maps, metadata={"source": "s", "target": "t", "source_layers": source_layers,
                                                         "target_layers": target_layers,
                                                         "methods": ["ridge", "procrustes"]})
    return maps


def test_the_pair_file_scores_the_mapped_condition_on_the_target(files, tmp_path) -> None:
    root, _, _, ev, _ = files
    rng = np.random.default_rng(3)
    # the source: a condition file with class means at 4 blocks (its own condition is not used)
    means = {"calibration_unsafe_mean": rng.standard_normal((LAYERS, HIDDEN)),
             "calibration_safe_mean": rng.standard_normal((LAYERS, HIDDEN))}
    save_condition(tmp_path / "source.safetensors", Condition(layer=2, direction=np.ones(HIDDEN, np.float32) / HIDDEN ** 0.5,
                                                              threshold=0.0, n_calibration=28),
                   metadata={"model": "s", "condition_accuracy": 0.6}, arrays=means)
    maps = _pair(tmp_path, [3, 0], [1, 2], rng)  # the target's condition block 1 is read from source block 3
    record = map_pair_condition(tmp_path / "source.safetensors", root / "condition.safetensors",
                                tmp_path / "maps.safetensors", root / "prompts.parquet", out=tmp_path / "mapped.safetensors")
    assert record["layer"] == 1 and record["source_layer"] == 3
    ev_states = condition_arrays(root / "condition.safetensors", ["evaluation_states"])["evaluation_states"]
    unsafe = (ev["safety_label"] == "unsafe").to_numpy()
    source, conditions = load_mapped_conditions(tmp_path / "mapped.safetensors")
    assert source == "s" and set(conditions) == {"ridge", "procrustes"}
    for method, (cond, rec) in conditions.items():
        want = map_condition(means["calibration_unsafe_mean"][3], means["calibration_safe_mean"][3],
                             maps[f"{method}/L3->L1"], layer=1)
        # the maps and means are stored as float32
        np.testing.assert_allclose(cond.direction, want.direction, rtol=1e-4, atol=1e-6)
        assert cond.threshold == pytest.approx(want.threshold, rel=1e-4, abs=1e-5)
        assert rec["condition_accuracy"] == pytest.approx(condition_accuracy(want, ev_states, unsafe).accuracy)
    # a condition block that no map reads: a config error that says what to do
    _pair(tmp_path, [3, 0], [2, 3], rng)
    with pytest.raises(ConfigError, match="injection blocks"):
        map_pair_condition(tmp_path / "source.safetensors", root / "condition.safetensors",
                           tmp_path / "maps.safetensors", root / "prompts.parquet", out=tmp_path / "x.safetensors")


def test_the_transfer_sweep_gates_each_source_by_its_mapped_condition(files, tmp_path) -> None:
    root, model, tokenizer, ev, _ = files
    rng = np.random.default_rng(4)
    ev_states = condition_arrays(root / "condition.safetensors", ["evaluation_states"])["evaluation_states"]
    paths, vectors = [], {}
    for source, seed in (("a", 10), ("b", 20)):
        sets = {f"ridge_{k}": random_vectors([1], HIDDEN, seed=seed + (k == "shuffled"), norm=6.0)
                for k in ("mapped", "shuffled")}
        vectors[source] = sets["ridge_mapped"]
        save_vectors(tmp_path / f"{source}.safetensors", {k: np.stack([v[1]]) for k, v in sets.items()}, [1],
                     metadata={"source": source, "target": "t", "model": "t", "matching": "cka",
                               "steering_kind": "ridge_mapped"})
        # a mapped condition with its threshold at the median score: about half the prompts pass
        direction = rng.standard_normal(HIDDEN)
        direction /= np.linalg.norm(direction)
        save_tensors(tmp_path / f"{source}_cond.safetensors", {"ridge.direction": direction.astype(np.float32)},
                     metadata={"source": source, "target": "t", "layer": 1, "conditions": {
                         "ridge": {"threshold": float(np.median(ev_states @ direction)), "condition_accuracy": 0.5 + seed / 100}}})
        paths.append(tmp_path / f"{source}_cond.safetensors")
    transfer_sweep(source=ModelSource(str(root / "t"), dtype="float32", device="cpu"), name="t",
                   mapped=[tmp_path / "a.safetensors", tmp_path / "b.safetensors"], methods=["ridge"],
                   steering=SteeringSpec(layers=(1,)), lambdas=[0.0, 2.0], texts=root / "prompts.parquet",
                   read=ReadOut(measure=(3,), max_length=64, pooling="last"),
                   cost=CostOptions(n_texts=2, n_prompts=1, max_new_tokens=3), batch_size=4, seed=7,
                   out=tmp_path / "sweep.safetensors", cost_out=tmp_path / "cost.parquet", compare=["conditional"],
                   mapped_conditions=paths)
    arrays, raw = load_tensors(tmp_path / "sweep.safetensors")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    assert meta["condition_source"] == "mapped"
    for source, path in zip(("a", "b"), paths):
        cond, rec = load_mapped_conditions(path)[1]["ridge"]
        key = transfer_key(source, "ridge", "mapped", "conditional")
        assert meta["conditions"][key] == rec
        spec = replace(SteeringSpec(layers=(1,)), operator="conditional", condition=cond).with_vectors(vectors[source])
        want = sweep_hidden_states(model, tokenizer, ev["text"].tolist(), spec, [0.0, 2.0], [3], pooling="last",
                                   batch_size=4, max_length=64, progress=False)
        np.testing.assert_allclose(arrays[key], want, rtol=1e-5, atol=1e-5)
        moved = np.abs(arrays[key][1] - arrays[key][0]).max(axis=(1, 2)) > 1e-4
        assert 0 < moved.sum() < len(ev)  # the gate steers some prompts, not all
