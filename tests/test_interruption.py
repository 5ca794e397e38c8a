"""Interruption and determinism: kill Snakemake mid-job, recover as the README says, and get the
outputs of an uninterrupted run.

One tiny model (llama, base + aligned; so no phase-4 pairs) on a config smaller than the workflow
tests' SMALL. Two working copies of the workflow run the same config and seed:

* A runs uninterrupted (in the background, while B is being interrupted);
* B is killed twice -- SIGKILL to Snakemake's whole process group, first while the
  ``extract_prompts`` job of the base model is running, then (after recovery) while
  ``sweep_same_arch`` is running -- and each time recovered the way the README says: the next run
  reports the locked directory and names ``--unlock``; ``snakemake --unlock``; run again (the
  default profile sets ``--rerun-incomplete``) until it completes.

Right after each kill the job's output must be absent under its final name, or marked incomplete
by Snakemake (atomic writes leave at most a hidden ``.<name>.*.tmp`` beside it). At the end every
Parquet table of B must equal A's (``assert_frame_equal``), every safetensors file must hold the
same tensors byte for byte, and every JSON record must be equal.

Determinism ("two runs of the tiny default with the same seed give identical tables") is the same
comparison: A and B are two runs from scratch (tiny-model training included) with one seed, so the
exact equality of all tables covers it; ``test_two_runs_with_one_seed_give_identical_summaries``
states it explicitly for the phase-1 and phase-3 summaries.

A kill that comes too late (the job finished before the signal) is detected -- the output exists
and is not marked incomplete -- and retried with an earlier trigger; if no attempt interrupts the
job, the test fails saying so rather than passing without an interruption. Every Snakemake call
runs in its own process group with a timeout that kills the group.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from snakemake_run import (
    finish,
    kill_group,
    make_workdir,
    run_snakemake,
    start_snakemake,
)

pytestmark = [pytest.mark.workflow, pytest.mark.timeout(1200)]  # the module fixture runs the workflow


#: smaller than test_workflow's SMALL: one architecture, a few training steps, few prompts
MINI = {
    "seed": 0,
    "tiny": {"vocab_size": 300, "base_steps": 3, "aligned_steps": 2},
    "data": {"prompts": {"per_group": 4}, "pairs": {"n": 8}},
    "models": {"llama": {"aligned": "tiny:llama-aligned", "base": "tiny:llama-base"}},
    "extraction": {"batch_size": 8, "max_length": 32},
    "aqi": {"layers": [0.5, 1.0], "pca_components": 4, "bootstrap": 100, "permutations": 10, "probe_permutations": 2},
    "vectors": {"stability_splits": 2},
    "steering": {"layers": [0.5], "measure_layers": [1.0], "lambdas": [0, 1],
                 "cost": {"n_texts": 2, "n_prompts": 1, "max_new_tokens": 4}},
}

#: the jobs killed: (rule, its log, its output)
EXTRACTION = ("extract_prompts", "results/logs/extract_prompts/llama-base.log",
              "results/activations/llama/base/prompts.safetensors")
SWEEP = ("sweep_same_arch", "results/logs/sweep_same_arch/llama.log",
         "results/steering/llama/sweep.safetensors")

#: when to send the kill, tried in order until one interrupts the job: once driftlib has logged
#: that it is loading the model (mid-job, the command is running), else as soon as the job's log
#: file exists (the job's shell has started)
TRIGGERS = (("driftlib is loading the model", lambda text: "loading" in text),
            ("the job's log file exists", lambda text: True))

#: what the runs build: phases 1-3 (the killed jobs are on their way); later phases are left out so
#: the test stays small whatever phases the workflow grows
TARGETS = ("results/baseline/aqi_summary.parquet", "results/vectors/vector_stats.parquet",
           "results/steering/steering_summary.parquet")

RUN_TIMEOUT = 600  # seconds for any one Snakemake call; on expiry its process group is killed


def incomplete_marks(workdir: Path) -> set[str]:
    """The output paths Snakemake has marked incomplete (its file persistence backend stores one
    marker per path, named by the path's urlsafe base64, long names split into '@'-prefixed dirs)."""
    root = workdir / ".snakemake" / "incomplete"
    marks = set()
    for marker in root.rglob("*") if root.is_dir() else ():
        if marker.is_file() and marker.name != "migration_underway":
            encoded = "".join(part.lstrip("@") for part in marker.relative_to(root).parts)
            marks.add(base64.urlsafe_b64decode(encoded.encode()).decode())
    return marks


@dataclass
class Kill:
    """What one kill of a running job left behind."""

    rule: str
    trigger: str
    attempts: int
    output_exists: bool
    output_marked_incomplete: bool
    tmp_files: list[str]
    locked_message: str = ""


@dataclass
class Runs:
    reference: Path
    interrupted: Path
    kills: list[Kill] = field(default_factory=list)
    final_output: str = ""


def kill_during(workdir: Path, rule: str, log: str, output: str) -> Kill:
    """Run the workflow in ``workdir`` and SIGKILL its process group while ``rule`` is running.

    A kill that comes after the job finished (its output exists and is not marked incomplete) did
    not interrupt anything: the output is removed, the directory unlocked and the run retried with
    the next, earlier, trigger; when none interrupts the job the test fails.
    """
    log_path, out_path = workdir / log, workdir / output
    for attempt, (trigger, ready) in enumerate(TRIGGERS, start=1):
        log_path.unlink(missing_ok=True)  # a log left by an earlier attempt must not trigger this one
        proc = start_snakemake(workdir, "--cores", "2", *TARGETS)
        deadline = time.monotonic() + RUN_TIMEOUT
        fired = False
        while time.monotonic() < deadline and proc.poll() is None:
            if log_path.is_file() and ready(log_path.read_text(errors="replace")):
                fired = True
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            out, _ = proc.communicate()
            pytest.fail(f"Snakemake ended ({proc.returncode}) before {rule} could be killed:\n{out[-5000:]}")
        out = kill_group(proc)
        if not fired:
            pytest.fail(f"{rule} did not start within {RUN_TIMEOUT}s:\n{out[-5000:]}")
        exists, marked = out_path.exists(), output in incomplete_marks(workdir)
        tmp = sorted(p.name for p in out_path.parent.glob(f".{out_path.name}.*.tmp")) if out_path.parent.is_dir() else []
        if exists and not marked:  # finished before the signal: nothing was interrupted
            out_path.unlink()
            run_snakemake(workdir, "--unlock")
            continue
        return Kill(rule, trigger, attempt, exists, marked, tmp)
    pytest.fail(f"could not kill {rule} while it ran: every trigger ({', '.join(t for t, _ in TRIGGERS)}) "
                f"came after the job had finished; the machine may be much faster than expected")


def recover(workdir: Path, kill: Kill) -> None:
    """The README's recovery: the next run stops on the lock (recorded for the message test), then
    ``snakemake --unlock``; the caller runs again (``--rerun-incomplete`` is in the profile)."""
    locked = run_snakemake(workdir, "--cores", "2", *TARGETS, check=False)
    assert locked.returncode != 0, f"a run after the kill of {kill.rule} did not stop on the lock:\n{locked.stdout[-3000:]}"
    kill.locked_message = locked.stdout
    run_snakemake(workdir, "--unlock")


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


#: JSON keys that record wall-clock time (the tiny models' training seconds), not results
TIMING_KEYS = {"seconds"}


def canonical_json(path: Path) -> str:
    """A JSON record without its timing keys, as comparable text (NaN compares equal as 'NaN')."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
        return [strip(v) for v in obj] if isinstance(obj, list) else obj

    return json.dumps(strip(json.loads(path.read_text())), sort_keys=True)


def outputs(workdir: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob(pattern))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    reference = make_workdir(tmp_path_factory.mktemp("uninterrupted"), MINI)
    interrupted = make_workdir(tmp_path_factory.mktemp("interrupted"), MINI)
    background = start_snakemake(reference, "--cores", "2", *TARGETS)  # A runs while B is being killed
    try:
        result = Runs(reference, interrupted)
        for rule, log, output in (EXTRACTION, SWEEP):
            # the extraction is redone by the run killed in the sweep, or by the final run
            kill = kill_during(interrupted, rule, log, output)
            recover(interrupted, kill)
            result.kills.append(kill)
            print(f"killed {rule} when {kill.trigger} (attempt {kill.attempts}): output exists {kill.output_exists}, "
                  f"marked incomplete {kill.output_marked_incomplete}, temporaries {kill.tmp_files}")
        result.final_output = run_snakemake(interrupted, "--cores", "2", *TARGETS).stdout
        a = finish(background, "the uninterrupted run")
        if a.returncode != 0:
            pytest.fail(f"the uninterrupted run failed ({a.returncode}):\n{a.stdout[-5000:]}")
    finally:
        if background.poll() is None:
            kill_group(background)
    return result


def test_kills_interrupted_the_jobs_and_left_no_final_file(runs: Runs) -> None:
    assert [k.rule for k in runs.kills] == [EXTRACTION[0], SWEEP[0]]
    for kill in runs.kills:
        # no half file under the final name: absent, or marked incomplete for Snakemake to redo
        assert not kill.output_exists or kill.output_marked_incomplete, kill


def test_the_locked_directory_message_names_unlock(runs: Runs) -> None:
    for kill in runs.kills:
        message = kill.locked_message
        assert "cannot be locked" in message and "--unlock" in message, message[-3000:]
        assert "Traceback" not in message


def test_rerun_completes_and_leaves_nothing_incomplete(runs: Runs) -> None:
    assert "alignment-drift finished" in runs.final_output
    assert incomplete_marks(runs.interrupted) == set()
    # the only temporaries left are those of writes the kills cut off (a SIGKILL cannot clean up)
    left = {p.name for p in (runs.interrupted / "results").rglob(".*.tmp")}
    assert left <= {name for kill in runs.kills for name in kill.tmp_files}, left
    # nothing missing or incomplete is left to do (mtime is left out of the triggers: the rules'
    # inputs include driftlib's source files, which an edit of the checkout would make newer)
    dry = run_snakemake(runs.interrupted, "-n", *TARGETS, "--rerun-triggers", "params", "input", "software-env",
                        "code")
    assert "Nothing to be done" in dry.stdout, dry.stdout[-3000:]


def test_interrupted_run_matches_the_uninterrupted_one(runs: Runs) -> None:
    a, b = runs.reference, runs.interrupted
    tables = outputs(a, "*.parquet")
    assert tables == outputs(b, "*.parquet") and len(tables) >= 10
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(b / name), pd.read_parquet(a / name), check_exact=True,
                                      obj=name)
    tensors = outputs(a, "*.safetensors")
    assert tensors == outputs(b, "*.safetensors")
    assert {EXTRACTION[2], SWEEP[2], "results/models/tiny/llama-base/model.safetensors"} <= set(tensors)
    for name in tensors:
        (ta, ma), (tb, mb) = read_safetensors(a / name), read_safetensors(b / name)
        assert sorted(ta) == sorted(tb), name
        for key in ta:
            assert ta[key].dtype == tb[key].dtype and ta[key].shape == tb[key].shape, (name, key)
            assert ta[key].tobytes() == tb[key].tobytes(), f"{name}: tensor {key} differs"
        assert ma == mb, name
    records = outputs(a, "*.json")
    assert records == outputs(b, "*.json")
    for name in records:
        assert canonical_json(a / name) == canonical_json(b / name), name


def test_every_artifact_of_the_interrupted_run_is_byte_identical(runs: Runs) -> None:
    """Not only the same values: the same bytes, file by file (tables, tensors, records, models,
    plots), so a colleague's checksum of a result means the same result; logs and benchmark times
    are the run's own and are left out, and so are timing.json files, which nothing depends on."""
    def files(root: Path) -> dict[str, bytes]:
        out = {}
        for p in sorted((root / "results").rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and rel.parts[1] not in ("logs", "benchmarks") and p.name != "timing.json":
                out[str(rel)] = p.read_bytes()
        return out

    a, b = files(runs.reference), files(runs.interrupted)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == []


def test_two_runs_with_one_seed_give_identical_summaries(runs: Runs) -> None:
    """Determinism: two runs from scratch of the tiny workflow with seed 0 give identical tables
    (all tables are compared above; these are the phase-1 and phase-3 summaries)."""
    for name in ("results/baseline/aqi_summary.parquet", "results/steering/steering_summary.parquet"):
        a, b = pd.read_parquet(runs.reference / name), pd.read_parquet(runs.interrupted / name)
        assert len(a) > 0
        pd.testing.assert_frame_equal(b, a, check_exact=True)
