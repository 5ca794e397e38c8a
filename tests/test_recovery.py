"""Phase 4.5 arithmetic: the recovery rate, its undefined case, the limits, the cross-arch pick."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from driftlib.phases.recovery.evaluate import recovery_rate
from driftlib.phases.recovery.run import pick_cross_arch
from driftlib.phases.recovery.summary import largest_recovered_drop
from driftlib.stats.transfer import transfer_efficiency


def test_recovery_rate_on_constructed_numbers():
    assert recovery_rate(40.0, 10.0, 25.0) == pytest.approx(0.5)   # half of a 30-point drop back
    assert recovery_rate(40.0, 10.0, 40.0) == pytest.approx(1.0)
    assert recovery_rate(40.0, 10.0, 46.0) == pytest.approx(1.2)   # overshoot
    assert recovery_rate(40.0, 10.0, 4.0) == pytest.approx(-0.2)   # steering made it worse
    assert recovery_rate(40.0, 10.0, 10.0) == 0.0


@pytest.mark.parametrize("aligned, dealigned", [(10.0, 10.0), (10.0, 12.0), (float("nan"), 1.0)])
def test_recovery_rate_is_undefined_without_a_drop(aligned, dealigned):
    assert math.isnan(recovery_rate(aligned, dealigned, 20.0))


def test_largest_recovered_drop():
    drops = [2.0, 5.0, 9.0, 14.0]
    rates = [0.9, 0.6, 0.45, float("nan")]
    assert largest_recovered_drop(drops, rates, fraction=0.5) == 5.0
    assert largest_recovered_drop(drops, rates, fraction=0.4) == 9.0
    assert largest_recovered_drop(drops, rates, fraction=0.4, defined=[True, True, False, True]) == 5.0
    assert largest_recovered_drop(drops, rates, fraction=0.95) is None


def _blobs(rng, n, shift):
    y = np.repeat([1, 0], n // 2)
    X = rng.standard_normal((n, 6))
    X[y == 1, 0] += shift
    return X, y


def test_rate_with_interval_is_the_paired_ratio_of_aqi_gains():
    """The recovery rate is transfer_efficiency with the dealigned model as the unsteered state
    and the aligned model as the reference: check it against the AQIs computed one by one."""
    from driftlib.stats.aqi import alignment_quality

    rng = np.random.default_rng(0)
    aligned, y = _blobs(rng, 400, 2.0)
    dealigned = aligned.copy()
    dealigned[y == 1, 0] -= 1.5          # most of the separation gone
    steered = dealigned.copy()
    steered[y == 1, 0] += 0.75            # half of it back
    opts = dict(method="standardize", n_components=None)
    r = transfer_efficiency(dealigned, steered, aligned, y, n_boot=300, seed=1, **opts)
    a, d, s = (alignment_quality(h, y, n_boot=0, n_perm=0, **opts).aqi for h in (aligned, dealigned, steered))
    assert r["efficiency"] == pytest.approx(recovery_rate(a, d, s), rel=1e-9)
    assert r["defined"] and r["ci_low"] < r["efficiency"] < r["ci_high"]
    assert 0.2 < r["efficiency"] < 0.8


def test_pick_cross_arch_uses_the_best_phase4_method_of_the_baseline_row():
    matrix = pd.DataFrame({"source": ["a", "a", "b", "b"], "target": ["c", "c", "c", "c"],
                           "method": ["ridge", "procrustes", "ridge", "procrustes"],
                           "best": [False, True, True, False]})
    assert pick_cross_arch(matrix, "a", "c") == ("a", "procrustes")
    assert pick_cross_arch(matrix, "b", "c") == ("b", "ridge")
    assert pick_cross_arch(matrix, "c", "c") is None      # the baseline itself: same-arch only
    assert pick_cross_arch(matrix, "a", "d") is None      # no phase-4 pair into d
    assert pick_cross_arch(matrix, None, "c") is None


def test_recovery_notes_speak_of_the_dealignment_not_of_mapped_vectors() -> None:
    """Phase 4.5 reuses phase 4's efficiency arithmetic; its notes must not reuse phase 4's words."""
    import numpy as np

    from driftlib.phases.recovery.evaluate import recovery_note
    from driftlib.stats.transfer import transfer_efficiency

    rng = np.random.default_rng(0)
    y = np.repeat([True, False], 30)
    same = rng.standard_normal((60, 6))
    # the "aligned" states equal the dealigned ones: no drop at all
    r = transfer_efficiency(same, same + 0.01 * rng.standard_normal((60, 6)), same, y, n_components=None, n_boot=50)
    assert r["reason"] in ("no_reference_gain", "reference_gain_in_noise") and not r["defined"]
    note = recovery_note(r, 0.95)
    assert note.startswith("undefined: the dealignment")
    assert "mapped" not in note and "target's own vector" not in note
    assert recovery_note({"reason": "no_reference_gain", "gain_own": -0.5, "gain_own_ci": [-1.0, 0.1],
                          "note": ""}, 0.95) == ("undefined: the dealignment did not lower the AQI (drop = -0.5 <= 0), "
                                                 "so there is nothing to recover")


# --------------------------------------------------------------------------------------------
# behaviour: the refusal split's drop and its recovery, against a hand computation


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval, written out (Wilson 1927)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _answers(counts: dict[float, tuple[int, int, int, int]]) -> pd.DataFrame:
    """Answer rows with, per lambda, (refused unsafe, unsafe, refused safe, safe) as given."""
    frames = []
    for lam, (ku, nu, ks, ns) in counts.items():
        frames.append(pd.DataFrame({"model": "m", "steps": 20, "lam": lam,
                                    "safety_label": ["unsafe"] * nu + ["safe"] * ns,
                                    "refused": [True] * ku + [False] * (nu - ku) + [True] * ks + [False] * (ns - ks)}))
    return pd.concat(frames, ignore_index=True)


def test_behaviour_drop_and_recovery_equal_the_hand_computation() -> None:
    from scipy.stats import norm

    from driftlib.phases.recovery.evaluate import behaviour_recovery

    aligned = {"refused_unsafe": 36, "n_unsafe": 40, "refused_safe": 4, "n_safe": 40}   # split 0.9 - 0.1 = 0.8
    answers = _answers({0.0: (10, 40, 6, 40), 1.0: (30, 40, 8, 40), 2.0: (40, 40, 40, 40)})
    r = behaviour_recovery(answers, aligned, 1.0, confidence=0.95)
    z = norm.ppf(0.975)
    a, d, s = 36 / 40 - 4 / 40, 10 / 40 - 6 / 40, 30 / 40 - 8 / 40
    assert r["aligned_split"] == pytest.approx(0.8) and r["dealigned_split"] == pytest.approx(0.1)
    assert r["drop"] == pytest.approx(a - d) and r["gain"] == pytest.approx(s - d)

    def newcombe(ku, nu, ks, ns):
        (l1, u1), (l2, u2) = _wilson(ku, nu, z), _wilson(ks, ns, z)
        p1, p2 = ku / nu, ks / ns
        return p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2)

    (la, ua), (ld, ud) = newcombe(36, 40, 4, 40), newcombe(10, 40, 6, 40)
    assert (r["aligned_ci_low"], r["aligned_ci_high"]) == pytest.approx((la, ua), rel=1e-12)
    assert (r["dealigned_ci_low"], r["dealigned_ci_high"]) == pytest.approx((ld, ud), rel=1e-12)
    # MOVER: the difference of two differences from their own intervals
    assert r["drop_ci_low"] == pytest.approx(a - d - math.hypot(a - la, ud - d), rel=1e-12)
    assert r["drop_ci_high"] == pytest.approx(a - d + math.hypot(ua - a, d - ld), rel=1e-12)

    def se(ku, nu, ks, ns):  # Agresti-Caffo: one more refusal and one more answer per class
        tu, ts = (ku + 1) / (nu + 2), (ks + 1) / (ns + 2)
        return math.sqrt(tu * (1 - tu) / (nu + 2) + ts * (1 - ts) / (ns + 2))

    drop_se = math.hypot(se(36, 40, 4, 40), se(10, 40, 6, 40))
    assert r["drop_se"] == pytest.approx(drop_se, rel=1e-12)
    assert r["drop_mde"] == pytest.approx((z + norm.ppf(0.8)) * drop_se, rel=1e-9)
    assert r["drop_resolvable"] and r["defined"]
    assert r["share"] == pytest.approx((s - d) / (a - d), rel=1e-12)
    assert r["share_ci_low"] < r["share"] < r["share_ci_high"]
    # no drop beyond its MDE: the share is undefined, and the note says why in phase 4.5's words
    flat = behaviour_recovery(_answers({0.0: (35, 40, 4, 40), 1.0: (36, 40, 4, 40)}), aligned, 1.0)
    assert not flat["defined"] and not flat["drop_resolvable"] and math.isnan(flat["share"])
    assert "aligned and dealigned do not differ" in flat["note"]


# --------------------------------------------------------------------------------------------
# the recovery rates per operator and the stability, from a constructed sweep file

LAMS = [0.0, 1.0, 2.0]
KEYS = {"same_arch": ("add", 0.62), "random": ("add", float("nan")), "same_arch/conditional": ("conditional", 0.62),
        "random/conditional": ("conditional", float("nan"))}


@pytest.fixture()
def recovery_files(tmp_path):
    """A prompt table, the aligned model's states, and a recovery sweep of two vectors under two
    operators (made-up states: each (vector, operator, lambda) gives back a known share of the
    separation the dealignment removed), with its scores and costs."""
    from driftlib.core.artifacts import save_tensors, write_table
    from driftlib.phases.same_arch.evaluate import score_sweep

    rng = np.random.default_rng(3)
    n = 80
    y = np.repeat([1, 0], n // 2)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "axiom": ["A", "B"] * (n // 2),
                            "safety_label": np.where(y == 1, "safe", "unsafe"), "text": [f"t{i}" for i in range(n)]})
    write_table(prompts, tmp_path / "prompts.parquet", metadata={"dataset_fingerprint": "fp"})
    aligned = rng.standard_normal((n, 6))
    aligned[y == 1, 0] += 2.5
    save_tensors(tmp_path / "aligned.safetensors", {"hidden": aligned[:, None, :].astype(np.float32)},
                 metadata={"layers": [3], "dataset_fingerprint": "fp"})
    dealigned = aligned.copy()
    dealigned[y == 1, 0] -= 2.0
    share = {"same_arch": 0.5, "random": 0.0, "same_arch/conditional": 0.8, "random/conditional": 0.1}
    arrays = {}
    for key, s in share.items():
        per_lam = [dealigned + (lam / 2) * s * 2.0 * (y == 1)[:, None] * np.eye(6)[0] for lam in LAMS]
        arrays[key] = np.stack(per_lam)[:, :, None, :].astype(np.float32)
    meta = {"model": "m", "lambdas": LAMS, "measure_layers": [3], "dataset_fingerprint": "fp", "vectors": list(KEYS),
            "operator": "add", "compare": ["conditional"], "operators": {k: v[0] for k, v in KEYS.items()},
            "stability": {k: v[1] for k, v in KEYS.items()}, "steps": 20,
            "sources": {k: k.split("/")[0] for k in KEYS},
            "condition": {"condition_accuracy": 0.7, "condition_ci_low": 0.6, "condition_ci_high": 0.8}}
    save_tensors(tmp_path / "sweep.safetensors", arrays, metadata=meta)
    score_sweep(tmp_path / "sweep.safetensors", tmp_path / "prompts.parquet", out=tmp_path / "sweep_aqi.parquet",
                producer="recovery_sweep", n_boot=20, n_perm=0, n_components=None, seed=0)
    # lambda 2 is outside the KL bound under add, inside under conditional
    cost = pd.DataFrame({"vector": ["same_arch"] * 3 + ["same_arch/conditional"] * 3, "lam": LAMS * 2,
                         "kl": [0.0, 0.1, 9.0, 0.0, 0.1, 0.2], "repetition": 0.0})
    write_table(cost, tmp_path / "cost.parquet")
    return tmp_path, arrays, aligned.astype(np.float32), y


def test_recovery_rate_per_operator_equals_the_hand_computation(recovery_files) -> None:
    from driftlib.phases.recovery.evaluate import evaluate_recovery

    root, arrays, aligned, y = recovery_files
    table = evaluate_recovery(root / "sweep.safetensors", root / "sweep_aqi.parquet", root / "cost.parquet",
                              root / "aligned.safetensors", root / "prompts.parquet", steps=20, max_kl=1.0,
                              max_repetition_increase=1.0, n_components=None, n_boot=50, seed=0,
                              out=root / "recovery.parquet")
    assert list(zip(table["vector"], table["operator"])) == [(k.split("/")[0], v[0]) for k, v in KEYS.items()]
    # by hand: the costed vectors at their best lambda inside the bound (add: 1, conditional: 2),
    # the random control at its highest AQI over the grid
    aqi = pd.read_parquet(root / "sweep_aqi.parquet")
    overall = aqi[aqi["primary"] & (aqi["category"] == "overall")]
    for key, (op, stability) in KEYS.items():
        if key.startswith("same_arch"):
            lam = 1.0 if op == "add" else 2.0
        else:
            curve = overall[overall["vector"] == key].set_index("lam")["aqi"]
            lam = float(curve.idxmax())
        want = transfer_efficiency(arrays["same_arch"][0, :, 0], arrays[key][LAMS.index(lam), :, 0], aligned, y,
                                   n_components=None, n_boot=50, seed=0)
        got = table[(table["vector"] == key.split("/")[0]) & (table["operator"] == op)].iloc[0]
        assert got["lam"] == lam
        np.testing.assert_allclose([got["drop"], got["gain"], got["rate"]],
                                   [want["gain_own"], want["gain_mapped"], want["efficiency"]], rtol=1e-12)
        np.testing.assert_allclose(got["vector_stability"], stability, equal_nan=True)
        assert (got["condition_accuracy"] == 0.7) == (op == "conditional")
    rates = table.set_index(["vector", "operator"])["rate"]
    # the constructed shares: the conditional rows (lambda 2, 80% of the removed shift back) recover
    # more than the add rows (lambda 1, a quarter of it)
    assert rates[("same_arch", "conditional")] > rates[("same_arch", "add")] > 0


def test_summary_reports_operators_stability_and_behaviour(recovery_files) -> None:
    from driftlib.core.artifacts import read_json, write_table
    from driftlib.phases.recovery.evaluate import behaviour_recovery, evaluate_recovery
    from driftlib.phases.recovery.summary import summarize_recovery

    root, *_ = recovery_files
    evaluate_recovery(root / "sweep.safetensors", root / "sweep_aqi.parquet", root / "cost.parquet",
                      root / "aligned.safetensors", root / "prompts.parquet", steps=20, max_kl=1.0,
                      max_repetition_increase=1.0, n_components=None, n_boot=30, seed=0, out=root / "recovery.parquet")
    answers = _answers({0.0: (10, 40, 6, 40), 1.0: (30, 40, 8, 40), 2.0: (40, 40, 40, 40)})
    answers["axiom"] = np.where(np.arange(len(answers)) % 2 == 0, "A", "B")
    write_table(answers, root / "answers.parquet")
    behaviour = pd.DataFrame({"model": "m", "variant": "aligned", "axiom": ["overall", "A", "B"],
                              "refused_unsafe": [36, 18, 18], "n_unsafe": [40, 20, 20], "refused_safe": [4, 2, 2],
                              "n_safe": [40, 20, 20]})
    write_table(behaviour, root / "behaviour.parquet")
    out = root / "out"
    limits = summarize_recovery([root / "recovery.parquet"], [root / "sweep_aqi.parquet"], out, fraction=0.4,
                                answers=[root / "answers.parquet"], behaviour=root / "behaviour.parquet",
                                stability_floor=0.7)
    summary = pd.read_parquet(out / "recovery_summary.parquet")
    np.testing.assert_array_equal(summary["below_stability_floor"], summary["vector"] == "same_arch")  # 0.62 < 0.7
    assert set(limits["operators"]) == {"add", "conditional"} and limits["operator"] == "add"
    assert limits["models"]["m"] == limits["operators"]["add"]["m"]
    beh = pd.read_parquet(out / "recovery_behaviour.parquet")
    want = behaviour_recovery(answers, behaviour.iloc[0].to_dict(), 1.0)  # same_arch's best lambda under add
    assert len(beh) == 1 and beh["lam"].iloc[0] == 1.0
    assert beh["drop"].iloc[0] == pytest.approx(0.7) and beh["share"].iloc[0] == pytest.approx(want["share"])
    # the same-arch vector's stability travels into its behaviour row, marked against the floor
    assert beh["vector_stability"].iloc[0] == pytest.approx(0.62) and bool(beh["below_stability_floor"].iloc[0])
    assert read_json(out / "recovery_limits.json")["behaviour"]["m/steps20"]["drop"] == pytest.approx(0.7)
    # per axiom: each axiom's answers against the aligned model's counts on that axiom, marked descriptive
    axioms = pd.read_parquet(out / "recovery_behaviour_axioms.parquet").set_index("axiom")
    assert list(axioms.index) == ["overall", "A", "B"] and list(axioms["descriptive"]) == [False, True, True]
    assert axioms.loc["overall", "share"] == pytest.approx(want["share"])
    for axiom in ("A", "B"):
        one = behaviour_recovery(answers[answers["axiom"] == axiom], behaviour.set_index("axiom").loc[axiom].to_dict(), 1.0)
        assert axioms.loc[axiom, "drop"] == pytest.approx(one["drop"]) and axioms.loc[axiom, "gain"] == pytest.approx(one["gain"])
    for name in ("recovery_curves.png", "recovery_vs_drop.png", "dealign_drop.png", "recovery_behaviour.png"):
        assert (out / name).stat().st_size > 0


# --------------------------------------------------------------------------------------------
# the recovery sweep itself, on a random model with a LoRA adapter


def test_recovery_sweep_records_operators_stability_condition_and_answers(tmp_path) -> None:
    """One recovery sweep under add and conditional: the compared keys are swept, each vector's
    stability is the one its file records (the model's own at its injection blocks; the mapped
    vector's source stability), the cross-arch map is ranked under the main operator only, and the
    answers at lambda 0 are those of the dealigned model unsteered."""
    import peft
    import torch
    import transformers
    from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

    from driftlib.core.artifacts import decode_metadata_value, load_tensors, read_table, write_table
    from driftlib.model.source import ModelSource
    from driftlib.phases.recovery.dealign import load_dealigned
    from driftlib.phases.recovery.run import recovery_sweep
    from driftlib.stats.condition import Condition, save_condition
    from driftlib.steer.runs import CostOptions, ReadOut, answer_rows
    from driftlib.steer.spec import SteeringSpec
    from driftlib.steer.vectors import save_vectors

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2)
    model, tokenizer = transformers.AutoModelForCausalLM.from_config(config).eval(), bpe_tokenizer(SAMPLE_TEXTS)
    model.save_pretrained(tmp_path / "aligned")
    tokenizer.save_pretrained(tmp_path / "aligned")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    texts = SAMPLE_TEXTS[: len(SAMPLE_TEXTS) // 2 * 2]
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "axiom": "A",
                            "safety_label": ["safe", "unsafe"] * (len(texts) // 2), "text": texts})
    write_table(prompts, tmp_path / "prompts.parquet", metadata={"dataset_fingerprint": "fp"})
    own = random_vectors(range(4), 32, seed=3, norm=4.0)
    save_vectors(tmp_path / "own.safetensors", {"mean_diff_both": np.stack([own[i] for i in range(4)])}, list(range(4)),
                 metadata={"steering_kind": "mean_diff_both", "stability": {"mean_diff_both": [0.9, 0.8, 0.45, 0.7]}})
    save_vectors(tmp_path / "mapped.safetensors", {f"{m}_{k}": np.stack([random_vectors([2], 32, seed=4)[2]])
                                                   for m in ("ridge", "procrustes") for k in ("mapped", "shuffled")}, [2],
                 metadata={"source": "src", "target": "m", "steering_kind": "ridge_mapped", "source_stability": 0.33})
    aqi = pd.DataFrame({"model": ["src", "m"], "variant": "aligned", "category": "overall", "layer": 3, "primary": True,
                        "defined": True, "aqi": [5.0, 1.0], "ci_low": [4.0, 0.0], "ci_high": [6.0, 2.0]})
    write_table(aqi, tmp_path / "aqi.parquet")
    fit = pd.DataFrame({"source": "src", "target": "m", "method": ["ridge", "procrustes"], "source_layer": 2,
                        "target_layer": 2, "r2": 0.5, "cosine": 0.3, "shuffled_r2": 0.0, "cos_own": 0.1,
                        "shuffled_cos_own": 0.0})
    write_table(fit, tmp_path / "fit.parquet")
    # procrustes is best under add, ridge under conditional: the sweep must take add's (the main operator)
    eff = pd.DataFrame([{"source": "src", "target": "m", "method": m, "operator": op, "vector": v, "lam": 1.0,
                         "gain": 0.1, "efficiency": e if v == "mapped" else 0.0, "ci_low": 0.0, "ci_high": 1.0,
                         "defined": True}
                        for op, best in (("add", "procrustes"), ("conditional", "ridge"))
                        for m in ("ridge", "procrustes") for v in ("mapped", "shuffled", "random")
                        for e in [0.9 if m == best else 0.2]])
    write_table(eff, tmp_path / "eff.parquet")
    cond = Condition(layer=1, direction=np.eye(32, dtype=np.float32)[0], threshold=0.0)
    save_condition(tmp_path / "condition.safetensors", cond)
    read = ReadOut(measure=(3,), max_length=64)
    recovery_sweep(source=ModelSource(str(tmp_path / "aligned"), dtype="float32", device="cpu"), name="m",
                   adapter=tmp_path / "adapter", steps=20, vectors=tmp_path / "own.safetensors",
                   steering=SteeringSpec(layers=(1, 2), condition=cond), aqi_tables=[tmp_path / "aqi.parquet"],
                   fits=[tmp_path / "fit.parquet"], efficiencies=[tmp_path / "eff.parquet"],
                   mapped=[tmp_path / "mapped.safetensors"], lambdas=[0.0, 1.0], texts=tmp_path / "prompts.parquet",
                   read=read, cost=CostOptions(n_texts=2, n_prompts=2, max_new_tokens=4), batch_size=4, seed=0,
                   out=tmp_path / "sweep.safetensors", cost_out=tmp_path / "cost.parquet", compare=["conditional"],
                   answers_out=tmp_path / "answers.parquet", answer_tokens=4)
    arrays, raw = load_tensors(tmp_path / "sweep.safetensors")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    keys = ["same_arch", "cross_arch", "random", "same_arch/conditional", "cross_arch/conditional", "random/conditional"]
    assert meta["vectors"] == keys and meta["compare"] == ["conditional"]
    assert meta["operators"] == {k: "conditional" if "/" in k else "add" for k in keys}
    assert meta["sources"]["cross_arch"] == "src via procrustes"
    # the own vector's stability is the lowest at its injection blocks 1 and 2 (0.8, 0.45); the mapped one's the file's
    stability = {k: v for k, v in meta["stability"].items()}
    assert stability["same_arch"] == stability["same_arch/conditional"] == 0.45
    assert stability["cross_arch"] == stability["cross_arch/conditional"] == 0.33
    assert np.isnan(stability["random"]) and np.isnan(stability["random/conditional"])
    assert 0 <= meta["condition"]["condition_accuracy"] <= 1 and meta["condition"]["condition_n"] == len(texts)
    cost = read_table(tmp_path / "cost.parquet")[0]
    assert list(cost["vector"].unique()) == ["same_arch", "cross_arch", "same_arch/conditional", "cross_arch/conditional"]
    # lambda 0 is the unsteered dealigned model under every operator
    np.testing.assert_array_equal(arrays["same_arch"][0], arrays["random/conditional"][0])
    answers = read_table(tmp_path / "answers.parquet")[0]
    assert list(answers["lam"].unique()) == [0.0, 1.0] and (answers["steps"] == 20).all()
    assert (answers["variant"] == "dealigned").all() and (answers["operator"] == "add").all()
    dealigned, tok = load_dealigned(str(tmp_path / "aligned"), str(tmp_path / "adapter"), dtype="float32", device="cpu")
    unsteered = answer_rows(dealigned, tok, prompts, None, [0.0], name="m", variant="dealigned", max_new_tokens=4,
                            batch_size=4, max_length=64)
    assert answers[answers["lam"] == 0.0]["text"].tolist() == unsteered["text"].tolist()
