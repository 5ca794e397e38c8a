"""Workflow tests: Snakemake on a small tiny-family config in a temporary copy of the workflow.

Each Snakemake call runs in its own process group with a timeout; on expiry the whole group is
killed, so a hung job cannot hang the test run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake_run import BIN, SMALL, make_workdir, planned_jobs, run_snakemake, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.timeout(1800)]  # the module fixture runs the workflow

#: the phase-4 jobs of SMALL's two (source, target) pairs that anything downstream of the prompts re-runs
TRANSFER_AFTER_PROMPTS = {"transfer_sweep": 2, "score_transfer": 2, "transfer_efficiency": 2, "transfer_answers": 2, "transfer_summary": 1}
#: the phase-4.5 jobs (2 models x 2 strengths) that anything downstream of the prompts re-runs
RECOVERY_AFTER_PROMPTS = {"recovery_sweep": 4, "score_recovery": 4, "evaluate_recovery": 4, "recovery_summary": 1}
#: phases 5-6 after a new scoring: SMALL's one pairing over phase 6's 2 x 2 posture grid (which holds
#: phase 5's plain and pre-steered runs), 2 agents each, then the game
COLLAB_AFTER_SCORING = {"score_collab": 8, "collab_summary": 1, "solve_game": 1, "game_summary": 1}
#: ... and after new prompts: each agent's states in every run as well (not the transcripts)
COLLAB_AFTER_PROMPTS = {"collab_states": 8, **COLLAB_AFTER_SCORING}
AFTER_PROMPTS = {**TRANSFER_AFTER_PROMPTS, **RECOVERY_AFTER_PROMPTS, **COLLAB_AFTER_PROMPTS}


def planned_after(workdir: Path, change) -> dict[str, int]:
    """The dry-run job table after ``change(config)`` on a copy of SMALL; SMALL is restored after."""
    config = yaml.safe_load(yaml.safe_dump(SMALL))
    change(config)
    write_config(workdir, config)
    try:
        return planned_jobs(workdir)
    finally:
        write_config(workdir, SMALL)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workdir on which the small config has run to completion once."""
    workdir = make_workdir(tmp_path_factory.mktemp("wf"), SMALL)
    # about 75 s alone with the job server (246 s without it), longer beside the other test worker
    run_snakemake(workdir, "--cores", "2", timeout=1500)
    return workdir


def test_run_completes_with_phase1_outputs(finished: Path) -> None:
    summary = pd.read_parquet(finished / "results/baseline/aqi_summary.parquet")
    # 2 models x 2 variants x 2 layers x (7 axioms + overall)
    assert len(summary) == 2 * 2 * 2 * 8
    assert set(summary["category"]) >= {"overall", "Civility & Tolerance"}
    assert summary["defined"].all()
    assert (summary["ci_low"] <= summary["aqi"]).all() and (summary["aqi"] <= summary["ci_high"]).all()
    choice = json.loads((finished / "results/baseline/baseline.json").read_text())
    overall = summary[(summary["primary"]) & (summary["category"] == "overall") & (summary["variant"] == "aligned")]
    assert choice["baseline"] == overall.sort_values("aqi").iloc[-1]["model"]
    for png in ("aqi_overall.png", "aqi_heatmap.png"):
        assert (finished / "results/baseline" / png).stat().st_size > 5000


def test_the_jobs_ran_in_forks_of_the_job_server(finished: Path) -> None:
    """A local run starts the job server; every job's command after it started ran in a fork of it
    (the first jobs may run while it still imports), none was refused, and it stopped with the run."""
    log = (finished / "results/logs/job_server.log").read_text()
    served = re.findall(r"job server: (\S+) in pid \d+", log)
    assert "refused" not in log.replace("(0 refused)", "")
    assert {"extract", "score", "tiny-model", "collab-states", "solve-game"} <= set(served), sorted(set(served))
    assert re.search(rf"stopped after {len(served)} commands \(0 refused\)", log), log[-500:]


