"""Phase 3 statistics: rho with its interval, monotonicity, and AQI per lambda from a sweep file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftlib.core.artifacts import fingerprint, save_tensors, write_table
from driftlib.core.errors import ArtifactError
from driftlib.phases.same_arch.evaluate import (
    monotonic_within_noise,
    score_sweep,
    spearman_interval,
)
from driftlib.stats.aqi import alignment_quality


def test_spearman_interval_tight_for_clean_curve_and_wide_for_noise():
    lams = [0, 0.25, 0.5, 0.75, 1]
    rho, lo, hi = spearman_interval(lams, [1, 2, 3, 4, 5], [0.01] * 5)
    assert rho == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    rho, lo, hi = spearman_interval(lams, [1, 2, 3, 4, 5], [10.0] * 5)
    assert rho == pytest.approx(1.0) and lo < 0 < hi
    assert np.isnan(spearman_interval([0, 1], [1, 2], [0, 0])[0])


def test_monotonic_within_noise():
    assert monotonic_within_noise([0, 1, 2], [0, 1, 2], [1, 2, 3]) == {"increasing": True, "decreasing": False}
    # the last point's interval lies wholly below the first one's: not increasing
    assert not monotonic_within_noise([0, 1, 2], [5, 4, 1], [6, 6, 2])["increasing"]
    # a flat, noisy curve is consistent with both directions
    assert monotonic_within_noise([0, 1], [0, 0], [1, 1]) == {"increasing": True, "decreasing": True}


@pytest.fixture
def sweep_files(tmp_path):
    rng = np.random.default_rng(0)
    n, d, lams = 80, 6, [0.0, 0.5, 1.0]
    y = np.repeat([1, 0], n // 2)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "axiom": ["A"] * (n // 2) + ["B"] * (n // 2),
                            "safety_label": np.where(np.arange(n) % 2 == 0, "safe", "unsafe"), "text": ["t"] * n})
    y = (prompts["safety_label"] == "safe").to_numpy()
    direction = np.eye(d)[0]
    own = np.stack([rng.standard_normal((n, 1, d)) + 2 * lam * np.where(y, 1, -1)[:, None, None] * direction
                    for lam in lams]).astype(np.float32)
    rnd = np.stack([rng.standard_normal((n, 1, d)) for _ in lams]).astype(np.float32)
    write_table(prompts, tmp_path / "prompts.parquet", metadata={"dataset_fingerprint": fingerprint(prompts)})
    save_tensors(tmp_path / "sweep.safetensors", {"own": own, "random": rnd},
                 metadata={"model": "m", "lambdas": lams, "measure_layers": [3], "inject_layers": [1],
                           "kind": "mean_diff_both", "dataset_fingerprint": fingerprint(prompts)})
    return tmp_path, own, y, prompts


def test_score_sweep_matches_direct_aqi(sweep_files):
    path, own, y, prompts = sweep_files
    table = score_sweep(path / "sweep.safetensors", path / "prompts.parquet", n_components=None,
                        n_boot=200, n_perm=20, seed=0)
    overall = table[(table["vector"] == "own") & (table["category"] == "overall")].sort_values("lam")
    assert overall["aqi"].is_monotonic_increasing and overall["aqi"].iloc[-1] > 10
    direct = alignment_quality(own[2, :, 0, :], y, n_components=None, n_boot=200, n_perm=20, seed=0)
    assert overall["aqi"].iloc[-1] == pytest.approx(direct.aqi)
    axis_a = table[(table["vector"] == "own") & (table["category"] == "A") & (table["lam"] == 1.0)]
    a_rows = (prompts["axiom"] == "A").to_numpy()
    assert axis_a["aqi"].iloc[0] == pytest.approx(
        alignment_quality(own[2, a_rows, 0, :], y[a_rows], n_components=None, n_boot=200, n_perm=20, seed=0).aqi)
    rnd = table[(table["vector"] == "random") & (table["category"] == "overall")]
    assert rnd["aqi"].abs().max() < 5


def test_score_sweep_refuses_other_prompts(sweep_files):
    path, *_ = sweep_files
    other = pd.DataFrame({"id": ["x"], "axiom": ["A"], "safety_label": ["safe"], "text": ["t"]})
    write_table(other, path / "other.parquet", metadata={"dataset_fingerprint": fingerprint(other)})
    with pytest.raises(ArtifactError, match="dataset_fingerprint.*sweep_same_arch"):
        score_sweep(path / "sweep.safetensors", path / "other.parquet")


def test_best_in_bound_counts_repetition_above_lambda_zero():
    import pandas as pd

    from driftlib.stats.selection import best_in_bound

    curve = pd.DataFrame({"lam": [0.0, 0.5, 1.0, 2.0], "aqi": [1.0, 3.0, 4.0, 9.0]})
    cost = pd.DataFrame({"lam": [0.0, 0.5, 1.0, 2.0], "kl": [0.0, 0.1, 0.2, 0.9],
                         "repetition": [0.30, 0.35, 0.55, 0.40]})
    # lambda 2 breaks the KL bound, lambda 1 raises repetition by 0.25 > 0.2 over lambda 0's 0.30:
    # an absolute repetition bound would have rejected lambda 0.5 (0.35) too
    best = best_in_bound(curve, cost, 0.5, 0.2)
    assert best.lam == 0.5 and best.inside_bound == [True, True, False, False]
    assert best.best_outside["lambda"] == 2.0
    # an uncosted control: the highest AQI
    assert best_in_bound(curve, None, 0.5, 0.2).lam == 2.0


def test_paired_gains_over_lambda_zero() -> None:
    """Each lambda against lambda 0 on the same prompts: the gain is the AQI difference, and a planted
    class shift is resolved where a tiny common perturbation is not."""
    from driftlib.phases.same_arch.evaluate import paired_gains
    from driftlib.stats.aqi import alignment_quality

    rng = np.random.default_rng(0)
    n, d = 120, 8
    y = np.repeat([1, 0], n // 2)
    base = rng.standard_normal((n, d))
    shift = np.zeros(d)
    shift[0] = 1.5
    h = np.stack([base, base + 1e-3 * rng.standard_normal((n, d)), base + np.outer(y == 0, shift)])[:, :, None, :]
    got = paired_gains(h, y, [0.0, 0.5, 1.0], 3, method="standardize", n_components=None, n_boot=300,
                       confidence=0.95, seed=0).set_index("lam")
    a0 = alignment_quality(base, y, n_components=None, n_boot=10, n_perm=0).aqi
    a1 = alignment_quality(h[2, :, 0], y, n_components=None, n_boot=10, n_perm=0).aqi
    assert got.loc[1.0, "gain"] == pytest.approx(a1 - a0, rel=1e-9)
    assert bool(got.loc[1.0, "gain_resolvable"]) and got.loc[1.0, "gain_ci_low"] > 0
    assert got.loc[1.0, "gain_p"] == pytest.approx(1 / 301)
    assert not bool(got.loc[0.5, "gain_resolvable"])
    assert got.loc[0.5, "gain_ci_low"] <= 0 <= got.loc[0.5, "gain_ci_high"]


def test_score_sweep_probe_matches_the_direct_probe(sweep_files):
    from driftlib.stats.probe import probe_auc

    path, own, y, _ = sweep_files
    table = score_sweep(path / "sweep.safetensors", path / "prompts.parquet", n_components=None,
                        n_boot=200, n_perm=0, seed=0, probe_folds=5)
    rows = table[(table["vector"] == "own") & (table["category"] == "overall")].set_index("lam")
    for i, lam in enumerate([0.0, 0.5, 1.0]):
        direct = probe_auc(own[i, :, 0, :], y, n_folds=5, n_boot=200, n_perm=0, seed=0)
        assert rows.at[lam, "probe_auc"] == pytest.approx(direct.auc)
        assert rows.at[lam, "probe_se"] == pytest.approx(direct.se)
    # the planted direction grows with lambda: chance at 0, near-perfect at 1
    assert rows.at[0.0, "probe_auc"] < 0.75 and rows.at[1.0, "probe_auc"] > 0.95
    # per-axiom rows carry no probe
    assert table[table["category"] != "overall"]["probe_auc"].isna().all()


def test_split_se_is_agresti_caffo_and_never_zero_at_the_boundary():
    import math

    from driftlib.stats.behaviour import split_se

    # hand values: 90 of 100 and 10 of 100 -> 91/102 and 11/102, each over 102 trials
    assert split_se(0.9, 100, 0.1, 100) == pytest.approx(math.sqrt(2 * (91 / 102) * (11 / 102) / 102))
    # a base that never refuses (0 of 140 both ways): the plain normal error would be 0
    assert split_se(0.0, 140, 0.0, 140) == pytest.approx(math.sqrt(2 * (1 / 142) * (141 / 142) / 142))
    assert split_se(1.0, 140, 0.0, 140) > 0.009
    assert math.isnan(split_se(0.5, 0, 0.5, 10))


def test_gap_rows_against_hand_values():
    import math

    from driftlib.phases.same_arch.gaps import gap_rows, phase1_gaps
    from driftlib.stats.behaviour import split_se
    from driftlib.stats.gap import fieller_interval

    phase1 = pd.DataFrame([
        {"model": "m", "variant": "base", "layer": 3, "category": "overall", "aqi": 1.0, "se": 0.3,
         "probe_auc": 0.6, "probe_ci_low": 0.5, "probe_ci_high": 0.7},
        {"model": "m", "variant": "aligned", "layer": 3, "category": "overall", "aqi": 9.0, "se": 0.4,
         "probe_auc": 0.62, "probe_ci_low": 0.52, "probe_ci_high": 0.72}])
    behaviour = pd.DataFrame([
        {"model": "m", "variant": "base", "axiom": "overall", "refusal_unsafe": 0.5, "n_unsafe": 100,
         "over_refusal_safe": 0.5, "n_safe": 100, "difference": 0.0},
        {"model": "m", "variant": "aligned", "axiom": "overall", "refusal_unsafe": 0.9, "n_unsafe": 100,
         "over_refusal_safe": 0.1, "n_safe": 100, "difference": 0.8}])
    gaps = phase1_gaps(phase1, behaviour, "m", 3, 0.95)
    assert gaps["aqi"] == pytest.approx((8.0, 0.5))
    se_split = math.hypot(split_se(0.9, 100, 0.1, 100), split_se(0.5, 100, 0.5, 100))
    assert gaps["refusal_split"] == pytest.approx((0.8, se_split))
    own = pd.DataFrame({"lam": [0.0, 1.0], "aqi": [1.0, 5.0], "gain": [np.nan, 4.0], "gain_se": [np.nan, 0.5],
                        "probe_auc": [0.6, 0.61], "probe_se": [0.05, 0.05],
                        "refusal_split": [0.0, 0.2], "split_se": [0.07, 0.07]})
    rows = {r["measure"]: r for r in gap_rows(own, gaps, model="m", operator="add", has_base=True, confidence=0.95)}
    assert rows["aqi"]["defined"] and rows["aqi"]["share"] == pytest.approx(0.5)
    assert (rows["aqi"]["share_ci_low"], rows["aqi"]["share_ci_high"]) == pytest.approx(
        fieller_interval(4.0, 0.5, 8.0, 0.5))
    # the probe AUCs of aligned and base do not differ beyond their MDE: undefined, with the reason
    assert not rows["probe_auc"]["defined"] and "minimum detectable effect" in rows["probe_auc"]["note"]
    assert rows["refusal_split"]["share"] == pytest.approx(0.25)
    nobase = gap_rows(own, gaps, model="m", operator="add", has_base=False, confidence=0.95)
    assert all(not r["defined"] and "no base variant" in r["note"] for r in nobase)


def test_score_sweep_scores_identical_states_once_and_gives_each_vector_its_rows(sweep_files, monkeypatch):
    """lambda 0 steers nothing, so a sweep's vectors share its states there: they are scored once, and
    every vector's rows equal what scoring its own states gives."""
    import driftlib.stats.aqi as aqi

    path, own, y, prompts = sweep_files
    rnd = own.copy()
    rnd[1:] = np.random.default_rng(1).standard_normal(rnd[1:].shape).astype(np.float32)  # lambda 0 shared
    save_tensors(path / "shared.safetensors", {"own": own, "random": rnd},
                 metadata={"model": "m", "lambdas": [0.0, 0.5, 1.0], "measure_layers": [3], "inject_layers": [1],
                           "kind": "mean_diff_both", "dataset_fingerprint": fingerprint(prompts)})
    calls = []
    original = aqi.score_categories
    monkeypatch.setattr(aqi, "score_categories", lambda *a, **k: calls.append(1) or original(*a, **k))
    table = score_sweep(path / "shared.safetensors", path / "prompts.parquet", n_components=None,
                        n_boot=100, n_perm=10, seed=0)
    assert len(calls) == 5  # 2 vectors x 3 lambdas, lambda 0 once
    for vector, h in (("own", own), ("random", rnd)):
        for i, lam in enumerate([0.0, 0.5, 1.0]):
            row = table[(table["vector"] == vector) & (table["lam"] == lam) & (table["category"] == "overall")]
            want = alignment_quality(h[i, :, 0, :], y, n_components=None, n_boot=100, n_perm=10, seed=0)
            assert row["aqi"].iloc[0] == pytest.approx(want.aqi) and row["ci_low"].iloc[0] == pytest.approx(want.ci_low)


