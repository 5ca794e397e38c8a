"""The SLURM profile (profiles/slurm): a static check of its settings, the resources a dry run gives
every job, and a run through snakemake-executor-plugin-slurm against stand-in SLURM commands
(tests/slurm_stubs/fake_slurm.py) that run the submitted jobs on this machine.

Snakemake runs in its own process group with a timeout; on expiry, and after every run, the whole
group (Snakemake, the plugin's sbatch calls and the background jobs) is killed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake_run import BIN, REPO, make_workdir, run_snakemake

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
FAKE_SLURM = Path(__file__).resolve().parent / "slurm_stubs" / "fake_slurm.py"
SLURM_COMMANDS = ("sbatch", "sacct", "squeue", "scancel", "sinfo", "scontrol", "sacctmgr", "srun")

#: flags the plugin sets itself; slurm_extra must not carry them (the plugin refuses most of them)
MANAGED_FLAGS = ("--gpus", "--gres", "--partition", "-p", "--account", "-A", "--mem", "--mem-per-cpu",
                 "--time", "-t", "-c", "--cpus-per-task", "--cpus-per-gpu", "--job-name", "-J",
                 "--output", "-o", "--ntasks", "-n", "--nodes", "-N", "--qos", "--constraint", "-C")

#: what the test puts in place of the profile's placeholders
ACCOUNT, CPU_PARTITION, GPU_PARTITION = "drift-test", "cpu-test", "gpu-test"

#: the smallest config that still trains a tiny model, extracts on it and scores it
TINY = {
    "seed": 0,
    "tiny": {"vocab_size": 512, "base_steps": 5, "aligned_steps": 3},
    "data": {"prompts": {"per_group": 4}, "pairs": {"n": 10}},
    # params_b scales the GPU rules' memory and time (workflow/rules/common.smk): 4000 + 2500 * 2 MB,
    # 30 + 15 * 2 minutes
    "models": {"llama": {"aligned": "tiny:llama-aligned", "params_b": 2}},
    "extraction": {"batch_size": 8, "max_length": 32},
    "aqi": {"layers": [0.5, 1.0], "pca_components": 4, "bootstrap": 100, "permutations": 10, "probe_permutations": 2},
    "vectors": {"stability_splits": 2},
}


# --- what the workflow and the profile declare -------------------------------------------------


def rules_in_workflow() -> dict[str, bool]:
    """Every rule in workflow/rules/*.smk and the Snakefile -> whether it declares a gpu resource."""
    rules: dict[str, bool] = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        rule = directive = None
        for line in path.read_text().splitlines():
            if m := re.match(r"^(?:rule|checkpoint)\s+(\w+)\s*:", line):
                rule, directive = m.group(1), None
                rules[rule] = False
                continue
            if line.strip() == "" or line.lstrip().startswith("#"):
                continue
            if not line.startswith((" ", "\t")):
                rule = directive = None  # back at top level
                continue
            if rule is None:
                continue
            if m := re.match(r"^ {4}(\w+)\s*:(.*)$", line):
                directive, rest = m.group(1), m.group(2)
            else:
                rest = line
            if directive == "resources" and re.search(r"\bgpus?\s*=", rest):
                rules[rule] = True
    return rules


def load_profile(path: Path = PROFILE) -> dict:
    return yaml.safe_load(path.read_text())


def resource_string(value) -> str:
    """A profile resource value as Snakemake reads it: "'x'" is the string x."""
    text = str(value).strip()
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def partitions(profile: dict) -> tuple[str, str, dict[str, str]]:
    """(CPU partition, GPU partition, rule -> partition set for it) as the profile gives them."""
    cpu = resource_string(profile["default-resources"]["slurm_partition"])
    per_rule = {rule: resource_string(res["slurm_partition"])
                for rule, res in (profile.get("set-resources") or {}).items() if "slurm_partition" in res}
    gpu_values = {per_rule[r] for r, gpu in rules_in_workflow().items() if gpu and r in per_rule}
    assert len(gpu_values) == 1, f"GPU rules should share one partition, found {gpu_values}"
    return cpu, gpu_values.pop(), per_rule


def walk(node, path=""):
    """Every (path, key or value) in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", str(key)
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    elif node is not None:
        yield path, str(node)


# --- fast checks of the profile itself ---------------------------------------------------------


def test_workflow_rules_are_parsed() -> None:
    """The .smk parser behind the partition checks finds the known GPU and CPU rules."""
    rules = rules_in_workflow()
    assert {r for r, gpu in rules.items() if gpu} >= {"extract_prompts", "extract_pairs",
                                                      "sweep_same_arch", "capability_cost"}
    assert rules["tiny_base"] is False and rules["tiny_aligned"] is False and rules["score_aqi"] is False


def test_profile_settings() -> None:
    profile = load_profile()
    assert profile["executor"] == "slurm"
    assert profile["retries"] == 1
    assert isinstance(profile["jobs"], int) and profile["jobs"] >= 1
    assert profile["latency-wait"] >= 30 and profile["rerun-incomplete"] is True
    defaults = profile["default-resources"]
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(defaults)
    # more memory on the second attempt, for the defaults and every rule that sets its own
    for where, res in [("default-resources", defaults), *profile.get("set-resources", {}).items()]:
        if "mem_mb" in res:
            expr = str(res["mem_mb"])
            assert "attempt" in expr, f"{where}: mem_mb does not depend on attempt"
            first, second = (eval(expr, {"__builtins__": {}}, {"attempt": a}) for a in (1, 2))
            assert second > first > 0, f"{where}: mem_mb {expr} does not grow on a retry"


def test_default_profile_does_not_override_this_profile() -> None:
    """profiles/default is read too and wins key by key (a default-resources or set-resources there
    would replace this profile's whole list): keys in both must agree."""
    default = load_profile(REPO / "profiles" / "default" / "config.yaml")
    profile = load_profile()
    assert "default-resources" not in default and "set-resources" not in default
    clashes = {k: (default[k], profile[k]) for k in set(default) & set(profile) if default[k] != profile[k]}
    assert not clashes, f"profiles/default overrides profiles/slurm: {clashes}"


def test_profile_asks_for_gpus_only_through_the_gpu_resource() -> None:
    profile = load_profile()
    for path, text in walk(profile):
        assert "gres" not in text.lower(), f"{path}: {text!r} (GPUs are asked for with the gpu resource)"
    extras = [(path, text) for path, text in walk(profile) if path.endswith("/slurm_extra")]
    for path, text in extras:
        tokens = [t.split("=", 1)[0] for t in shlex.split(resource_string(text))]
        bad = [t for t in tokens if t in MANAGED_FLAGS or any(t.startswith(f + "=") for f in MANAGED_FLAGS)]
        assert not bad, f"{path}: {bad} are set by the plugin, not through slurm_extra"
    try:
        from snakemake_executor_plugin_slurm.validation import (
            get_forbidden_slurm_options,
        )
    except ImportError:
        return
    for path, text in extras:
        for pattern, what in get_forbidden_slurm_options().items():
            assert not re.search(pattern, resource_string(text)), f"{path}: the plugin refuses {what}"


def test_every_gpu_rule_is_sent_to_the_gpu_partition() -> None:
    profile = load_profile()
    rules = rules_in_workflow()
    cpu, gpu, per_rule = partitions(profile)
    assert gpu != cpu
    missing = sorted(r for r, is_gpu in rules.items() if is_gpu and per_rule.get(r) != gpu)
    assert not missing, f"GPU rules without the GPU partition {gpu!r} in profiles/slurm: {missing}"
    unknown = sorted(set(profile.get("set-resources") or {}) - set(rules))
    assert not unknown, f"set-resources names rules the workflow does not have: {unknown}"
    on_gpu_without_gpu = sorted(r for r, p in per_rule.items() if p == gpu and not rules[r])
    assert not on_gpu_without_gpu, f"rules on the GPU partition that ask for no GPU: {on_gpu_without_gpu}"


def test_placeholders_are_explained() -> None:
    text = PROFILE.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    values = [resource_string(v) for _, v in walk(load_profile())]
    placeholders = {v for v in values if v.startswith("REPLACE_ME")}
    assert len(placeholders) == 3  # account, CPU partition, GPU partition
    for placeholder in placeholders:
        assert placeholder in comments, f"{placeholder} is not explained in a comment"


# --- Snakemake with the profile ----------------------------------------------------------------


def fill_placeholders(workdir: Path) -> None:
    """Put the test's account and partitions into the workdir's copy of the profile."""
    profile = workdir / "profiles" / "slurm" / "config.yaml"
    text = profile.read_text()
    for placeholder, value in [("REPLACE_ME_account", ACCOUNT), ("REPLACE_ME_cpu_partition", CPU_PARTITION),
                               ("REPLACE_ME_gpu_partition", GPU_PARTITION)]:
        assert placeholder in text
        text = text.replace(placeholder, value)
    profile.write_text(text)


def fake_slurm_bin(path: Path) -> Path:
    """A folder of sbatch, sacct, ... that call the stand-in with this test's Python."""
    path.mkdir()
    for cmd in SLURM_COMMANDS:
        wrapper = path / cmd
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SLURM}" {cmd} "$@"\n')
        wrapper.chmod(0o755)
    return path


@pytest.mark.workflow
def test_dry_run_gives_gpu_jobs_the_gpu_partition(tmp_path: Path) -> None:
    """Every job of the embedded default (every rule) gets its partition from the profile as
    Snakemake merges it with profiles/default: a gpu request goes with the GPU partition. Phase 5's
    pre-steered runs under the compared operators are switched on, so that every rule is planned."""
    workdir = make_workdir(tmp_path)
    config = workdir / "config" / "config.yaml"
    text = config.read_text()
    assert "compare_operators: false" in text
    config.write_text(text.replace("compare_operators: false", "compare_operators: true"))
    out = run_snakemake(workdir, "-n", "--profile", "profiles/slurm", timeout=300).stdout
    assert "workflow specific profile profiles/default" in out  # both profiles were read
    cpu, gpu, _ = partitions(load_profile())
    seen = {}
    for rule, resources in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M):
        res = dict(item.split("=", 1) for item in resources.split(", "))
        wants_gpu = int(res.get("gpu", 0)) > 0
        assert res.get("slurm_partition") == (gpu if wants_gpu else cpu), (rule, res)
        assert res.get("slurm_account") and res.get("mem_mb") and res.get("runtime"), (rule, res)
        seen[rule] = wants_gpu
    gpu_rules = {r for r, is_gpu in rules_in_workflow().items() if is_gpu}
    assert {r for r, g in seen.items() if g} == gpu_rules
    assert {"tiny_base", "tiny_aligned", "score_aqi", "compute_vectors"} <= {r for r, g in seen.items() if not g}


def sbatch_calls(state: Path) -> list[dict]:
    """The recorded sbatch calls: rule, partition, account, memory, time, GPU flags."""
    calls = []
    for line in (state / "calls.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["cmd"] != "sbatch":
            continue
        args = entry["args"]
        opts = {}
        for i, arg in enumerate(args):
            if arg in ("-p", "-A", "-t", "--mem", "--comment") and i + 1 < len(args):
                opts[arg] = args[i + 1]
        comment = opts["--comment"]
        assert comment.startswith("rule_")
        calls.append({
            "rule": comment[len("rule_"):].split("_wildcards_")[0],
            "partition": opts.get("-p"), "account": opts.get("-A"),
            "mem": int(opts["--mem"]), "time": int(opts["-t"]),
            "gpus": [a for a in args if a.startswith(("--gpus", "--gres", "-G"))],
            "extra": [a for a in args if a.startswith("--cpus-per")],
        })
    return calls


@pytest.mark.workflow
def test_run_through_the_slurm_executor(tmp_path: Path) -> None:
    """Phase 1 of one tiny model through the plugin: CPU jobs (tiny family, scoring) on the CPU
    partition, GPU jobs (extraction) with --gpus on the GPU partition, and a job that runs out of
    memory once retried with twice the memory."""
    workdir = make_workdir(tmp_path / "wf", TINY)
    fill_placeholders(workdir)
    state = tmp_path / "slurm"
    env = dict(os.environ)
    env.update(
        PATH=os.pathsep.join([str(fake_slurm_bin(tmp_path / "bin")), str(BIN), env.get("PATH", "")]),
        FAKE_SLURM_DIR=str(state), FAKE_SLURM_ACCOUNTS=ACCOUNT,
        FAKE_SLURM_PARTITIONS=f"{CPU_PARTITION}*,{GPU_PARTITION}", FAKE_SLURM_OOM_ONCE="score_aqi",
        OMP_NUM_THREADS="1",  # the stand-in jobs share this machine's cores
    )
    targets = ["results/aqi/llama/aligned.parquet", "results/activations/llama/aligned/pairs.safetensors"]
    start = time.monotonic()
    # the stand-in scheduler answers at once: poll it every second (the plugin's default waits 10 s a round)
    result = run_snakemake(workdir, "--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "1",
                           "--seconds-between-status-checks", "1", *targets, env=env, timeout=540)
    elapsed = time.monotonic() - start

    table = pd.read_parquet(workdir / targets[0])
    assert len(table) > 0 and "overall" in set(table["category"])
    assert (workdir / targets[1]).stat().st_size > 0

    calls = sbatch_calls(state)
    rules = rules_in_workflow()
    by_rule: dict[str, list[dict]] = {}
    for call in calls:
        by_rule.setdefault(call["rule"], []).append(call)
    # local rules stay on the submitting machine; everything else went through sbatch
    assert set(by_rule) == {"tiny_tokenizer", "tiny_base", "tiny_aligned", "extract_prompts",
                            "extract_pairs", "score_aqi"}, sorted(by_rule)
    for call in calls:
        assert call["account"] == ACCOUNT, call
        if rules[call["rule"]]:
            assert call["gpus"] == ["--gpus=1"], call
            assert call["partition"] == GPU_PARTITION, call
        else:
            assert call["gpus"] == [], call
            assert call["partition"] == CPU_PARTITION, call
    first = {rule: runs[0] for rule, runs in by_rule.items()}
    assert first["extract_prompts"]["mem"] == 9000 and first["extract_prompts"]["time"] == 60
    assert first["tiny_base"]["mem"] == 8000 and first["tiny_base"]["time"] == 60
    # threads: 4 (1 where the submitting machine has at most 2 cores, common.smk's model_threads),
    # capped by profiles/default's `cores: all` there
    cpus = 1 if os.cpu_count() <= 2 else min(4, os.cpu_count())
    assert first["extract_pairs"]["extra"] == [f"--cpus-per-task={cpus}"]
    # retries: 1 -- the out-of-memory job is submitted again with attempt=2
    assert [(c["mem"], c["time"]) for c in by_rule["score_aqi"]] == [(8000, 60), (16000, 120)]
    assert all(len(runs) == 1 for rule, runs in by_rule.items() if rule != "score_aqi")
    assert "OUT_OF_MEMORY" in result.stdout

    # inside each job the plugin's job step ran the rule through srun, with the GPU for GPU rules
    entries = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    sruns = [e["args"] for e in entries if e["cmd"] == "srun"]
    assert len(sruns) == len(calls) - 1  # the out-of-memory attempt never started
    assert sum("--gpus=1" in args for args in sruns) == 2
    # job states came from sacct in the plugin's format
    assert any(e["cmd"] == "sacct" and "--format=JobIdRaw,State" in e["args"] for e in entries)
    print(f"slurm run: {len(calls)} submissions in {elapsed:.0f} s")
