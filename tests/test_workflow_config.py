"""Workflow checks that need no finished run: the lint, the shipped configs' plans, and the config
schema's errors. Apart from ``test_workflow.py`` (whose module fixture runs the workflow) so that a
parallel test run can put them on another worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from snakemake_run import REPO, SMALL, make_workdir, planned_jobs, run_snakemake

pytestmark = [pytest.mark.workflow]


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
    assert jobs["sweep_same_arch"] == 5  # Phi-3-mini, without a base, steered itself
    # phase 4: 5 sources x 5 targets minus the diagonal; anchors once per model
    # one transfer sweep per target over the mapped vectors of every source into it
    assert jobs["fit_maps"] == 20 and jobs["transfer_sweep"] == 5 and jobs["extract_anchors"] == 5
    assert "tiny_base" not in jobs
    # phase 5/6: pairs of 2, 2 and 3 agents over a grid of 3 postures: 9 + 9 + 27 runs; each agent's
    # solo control once per posture (5 agents x 3)
    assert jobs["collaborate"] == 45 and jobs["solo_run"] == 15 and jobs["solve_game"] == 3


def test_real_small_config_validates_and_dry_runs(tmp_path: Path) -> None:
    """The real-weights config plans every phase (the packages are only needed to run it)."""
    workdir = make_workdir(tmp_path, SMALL)
    shutil.copy(REPO / "config/real-small.yaml", workdir / "config/real-small.yaml")
    jobs = planned_jobs(workdir, "--configfile", "config/real-small.yaml")
    assert jobs["materialize_real"] == 2 and "tiny_base" not in jobs
    # no base variants: both models are steered themselves, and each is the other's phase-4 target
    assert jobs["sweep_same_arch"] == 2 and jobs["fit_maps"] == jobs["transfer_sweep"] == 2
    assert jobs["train_dealign"] == 1 and jobs["recovery_sweep"] == 2  # SmolLM2-Instruct only, 2 strengths
    # phase 5/6: the 2 x 2 posture grid, and the pre-steered run again under conditional and ablate
    # (steering.compare), each of those gated by a condition fitted on the agent's own model
    assert jobs["collaborate"] == 6 and jobs["solve_game"] == 1 and jobs["fit_agent_condition"] == 2


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
    (lambda c: c["collaboration"].update(pairings=[["llama", "mistral"]]), ["collaboration.pairings[0]", "mistral"]),
    (lambda c: c["collaboration"].update(rounds=1), ["collaboration.rounds", "minimum"]),
    (lambda c: c["game"].update(lambdas=[0.5, 1]), ["game.lambdas", "no 0"]),
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
