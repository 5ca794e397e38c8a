"""Workflow tests: Snakemake on a small tiny-family config in a temporary copy of the workflow.

Each Snakemake call runs in its own process group with a timeout; on expiry the whole group is
killed, so a hung job cannot hang the test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")

#: a small version of the embedded default: two architectures, short training, small samples
SMALL = {
    "seed": 0,
    "tiny": {"vocab_size": 512, "base_steps": 20, "aligned_steps": 10},
    "data": {"prompts": {"per_group": 6}, "pairs": {"n": 20}},
    "models": {
        "llama": {"aligned": "tiny:llama-aligned", "base": "tiny:llama-base"},
        "qwen2": {"aligned": "tiny:qwen2-aligned", "base": "tiny:qwen2-base"},
    },
    "extraction": {"batch_size": 8, "max_length": 64},
    "aqi": {"layers": [0.5, 1.0], "pca_components": 8, "bootstrap": 200, "permutations": 50},
    "vectors": {"stability_splits": 5},
    "steering": {"layers": [0.5], "measure_layers": [1.0], "lambdas": [0, 0.5, 1],
                 "cost": {"n_texts": 6, "n_prompts": 2, "max_new_tokens": 6}},
}


def run_snakemake(workdir: Path, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir`` in a new process group; kill the group on timeout."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"snakemake {' '.join(args)} timed out after {timeout}s:\n{out[-3000:]}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{out[-5000:]}")
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """The rule -> job count table of a dry run (empty when there is nothing to do)."""
    out = run_snakemake(workdir, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines():
        m = re.match(r"^([A-Za-z_][\w]*)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def planned_after(workdir: Path, change) -> dict[str, int]:
    """The dry-run job table after ``change(config)`` on a copy of SMALL; SMALL is restored after."""
    config = yaml.safe_load(yaml.safe_dump(SMALL))
    change(config)
    write_config(workdir, config)
    try:
        return planned_jobs(workdir)
    finally:
        write_config(workdir, SMALL)


def make_workdir(path: Path, config: dict) -> Path:
    for name in ("Snakefile", "workflow", "profiles", "config"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, path / name)
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workdir on which the small config has run to completion once."""
    workdir = make_workdir(tmp_path_factory.mktemp("wf"), SMALL)
    run_snakemake(workdir, "--cores", "2", timeout=900)
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


def test_run_produces_vectors_and_steering_curves(finished: Path) -> None:
    from driftlib.vectors import load_vectors

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


def test_second_run_has_nothing_to_do(finished: Path) -> None:
    assert planned_jobs(finished) == {}


def test_changing_sample_count_reruns_extraction_and_after_not_models(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["data"]["prompts"].update(per_group=5))
    assert jobs == {"prepare_prompts": 1, "extract_prompts": 4, "score_aqi": 4, "baseline_summary": 1,
                    "sweep_same_arch": 2, "score_sweep": 2, "steering_summary": 1, "all": 1}


def test_changing_aqi_settings_rescores_without_extraction(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["aqi"].update(bootstrap=300))
    assert jobs == {"score_aqi": 4, "baseline_summary": 1, "score_sweep": 2, "steering_summary": 1, "all": 1}


def test_changing_the_lambda_grid_reruns_sweeps_not_extraction_or_vectors(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["steering"].update(lambdas=[0, 0.25, 0.5, 1]))
    assert jobs == {"sweep_same_arch": 2, "score_sweep": 2, "capability_cost": 2, "steering_summary": 1, "all": 1}


def test_adding_a_model_runs_only_its_jobs_and_summaries(finished: Path) -> None:
    jobs = planned_after(finished, lambda c: c["models"].update(phi3={"aligned": "tiny:phi3-aligned"}))
    # phi3 here has no base model: no steering sweep, only its phase 1 and phase 2 jobs
    assert jobs == {"tiny_base": 1, "tiny_aligned": 1, "extract_prompts": 1, "score_aqi": 1,
                    "baseline_summary": 1, "extract_pairs": 1, "compute_vectors": 1,
                    "vectors_summary": 1, "steering_summary": 1, "all": 1}


def test_cli_step_by_hand_matches_the_workflow(finished: Path, tmp_path: Path) -> None:
    """Re-running the scoring command by hand gives the workflow's table exactly."""
    out = tmp_path / "by_hand.parquet"
    cmd = [str(BIN / "driftlib"), "-q", "score",
           "--activations", str(finished / "results/activations/llama/aligned/prompts.safetensors"),
           "--prompts", str(finished / "results/data/prompts.parquet"), "--pca-components", "8",
           "--bootstrap", "200", "--permutations", "50", "--seed", "0", "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=300)
    pd.testing.assert_frame_equal(pd.read_parquet(out),
                                  pd.read_parquet(finished / "results/aqi/llama/aligned.parquet"))


def test_lint_is_clean(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path, SMALL)
    out = run_snakemake(workdir, "--lint").stdout
    assert "Congratulations, your workflow is in a good condition!" in out, out


def test_paper_config_validates_and_dry_runs(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path, SMALL)
    shutil.copy(REPO / "config/paper.yaml", workdir / "config/paper.yaml")
    jobs = planned_jobs(workdir, "--configfile", "config/paper.yaml")
    # 4 families with base + instruct, Phi-3 mini instruct only; no tiny models are merged in
    assert jobs["extract_prompts"] == 9 and jobs["score_aqi"] == 9
    assert jobs["extract_pairs"] == 9 and jobs["compute_vectors"] == 5
    assert jobs["sweep_same_arch"] == 4  # Phi-3-mini has no base model to steer
    assert "tiny_base" not in jobs


@pytest.mark.parametrize("change, words", [
    (lambda c: c["aqi"].update(bootstrap="many"), ["aqi.bootstrap", "integer"]),
    (lambda c: c["data"]["prompts"].update(per_gruop=3), ["data.prompts.per_gruop", "unknown key"]),
    (lambda c: c.update(models={}), ["models", "minProperties"]),
    (lambda c: c["models"].update({"../x": {"aligned": "tiny:llama-aligned"}}), ["'../x'", "results/"]),
    (lambda c: c["models"]["llama"].update(aligned="tiny:llama-base"), ["models.llama.aligned", "base model"]),
    (lambda c: c["aqi"].update(layers=[0.5, 9]), ["aqi.layers[1]", "does not exist"]),
    (lambda c: c["steering"].update(lambdas=[0, 0.5, 0.5]), ["steering.lambdas", "non-unique"]),
    (lambda c: c["steering"].update(layers=[1.0]), ["steering.measure_layers", "is not after"]),
    (lambda c: c["steering"].update(measure_layers=[0.75]), ["steering.measure_layers[0]", "not in aqi.layers"]),
])
def test_bad_config_is_rejected_naming_the_key(tmp_path: Path, change, words) -> None:
    config = yaml.safe_load(yaml.safe_dump(SMALL))
    change(config)
    workdir = make_workdir(tmp_path, config)
    result = run_snakemake(workdir, "-n", check=False, timeout=120)
    assert result.returncode != 0
    for word in words:
        assert word in result.stdout, result.stdout[-2000:]
    assert "Traceback" not in result.stdout
