"""Running Snakemake from tests: a copy of the workflow in a temporary folder, each Snakemake in
its own process group with a timeout. The group (Snakemake and its jobs) is killed on expiry and
when a call ends, so no job outlives its test: the SLURM plugin has been seen to ignore SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def make_workdir(path: Path, config: dict | None = None) -> Path:
    """A copy of the workflow with driftlib's sources: the Snakefile puts ``src/`` first on its
    path, so the rules list the copy's modules as code inputs, which a test may edit without
    touching the checkout (the jobs run the installed driftlib, whose code is the same)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "profiles", "config", "src"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, path / name)
    if config is not None:
        write_config(path, config)
    return path


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def start_snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start Snakemake in ``workdir`` in a new process group (its jobs run in that group too)."""
    if env is None:
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> str:
    """SIGKILL the process group of ``proc``; wait until no process of it is left; return output."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, _ = proc.communicate()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return out or ""
        time.sleep(0.05)
    pytest.fail(f"processes of the killed Snakemake group {proc.pid} are still alive after 30 s")


def finish(proc: subprocess.Popen, what: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for ``proc``; kill its group on timeout, and afterwards (background jobs of a failed
    run must not outlive the test)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = kill_group(proc)
        pytest.fail(f"{what} timed out after {timeout}s:\n{out[-5000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: float = 600,
                  check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir`` to the end; fail the test on timeout or (with ``check``) error."""
    what = f"snakemake {' '.join(args)}"
    result = finish(start_snakemake(workdir, *args, env=env), what, timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout[-8000:]}")
    return result


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
    "aqi": {"layers": [0.5, 1.0], "pca_components": 8, "bootstrap": 200, "permutations": 50,
            "probe_permutations": 5},
    "vectors": {"stability_splits": 5},
    "steering": {"layers": [0.5], "measure_layers": [1.0], "lambdas": [0, 0.5, 1],
                 "cost": {"n_texts": 6, "n_prompts": 2, "max_new_tokens": 6}},
    "cross_arch": {"anchors": {"n": 80}, "procrustes_components": 8, "relative_anchors": 16, "folds": 3},
    "dealign": {"steps": [3, 6], "batch_size": 4, "max_length": 96, "lr": 0.005},
    "collaboration": {"n_tasks": 2, "pairings": [["llama", "qwen2"]], "rounds": 2, "seeds": [0],
                      "max_new_tokens": 6, "context_tokens": 160, "permutations": 100},
    "game": {"lambdas": [0, 1], "sensitivity": [0, 1, 4]},
}


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