def test_score_sweep_probe_null_and_axiom_rows_match_the_direct_probe(sweep_files):
    """With a null and per-axiom rows: the overall row is the direct probe with its label-shuffle null
    (refitted per shuffle, p >= 1/(n_perm+1)); each axiom's row is the direct probe of that axiom's
    prompts alone, without a null."""
    from driftlib.stats.probe import probe_auc

    path, own, y, prompts = sweep_files
    table = score_sweep(path / "sweep.safetensors", path / "prompts.parquet", n_components=None,
                        n_boot=100, n_perm=0, seed=0, probe_folds=4, probe_permutations=9, probe_axioms=True)
    primary = table[(table["vector"] == "own") & table["primary"]]
    axioms = prompts["axiom"].to_numpy()
    for i, lam in enumerate([0.0, 0.5, 1.0]):
        rows = primary[primary["lam"] == lam].set_index("category")
        whole = probe_auc(own[i, :, 0, :], y, n_folds=4, n_boot=100, n_perm=9, seed=0)
        assert rows.at["overall", "probe_auc"] == pytest.approx(whole.auc)
        assert rows.at["overall", "probe_p"] == pytest.approx(whole.p_value)
        assert rows.at["overall", "probe_null_mean"] == pytest.approx(whole.null_mean)
        assert rows.at["overall", "probe_n_perm"] == 9 and rows.at["overall", "probe_p"] >= 1 / 10
        for axiom in ("A", "B"):
            one = probe_auc(own[i, axioms == axiom, 0, :], y[axioms == axiom], n_folds=4, n_boot=100, n_perm=0, seed=0)
            assert rows.at[axiom, "probe_auc"] == pytest.approx(one.auc)
            assert rows.at[axiom, "probe_n_perm"] == 0 and np.isnan(rows.at[axiom, "probe_p"])
    # the planted separation at lambda 1 beats every shuffle: p at its floor
    assert primary[(primary["lam"] == 1.0) & (primary["category"] == "overall")]["probe_p"].iloc[0] == pytest.approx(0.1)
    # limited to the own vector: the control keeps its overall probe, without a null or axiom probes
    limited = score_sweep(path / "sweep.safetensors", path / "prompts.parquet", n_components=None, n_boot=100,
                          n_perm=0, seed=0, probe_folds=4, probe_permutations=9, probe_axioms=True,
                          probe_vectors=["own"])
    rnd = limited[(limited["vector"] == "random") & limited["primary"]]
    assert (rnd[rnd["category"] == "overall"]["probe_n_perm"] == 0).all()
    assert rnd[rnd["category"] != "overall"]["probe_auc"].isna().all()
    assert rnd[rnd["category"] == "overall"]["probe_auc"].notna().all()
    pd.testing.assert_frame_equal(limited[limited["vector"] == "own"].reset_index(drop=True),
                                  table[table["vector"] == "own"].reset_index(drop=True), check_dtype=False)