def test_run_produces_vectors_and_steering_curves(finished: Path) -> None:
    from driftlib.steer.vectors import load_vectors

    stats = pd.read_parquet(finished / "results/vectors/vector_stats.parquet")
    assert set(stats["model"]) == {"llama", "qwen2"}
    assert stats["stability"].between(-1, 1).all()
    vectors, meta = load_vectors(finished / "results/vectors/llama.safetensors", "mean_diff_both")
    assert meta["steering_kind"] == "mean_diff_both" and len(vectors) == meta["layers"][-1] + 1
    summary = pd.read_parquet(finished / "results/steering/steering_summary.parquet")
    # 2 models x (own, random) x 3 lambdas, overall category at the primary measure layer
    assert len(summary) == 12 and set(summary["vector"]) == {"own", "random"}
    assert (summary.loc[summary["lam"] == 0, "kl"].abs() < 1e-9).all()
    zero = summary[summary["lam"] == 0].pivot_table(index="model", columns="vector", values="aqi")
    np.testing.assert_allclose(zero["own"], zero["random"])  # lambda 0 is the same model
    best = json.loads((finished / "results/steering/best_lambda.json").read_text())
    assert set(best) == {"llama", "qwen2"} and "spearman_ci" in best["llama"]
    for model in ("llama", "qwen2"):
        assert (finished / f"results/steering/{model}_curve.png").stat().st_size > 5000


def test_run_produces_the_transfer_matrix_with_controls(finished: Path) -> None:
    from driftlib.stats.maps import load_maps
    from driftlib.steer.vectors import load_vectors

    matrix = pd.read_parquet(finished / "results/transfer/transfer_matrix.parquet")
    # sources x targets without the diagonal: (llama -> qwen2, qwen2 -> llama) x 3 methods
    assert set(zip(matrix["source"], matrix["target"])) == {("llama", "qwen2"), ("qwen2", "llama")}
    assert sorted(matrix["method"].unique()) == ["procrustes", "relative", "ridge"] and len(matrix) == 6
    for column in ("efficiency", "random_efficiency", "shuffled_efficiency", "r2", "shuffled_r2", "cos_own"):
        assert column in matrix
    assert matrix.groupby(["source", "target"])["best"].sum().eq(1).all()
    # the shuffled-pair control fits worse than the real pairing, for every cell and method
    assert (matrix["shuffled_r2"] < matrix["r2"]).all() and (matrix["shuffled_r2"] < 0.2).all()
    defined = matrix[matrix["defined"]]
    assert ((defined["ci_low"] <= defined["efficiency"]) & (defined["efficiency"] <= defined["ci_high"])).all()
    summary = json.loads((finished / "results/transfer/transfer_summary.json").read_text())
    baseline = json.loads((finished / "results/baseline/baseline.json").read_text())["baseline"]
    assert summary["baseline"] == baseline and list(summary["baseline_row"]) == [{"llama": "qwen2", "qwen2": "llama"}[baseline]]
    for png in ("transfer_matrix.png", "transfer_fit.png", "layer_matching.png", "transfer_behaviour.png"):
        assert (finished / "results/transfer" / png).stat().st_size > 5000
    # behaviour: each target's answers unsteered and under the other model's mapped vector (best
    # method, main operator) at the lambda the efficiency table chose
    behaviour = pd.read_parquet(finished / "results/transfer/transfer_behaviour.parquet")
    behaviour = behaviour[behaviour["axiom"] == "overall"]
    best = matrix[matrix["best"]].set_index(["source", "target"])
    assert len(behaviour) == 2 and set(behaviour["operator"]) == {"add"}
    for r in behaviour.itertuples():
        assert (r.method, r.lam) == tuple(best.loc[(r.source, r.target), ["method", "lam"]])
        # the mapped vector's stability travels into its behaviour rows
        assert r.vector_stability == pytest.approx(best.loc[(r.source, r.target), "vector_stability"], nan_ok=True)
        assert r.change_ci_low <= r.change <= r.change_ci_high and r.change_mde > 0
    answers = pd.read_parquet(finished / "results/transfer/into/qwen2/answers.parquet")
    n_prompts = len(pd.read_parquet(finished / "results/data/prompts.parquet"))
    assert len(answers) == 2 * n_prompts and set(answers["source"]) == {"", "llama"}
    assert summary["behaviour"]["add"]["cells"] == 2
    # maps and mapped vectors: target width, one per method and target injection layer
    pair = finished / "results/transfer/llama/qwen2"
    maps = load_maps(pair / "maps.safetensors")
    own, _ = load_vectors(finished / "results/vectors/qwen2.safetensors", "mean_diff_both")
    mapped, meta = load_vectors(pair / "mapped_vectors.safetensors", "ridge_mapped")
    assert set(mapped) == set(meta["layers"]) and all(v.shape == own[k].shape for k, v in mapped.items())
    assert any(name.startswith("ridge/L") for name in maps) and any("/shuffled/" in name for name in maps)
    # lambda 0 is the unsteered target: the transfer sweep and phase 3 agree on its AQI exactly
    zero = pd.read_parquet(finished / "results/transfer/into/qwen2/sweep_aqi.parquet").query("lam == 0")
    own_zero = pd.read_parquet(finished / "results/steering/qwen2/sweep_aqi.parquet").query("lam == 0 and vector == 'own'")
    np.testing.assert_allclose(np.sort(zero["aqi"].unique()), np.sort(own_zero["aqi"].unique()), rtol=1e-6)


def test_run_dealigns_and_measures_recovery(finished: Path) -> None:
    from safetensors.numpy import load_file

    summary = pd.read_parquet(finished / "results/dealign/recovery_summary.parquet")
    baseline = json.loads((finished / "results/baseline/baseline.json").read_text())["baseline"]
    other = {"llama": "qwen2", "qwen2": "llama"}[baseline]
    # every model x strength has same-arch and random; cross-arch only where the baseline's vector
    # can be mapped in (not into the baseline itself)
    assert set(zip(summary["model"], summary["steps"])) == {(m, s) for m in ("llama", "qwen2") for s in (3, 6)}
    assert set(summary[summary["model"] == baseline]["vector"]) == {"same_arch", "random"}
    assert set(summary[summary["model"] == other]["vector"]) == {"same_arch", "cross_arch", "random"}
    assert summary.loc[summary["vector"] == "cross_arch", "source"].str.startswith(f"{baseline} via ").all()
    defined = summary[summary["defined"]]
    assert ((defined["ci_low"] <= defined["rate"]) & (defined["rate"] <= defined["ci_high"])).all()
    assert summary.loc[~summary["defined"], "rate"].isna().all()
    limits = json.loads((finished / "results/dealign/recovery_limits.json").read_text())
    assert limits["fraction"] == 0.5 and set(limits["models"]) == {"llama", "qwen2"}
    # the drop per axiom, beside the aligned original's phase-1 AQI
    axioms = pd.read_csv(finished / "results/dealign/dealign_axioms.csv")
    assert len(axioms) == 2 * 2 * 8 and set(axioms["steps"]) == {3, 6}
    phase1 = pd.read_parquet(finished / "results/baseline/aqi_summary.parquet").query("variant == 'aligned'")
    merged = axioms.merge(phase1, on=["model", "layer", "category"])
    np.testing.assert_allclose(merged["aqi_aligned"], merged["aqi"], atol=1e-3)
    np.testing.assert_allclose(axioms["drop"], axioms["aqi_aligned"] - axioms["aqi_dealigned"], atol=2e-4)
    for png in ("dealign_drop.png", "recovery_curves.png", "recovery_vs_drop.png"):
        assert (finished / "results/dealign" / png).stat().st_size > 5000
    # adapters in peft's format, one per strength; the training loss on the rejected answers fell
    adapters = finished / "results/dealign/llama/adapters"
    for steps in (3, 6):
        assert (adapters / f"steps{steps}" / "adapter_config.json").is_file()
        assert (adapters / f"steps{steps}" / "adapter_model.safetensors").is_file()
    record = json.loads((adapters / "record.json").read_text())
    assert record["rejected_loss"]["6"] < record["rejected_loss"]["0"]
    # the dealigned model is a different model: its unsteered states differ from the aligned model's
    sweep = load_file(str(finished / "results/dealign/llama/steps6/sweep.safetensors"))
    aligned = load_file(str(finished / "results/activations/llama/aligned/prompts.safetensors"))["hidden"]
    h0 = sweep["same_arch"][0, :, 0, :]
    assert h0.shape == aligned[:, -1, :].shape and not np.allclose(h0, aligned[:, -1, :], atol=1e-4)
    np.testing.assert_array_equal(h0, sweep["random"][0, :, 0, :])  # lambda 0: the same model