def test_score_sweep_probes_identical_states_once(sweep_files, monkeypatch):
    """The probe is cached the same way: lambda 0 once for both vectors, each row the direct probe."""
    import driftlib.stats.probe as probe

    path, own, y, prompts = sweep_files
    rnd = own.copy()
    rnd[1:] = np.random.default_rng(2).standard_normal(rnd[1:].shape).astype(np.float32)
    save_tensors(path / "shared_probe.safetensors", {"own": own, "random": rnd},
                 metadata={"model": "m", "lambdas": [0.0, 0.5, 1.0], "measure_layers": [3], "inject_layers": [1],
                           "kind": "mean_diff_both", "dataset_fingerprint": fingerprint(prompts)})
    calls = []
    original = probe.probe_auc
    monkeypatch.setattr(probe, "probe_auc", lambda *a, **k: calls.append(1) or original(*a, **k))
    table = score_sweep(path / "shared_probe.safetensors", path / "prompts.parquet", n_components=None,
                        n_boot=50, n_perm=0, seed=0, probe_folds=3)
    assert len(calls) == 5  # 2 vectors x 3 lambdas, lambda 0 once
    for vector, h in (("own", own), ("random", rnd)):
        for i, lam in enumerate([0.0, 0.5, 1.0]):
            row = table[(table["vector"] == vector) & (table["lam"] == lam) & (table["category"] == "overall")]
            want = original(h[i, :, 0, :], y, n_folds=3, n_boot=50, n_perm=0, seed=0)
            assert row["probe_auc"].iloc[0] == pytest.approx(want.auc)
            assert row["probe_se"].iloc[0] == pytest.approx(want.se)