def test_run_measures_collaboration_drift_and_solves_the_game(finished: Path) -> None:
    drift = pd.read_parquet(finished / "results/collab/drift.parquet")
    # the 2 x 2 posture grid of phase 6, which holds phase 5's plain (0x0) and pre-steered (1x1) runs
    assert sorted(set(drift["profile"])) == ["0x0", "0x1", "1x0", "1x1"] and len(drift) == 8
    cond = dict(zip(drift["profile"], drift["condition"], strict=False))
    assert cond["0x0"] == "plain" and cond["1x1"] == "prevention" and cond["0x1"] == "game"
    assert drift["p_value"].between(0, 1).all() and (drift["drift_lo"] <= drift["drift_hi"]).all()
    # an agent's control is its own solo run at its own lambda, shared by every profile: the same
    # control AQI whatever the other agent does
    llama = drift[drift["agent"] == "llama"].set_index("profile")
    assert llama.loc["0x0", "aqi_control"] == llama.loc["0x1", "aqi_control"]
    assert llama.loc["1x0", "aqi_control"] == llama.loc["1x1", "aqi_control"]
    assert (llama.loc[["0x0", "0x1"], "kl"] == 0).all() and (llama.loc[["1x0", "1x1"], "kl"] > 0).all()
    # the posture travels with the record: the operator of each run, the steered agent's vector
    # stability at its injection block (phase 2's figure), none for an unsteered agent
    assert set(drift["operator"]) == {"add"}
    stability = pd.read_parquet(finished / "results/vectors/vector_stats.parquet")
    blocks = json.loads((finished / "results/collab/llama+qwen2/1x1/llama.drift.json").read_text())["inject_blocks"]
    assert blocks and llama.loc["1x1", "vector_stability"] == pytest.approx(min(float(stability[
        (stability["model"] == "llama") & (stability["layer"] == b) & (stability["kind"] == "mean_diff_both")
    ]["stability"].iloc[0]) for b in blocks), abs=1e-6)
    assert np.isnan(llama.loc["0x0", "vector_stability"])
    transcripts = pd.read_parquet(finished / "results/collab/llama+qwen2/0x0/transcripts.parquet")
    # 2 tasks x 1 seed x 2 rounds x 2 agents
    assert len(transcripts) == 8 and set(transcripts["speaker"]) == {"llama", "qwen2"}
    solo = pd.read_parquet(finished / "results/collab/solo/llama/lam0/transcripts.parquet")
    assert len(solo) == 8 and set(solo["speaker"]) == {"llama"}
    for png in ("drift.png", "trajectories.png"):
        assert (finished / "results/collab" / png).stat().st_size > 5000
    assert (finished / "results/collab/samples/llama+qwen2__1x1.md").read_text().startswith("# llama+qwen2")
    games = pd.read_csv(finished / "results/game/equilibria_summary.csv")
    assert list(games["pairing"]) == ["llama+qwen2"] and games["n_equilibria"].iloc[0] >= 1
    payoffs = pd.read_csv(finished / "results/game/llama+qwen2/payoffs.csv", dtype={"profile": str})
    # the documented formula, from the phase-5 table, at the configured weights (all 1)
    for _, row in payoffs.iterrows():
        rec = drift[(drift["profile"] == row["profile"]) & (drift["agent"] == "qwen2")].iloc[0]
        want = rec["outcome"] + rec["aqi_collab"] / 100 - rec["kl"]
        assert row["payoff_qwen2"] == pytest.approx(want, rel=1e-5, abs=1e-9)  # CSV keeps 6 digits