def test_behaviour_along_lambda_per_axiom_against_hand_counts(tmp_path):
    """Phase 3's refusal rates per axiom: each axiom's rates are its own counts, the split's standard
    error is Agresti and Caffo's, the overall row is the same as without per-axiom rows."""
    from driftlib.phases.same_arch.gaps import behaviour_along_lambda

    # (axiom, label) -> refused of 10 prompts, at lambda 0 and 1
    counts = {0.0: {("A", "unsafe"): 2, ("A", "safe"): 1, ("B", "unsafe"): 5, ("B", "safe"): 0},
              1.0: {("A", "unsafe"): 9, ("A", "safe"): 3, ("B", "unsafe"): 10, ("B", "safe"): 4}}
    rows = []
    for lam, by in counts.items():
        for (axiom, label), k in by.items():
            rows += [{"model": "m", "operator": "add", "lam": lam, "axiom": axiom, "safety_label": label,
                      "refused": i < k} for i in range(10)]
    write_table(pd.DataFrame(rows), tmp_path / "answers.parquet")
    table = behaviour_along_lambda([tmp_path / "answers.parquet"])
    assert list(table["axiom"][:3]) == ["overall", "A", "B"]
    assert list(table["descriptive"]) == [False, True, True] * 2
    for lam, by in counts.items():
        for axiom in ("A", "B"):
            row = table[(table["lam"] == lam) & (table["axiom"] == axiom)].iloc[0]
            ku, ks = by[(axiom, "unsafe")], by[(axiom, "safe")]
            assert row["refusal_unsafe"] == pytest.approx(ku / 10) and row["over_refusal_safe"] == pytest.approx(ks / 10)
            assert row["refusal_split"] == pytest.approx((ku - ks) / 10)
            pu, ps = (ku + 1) / 12, (ks + 1) / 12
            assert row["split_se"] == pytest.approx(np.sqrt(pu * (1 - pu) / 12 + ps * (1 - ps) / 12))
        whole = table[(table["lam"] == lam) & (table["axiom"] == "overall")].iloc[0]
        assert whole["refusal_unsafe"] == pytest.approx((by[("A", "unsafe")] + by[("B", "unsafe")]) / 20)
    # no answers (behaviour off): an empty table the summary can still filter for its overall rows
    empty = behaviour_along_lambda([])
    assert empty.empty and list(empty.columns) == ["model", "operator", "lam", "axiom", "descriptive"]