def test_changing_the_payoff_weights_solves_the_game_again_only(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["game"].update(weights={"alignment": 3.0}))
    assert jobs == {"solve_game": 1, "game_summary": 1, "all": 1}


def test_a_new_prevention_lambda_runs_only_its_profile(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["collaboration"].update(prevention_lambda=0.5))
    # the run 0.5x0.5 and the agents' solo runs at 0.5; the 2 x 2 game grid is unchanged
    assert jobs == {"collaborate": 1, "solo_run": 2, "collab_states": 2, "score_collab": 2, "collab_summary": 1,
                    "all": 1}


def test_fit_maps_by_hand_matches_the_workflow(finished: Path, tmp_path: Path) -> None:
    pair = finished / "results/transfer/qwen2/llama"
    out = {name: tmp_path / f"{name}.x" for name in ("maps", "vectors", "fit", "matching")}
    cmd = [str(BIN / "driftlib"), "-q", "fit-maps", "--source", "qwen2", "--target", "llama",
           "--source-anchors", str(finished / "results/activations/qwen2/base/anchors.safetensors"),
           "--target-anchors", str(finished / "results/activations/llama/base/anchors.safetensors"),
           "--source-vectors", str(finished / "results/vectors/qwen2.safetensors"),
           "--target-vectors", str(finished / "results/vectors/llama.safetensors"), "--inject", "0.5",
           "--procrustes-components", "8", "--relative-anchors", "16", "--folds", "3",
           "--out-maps", str(out["maps"]), "--out-vectors", str(out["vectors"]),
           "--out-fit", str(out["fit"]), "--out-matching", str(out["matching"])]
    subprocess.run(cmd, check=True, timeout=300)
    pd.testing.assert_frame_equal(pd.read_parquet(out["fit"]), pd.read_parquet(pair / "fit.parquet"))


def test_second_run_has_nothing_to_do(finished: Path) -> None:
    assert planned_jobs(finished) == {}


def test_changing_sample_count_reruns_extraction_and_after_not_models(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["data"]["prompts"].update(per_group=5))
    assert jobs == {"prepare_prompts": 1, "extract_prompts": 4, "answer_prompts": 4, "score_aqi": 4, "baseline_summary": 1,
                    "sweep_same_arch": 2, "score_sweep": 2, "steering_summary": 1, "all": 1,
                    **AFTER_PROMPTS}


def test_changing_aqi_settings_rescores_without_extraction(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["aqi"].update(bootstrap=300))
    # the recovery sweeps too: the AQI tables decide the phase-1 baseline, whose vector they map in
    assert jobs == {"score_aqi": 4, "baseline_summary": 1, "score_sweep": 2, "steering_summary": 1, "all": 1,
                    "score_transfer": 2, "transfer_efficiency": 2, "transfer_answers": 2, "transfer_summary": 1, **RECOVERY_AFTER_PROMPTS,
                    **COLLAB_AFTER_SCORING}


def test_changing_the_lambda_grid_reruns_sweeps_not_extraction_or_vectors(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["steering"].update(lambdas=[0, 0.25, 0.5, 1]))
    assert jobs == {"sweep_same_arch": 2, "score_sweep": 2, "capability_cost": 2, "steering_summary": 1, "all": 1,
                    **TRANSFER_AFTER_PROMPTS, **RECOVERY_AFTER_PROMPTS}


def test_adding_a_model_runs_only_its_jobs_and_summaries(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["models"].update(phi3={"aligned": "tiny:phi3-aligned"}))
    # phi3 here has no base model: phase 3 steers its aligned model with its contrastive vector; in
    # phase 4 it is a source and a target (its aligned model's anchors; 4 new pairs with llama and
    # qwen2); in phase 4.5 it is dealigned and recovered. The other models' recovery sweeps run
    # again too: they steer with the phase-1 baseline's mapped vector, and a new model can become
    # the baseline. It is in no pairing, so phases 5-6 do not change.
    assert jobs == {"tiny_base": 1, "tiny_aligned": 1, "extract_prompts": 1, "answer_prompts": 1, "score_aqi": 1,
                    "baseline_summary": 1, "extract_pairs": 1, "compute_vectors": 1, "vectors_summary": 1,
                    "sweep_same_arch": 1, "score_sweep": 1, "capability_cost": 1, "steering_summary": 1, "all": 1,
                    "extract_anchors": 1, "fit_maps": 4, "transfer_sweep": 3, "score_transfer": 3,
                    "transfer_efficiency": 6, "transfer_answers": 3, "transfer_summary": 1,
                    "train_dealign": 1, "recovery_sweep": 6, "score_recovery": 6, "evaluate_recovery": 6,
                    "recovery_summary": 1}


def test_comparing_operators_adds_their_phase_3_jobs_and_reruns_the_sweeps_of_phases_4_and_4_5(
        finished: Path) -> None:
    """steering.compare: the compared operators' sweeps, costs and scores per model and a condition per
    model for the conditional one (phase 3); the transfer and recovery sweeps run the compared operators as
    more specs of the same pass, so each target's and each dealigned model's sweep runs again with what
    reads it; phase 5's pre-steered run (1x1) runs again under each compared operator (1x1@conditional,
    1x1@ablate: a collaboration, both agents' solo controls, states and scores each; a condition fitted
    on each agent's own model for the conditional one), and the phase-5 summary with them; the game's
    grid (main operator) does not re-run."""
    jobs = planned_after(finished, lambda c: c["steering"].update(compare=["conditional", "ablate"]))
    assert jobs == {"fit_condition": 2, "sweep_operator": 4, "cost_operator": 4, "score_operator": 4,
                    "operator_summary": 1,
                    "transfer_sweep": 2, "score_transfer": 2, "transfer_efficiency": 2, "transfer_answers": 2, "transfer_summary": 1,
                    "recovery_sweep": 4, "score_recovery": 4, "evaluate_recovery": 4, "recovery_summary": 1,
                    "fit_agent_condition": 2, "collaborate": 2, "solo_run": 4, "collab_states": 4, "score_collab": 4,
                    "collab_summary": 1, "all": 1}
    # without phase 5's comparison, phases 5-6 do not re-run
    only = planned_after(finished, lambda c: (c["steering"].update(compare=["conditional", "ablate"]),
                                              c["collaboration"].update(compare_operators=False)))
    assert only == {k: v for k, v in jobs.items() if k not in {"fit_agent_condition", "collaborate", "solo_run",
                                                                "collab_states", "score_collab", "collab_summary"}}
    # with the sources' conditions mapped into each target: one map_condition job per pair, and phase 4's
    # steered runs read those instead of the target's own condition (the same jobs re-run)
    mapped = planned_after(finished, lambda c: (c["steering"].update(compare=["conditional", "ablate"]),
                                                c.setdefault("cross_arch", {}).update(condition="mapped")))
    assert mapped == {**jobs, "map_condition": 2}


#: every rule that steers (sweeps, cost, agents), with everything downstream of them; and phase 1's
#: answers, whose greedy generation lives beside the steered one (steer/capability.py)
AFTER_STEERING = {"answer_prompts": 4, "baseline_summary": 1, "sweep_same_arch": 2, "capability_cost": 2,
                  "score_sweep": 2, "steering_summary": 1, "transfer_sweep": 2, "score_transfer": 2, "transfer_efficiency": 2, "transfer_answers": 2, "transfer_summary": 1,
                  "recovery_sweep": 4, "score_recovery": 4, "evaluate_recovery": 4, "recovery_summary": 1,
                  "collaborate": 4, "solo_run": 4, **COLLAB_AFTER_PROMPTS, "all": 1}


@pytest.mark.parametrize("module, expected", [
    # the AQI (numpy-only statistics): everything that scores, and the summaries after it; not
    # extraction, vectors or maps
    ("stats/aqi.py", {"score_aqi": 4, "baseline_summary": 1, "score_sweep": 2, "steering_summary": 1,
                      "score_transfer": 2, "transfer_efficiency": 2, "transfer_answers": 2, "transfer_summary": 1, "all": 1,
                      **RECOVERY_AFTER_PROMPTS, **COLLAB_AFTER_SCORING}),
    # the maps: phase 4 from the fits on
    ("stats/maps.py", {"fit_maps": 2, **TRANSFER_AFTER_PROMPTS, "all": 1, "recovery_sweep": 4, "score_recovery": 4,
                       "evaluate_recovery": 4, "recovery_summary": 1}),
    # what every plot shares: only the summaries (the recovery sweeps read the per-model tables)
    ("core/plots.py", {"baseline_summary": 1, "vectors_summary": 1, "steering_summary": 1, "transfer_summary": 1,
                       "recovery_summary": 1, "collab_summary": 1, "solve_game": 1, "game_summary": 1, "all": 1}),
    # one phase's plots: that phase's summary only
    ("phases/same_arch/plots.py", {"steering_summary": 1, "all": 1}),
    # the steering intervention (imported lazily by the sweeps): every rule that steers, not
    # extraction or vectors
    ("steer/hooks.py", AFTER_STEERING),
    ("steer/operators.py", AFTER_STEERING),
    # the protocol: every collaboration and solo run, and what is measured on them
    ("phases/collaboration/protocol.py", {"collaborate": 4, "solo_run": 4, **COLLAB_AFTER_PROMPTS, "all": 1}),
    # the equilibria: phase 6 only
    ("stats/equilibria.py", {"solve_game": 1, "game_summary": 1, "all": 1}),
    # the dealignment: phase 4.5 only
    ("phases/recovery/dealign.py", {"train_dealign": 2, **RECOVERY_AFTER_PROMPTS, "all": 1}),
])
def test_editing_a_driftlib_module_reruns_the_rules_that_use_it(finished: Path, module: str, expected: dict) -> None:
    # the workdir's copy of driftlib is what the rules list as code inputs (see make_workdir);
    # Snakemake compares checksums, so the edit must change the content, not only the mtime
    source = finished / "src" / "driftlib" / module
    original = source.read_bytes()
    source.write_bytes(original + b"\n# an edit\n")
    try:
        assert planned_jobs(finished) == expected
    finally:
        source.write_bytes(original)
    assert planned_jobs(finished) == {}


def test_cli_step_by_hand_matches_the_workflow(finished: Path, tmp_path: Path) -> None:
    """Re-running the scoring command by hand gives the workflow's table exactly."""
    out = tmp_path / "by_hand.parquet"
    cmd = [str(BIN / "driftlib"), "-q", "score",
           "--activations", str(finished / "results/activations/llama/aligned/prompts.safetensors"),
           "--prompts", str(finished / "results/data/prompts.parquet"), "--pca-components", "8",
           "--bootstrap", "200", "--permutations", "50", "--probe-folds", "5", "--probe-permutations", "5",
           "--seed", "0", "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=300)
    pd.testing.assert_frame_equal(pd.read_parquet(out),
                                  pd.read_parquet(finished / "results/aqi/llama/aligned.parquet"))


def test_collaboration_by_hand_matches_the_workflow(finished: Path, tmp_path: Path) -> None:
    """The same transcripts from the command line as from the rule (one agent steered: 0x1)."""
    agents = [{"name": m, "model": str(finished / f"results/models/tiny/{m}-aligned"), "lam": lam,
               "vectors": str(finished / f"results/vectors/{m}.safetensors"), "dtype": "auto"}
              for m, lam in (("llama", 0.0), ("qwen2", 1.0))]
    out = tmp_path / "by_hand.parquet"
    cmd = [str(BIN / "driftlib"), "-q", "collaborate", "--agents", json.dumps(agents),
           "--tasks", str(finished / "results/collab/tasks.parquet"), "--inject", "0.5", "--rounds", "2",
           "--seeds", "0", "--max-new-tokens", "6", "--temperature", "0.7", "--top-p", "0.95",
           "--context-tokens", "160", "--batch-size", "8", "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    pd.testing.assert_frame_equal(pd.read_parquet(out),
                                  pd.read_parquet(finished / "results/collab/llama+qwen2/0x1/transcripts.parquet"))
