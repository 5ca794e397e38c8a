"""Benchmark: start-up cost of the numpy-only commands and of the workflow's plan (a script, not a test).

    .venv/bin/python benchmarks/bench_startup.py [--repeat 5] [--no-snakemake] [--no-noop]

Every row is timed side by side in this one run, each the fastest of ``--repeat`` fresh processes
(the machine's other load changes the numbers; the load average is printed):

- ``python -c pass``: the interpreter alone, the unit of the ratio column;
- ``import torch`` (and ``scipy.stats``, ``sklearn.decomposition``): what loading them costs;
- ``driftlib score --help``, ``driftlib check-config``: the parser, and the config check;
- ``driftlib score`` and ``driftlib score-sweep`` on small generated files (80 prompts, 50
  resamples, the default PCA of the standardised features): real scoring jobs, start-up and all;
  and their start-up alone: the job's wall time less its phase function's time measured in this
  process with the modules loaded;
- ``code()`` of every command, the rule inputs ``workflow/rules/common.smk`` computes at parse time:
  without the caches of :mod:`driftlib.cli.codegraph` (each call re-reads the CLI and re-parses
  every module it reaches, an upper bound of the cost before the caches), with the per-process ones
  (one call per command, as a first plan makes them), and with the results an earlier plan kept on
  disk (``$XDG_CACHE_HOME/driftlib/``, valid while no source file changes);
- ``snakemake -n`` on the embedded default, in a scratch copy of the workflow: without ``results/``,
  once with nothing kept (the first plan, which parses driftlib) and then as every later plan; then with every output present (empty files put in place and ``snakemake
  --touch``ed, no job is run): the plan of a re-run with nothing to do; and in the checkout itself
  when its ``results/`` exists (``--nolock``, nothing is run).

Columns: seconds, the ratio to ``python -c pass``, whether torch was imported (``sys.modules``
read in the timed process at its end), the other heavy modules loaded, and the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAVY = ("torch", "transformers", "peft", "pandas", "pyarrow", "scipy.stats", "sklearn", "matplotlib")
#: the last line a timed process prints on stderr: the heavy modules it loaded
MARK = "@@startup-modules "
REPORT = f"import sys, json; print({MARK!r} + json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)"
DRIFTLIB = ("import sys\nfrom driftlib.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code\n"
            f"{REPORT}\nsys.exit(rc)\n")
SNAKEMAKE = (f"import atexit, sys\natexit.register(lambda: exec({REPORT!r}))\n"
             "sys.argv = ['snakemake', *sys.argv[1:]]\nfrom snakemake.cli import main\nmain()\n")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def timed(argv: list[str], repeat: int, cwd: Path | None = None) -> tuple[float, list[str] | None, str]:
    """The fastest wall time of ``repeat`` runs of ``argv``, the heavy modules the last run loaded
    (None when it did not report them) and that run's output; a failed run stops the benchmark."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)
        best = min(best, time.perf_counter() - start)
        if out.returncode != 0:
            sys.exit(f"failed ({out.returncode}): {' '.join(argv)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    marks = [line for line in out.stderr.splitlines() if line.startswith(MARK)]
    return best, (json.loads(marks[-1][len(MARK):]) if marks else None), out.stdout + out.stderr


def scoring_files(folder: Path) -> dict[str, Path]:
    """A prompt table (80 prompts, 2 axioms), hidden states ``[80, 2, 16]`` and a sweep file
    (vectors own and random, 3 lambdas), as the workflow writes them."""
    import numpy as np
    import pandas as pd

    from driftlib.core.artifacts import fingerprint, save_tensors, write_table

    rng = np.random.default_rng(0)
    n, d = 80, 16
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "axiom": ["A"] * (n // 2) + ["B"] * (n // 2),
                            "safety_label": np.where(np.arange(n) % 2 == 0, "safe", "unsafe"), "text": ["t"] * n})
    fp = fingerprint(prompts)
    files = {"prompts": folder / "prompts.parquet", "hidden": folder / "hidden.safetensors",
             "sweep": folder / "sweep.safetensors"}
    write_table(prompts, files["prompts"], metadata={"dataset_fingerprint": fp})
    save_tensors(files["hidden"], {"hidden": rng.standard_normal((n, 2, d)).astype(np.float32)},
                 metadata={"ids": list(prompts["id"]), "dataset_fingerprint": fp, "layers": [0, 1], "n_layers": 2,
                           "model": "m", "variant": "aligned"})
    save_tensors(files["sweep"], {v: rng.standard_normal((3, n, 1, d)).astype(np.float32) for v in ("own", "random")},
                 metadata={"model": "m", "lambdas": [0.0, 0.5, 1.0], "measure_layers": [1], "inject_layers": [1],
                           "kind": "mean_diff_both", "dataset_fingerprint": fp})
    return files


def warm_runs(files: dict[str, Path], repeat: int) -> dict[str, float]:
    """Seconds of the two scoring jobs' phase functions in this process, modules already loaded (the
    fastest of ``repeat`` calls after a first one): what the timed processes spent on the work itself."""
    from driftlib.phases.baseline.scoring import score_activation_file
    from driftlib.phases.same_arch.evaluate import score_sweep

    options = {"n_boot": 50, "n_perm": 10}
    calls = {"score_activation_file": lambda: score_activation_file(files["hidden"], files["prompts"], **options),
             "score_sweep": lambda: score_sweep(files["sweep"], files["prompts"], **options)}
    out = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return out


def code_inputs_seconds(mode: str) -> float:
    """Seconds to compute ``code(command)`` for every command once, in this process: ``"none"``
    (no cache: each call re-reads the CLI and re-parses every module it reaches), ``"process"``
    (the per-process caches, nothing kept on disk: a plan's first run) or ``"disk"`` (the results
    kept on disk by an earlier plan, for an unchanged package)."""
    from driftlib.cli import commands
    from driftlib.cli.codegraph import clear_caches, command_sources

    names = sorted(commands())
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = cache
        try:
            if mode == "disk":
                for name in names:
                    command_sources(name)
            clear_caches()
            start = time.perf_counter()
            for i, name in enumerate(names):
                if mode == "none":
                    clear_caches()
                    os.environ["XDG_CACHE_HOME"] = os.path.join(cache, str(i))
                command_sources(name)
            return time.perf_counter() - start
        finally:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = old


def workflow_copy(folder: Path) -> Path:
    """The workflow and driftlib's sources, without results/ (the Snakefile puts src/ first on its path)."""
    for name in ("Snakefile", "workflow", "profiles", "config", "src"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, folder / name)
    return folder


def fake_results(work: Path) -> None:
    """Every output of the embedded default's plan as an empty file (a folder where the path has no
    suffix: the models and adapters), then ``snakemake --touch`` (no job runs; their times are put in
    the plan's order), so the next plan is the one of a re-run with nothing to do."""
    summary = subprocess.run([str(BIN / "snakemake"), "--summary"], cwd=work, env=ENV, capture_output=True,
                             text=True, timeout=600, check=True).stdout
    for line in summary.splitlines()[1:]:
        path = work / line.split("\t")[0]
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "snakemake"), "--touch", "--cores", "1", "--quiet"], cwd=work, env=ENV,
                   capture_output=True, text=True, timeout=600, check=True)


def jobs_planned(output: str) -> str:
    """The job count of a dry run's summary ("total  264"), or "nothing to be done"."""
    for line in output.splitlines():
        if line.strip().startswith("total"):
            return f"{line.split()[-1]} jobs"
    return "nothing to be done" if "Nothing to be done" in output else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per row (the fastest counts)")
    parser.add_argument("--no-snakemake", action="store_true", help="skip the snakemake -n rows")
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op plan (it fakes every output first)")
    args = parser.parse_args()
    py = sys.executable
    rows: list[tuple[str, float, list[str] | None, str]] = []

    def row(label: str, argv: list[str], target: str = "", repeat: int = args.repeat, cwd: Path | None = None) -> str:
        seconds, modules, output = timed(argv, repeat, cwd)
        rows.append((label, seconds, modules, target))
        return output

    row("python -c pass", [py, "-c", f"pass\n{REPORT}"])
    row("python -c 'import torch'", [py, "-c", f"import torch\n{REPORT}"], repeat=min(args.repeat, 3))
    row("python -c 'import scipy.stats'", [py, "-c", f"import scipy.stats\n{REPORT}"])
    row("python -c 'import sklearn.decomposition'", [py, "-c", f"import sklearn.decomposition\n{REPORT}"])
    row("driftlib score --help", [py, "-c", DRIFTLIB, "score", "--help"], "< 1 s, no torch")
    row("driftlib check-config config/config.yaml", [py, "-c", DRIFTLIB, "check-config",
                                                     str(REPO / "config" / "config.yaml")], "no torch")
    with tempfile.TemporaryDirectory() as tmp:
        files = scoring_files(Path(tmp))
        aqi = ["--bootstrap", "50", "--permutations", "10"]
        row("driftlib score (80 prompts, 2 layers, PCA, 50 resamples)",
            [py, "-c", DRIFTLIB, "-q", "score", "--activations", str(files["hidden"]), "--prompts",
             str(files["prompts"]), *aqi, "--out", str(Path(tmp) / "aqi.parquet")], "< 1 s, no torch")
        row("driftlib score-sweep (2 vectors x 3 lambdas, same)",
            [py, "-c", DRIFTLIB, "-q", "score-sweep", "--sweep", str(files["sweep"]), "--prompts",
             str(files["prompts"]), *aqi, "--out", str(Path(tmp) / "sweep_aqi.parquet")], "< 1 s, no torch")
        for job, (label, work) in zip(rows[-2:], warm_runs(files, args.repeat).items()):
            rows.append((f"  its start-up: wall - in-process {label} ({work:.2f} s)", job[1] - work, job[2],
                         "< 1 s"))
    uncached, cached, kept = (min(code_inputs_seconds(mode) for _ in range(max(1, args.repeat // 2)))
                              for mode in ("none", "process", "disk"))
    rows.append(("code() of every command, nothing cached between calls", uncached, None, ""))
    rows.append(("code() of every command, cached per process (a first plan)", cached, None, ""))
    rows.append(("code() of every command, kept on disk by an earlier plan", kept, None, ""))
    plans = {}
    if not args.no_snakemake:
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
            work = workflow_copy(Path(tmp))
            ENV["XDG_CACHE_HOME"] = cache  # the import graph kept by the first plan serves the others
            label = "snakemake -n (embedded default, no results/, first plan: parses driftlib)"
            out = row(label, [py, "-c", SNAKEMAKE, "-n"], "", repeat=1, cwd=work)
            plans[label] = jobs_planned(out)
            out = row("snakemake -n (embedded default, no results/)", [py, "-c", SNAKEMAKE, "-n"], "< 5 s, no torch",
                      repeat=min(args.repeat, 3), cwd=work)
            plans["snakemake -n (embedded default, no results/)"] = jobs_planned(out)
            if not args.no_noop:
                fake_results(work)
                label = "snakemake -n, every output present (the no-op re-run)"
                out = row(label, [py, "-c", SNAKEMAKE, "-n"], "< 5 s, no torch", repeat=min(args.repeat, 3), cwd=work)
                plans[label] = jobs_planned(out)
        if (REPO / "results").is_dir():
            label = "snakemake -n --nolock in the checkout (its results/)"
            out = row(label, [py, "-c", SNAKEMAKE, "-n", "--nolock"], "< 5 s (no-op re-run)",
                      repeat=min(args.repeat, 3), cwd=REPO)
            plans[label] = jobs_planned(out)

    unit = rows[0][1]
    width = max(len(r[0]) for r in rows)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; fastest of {args.repeat} runs per row")
    print(f"{'':{width}}  {'seconds':>8}  {'x pass':>7}  {'torch':>5}  {'also loaded':<40}  target")
    for label, seconds, modules, target in rows:
        torch = "-" if modules is None else ("yes" if "torch" in modules else "no")
        others = "" if modules is None else ", ".join(m for m in modules if m != "torch")
        extra = f" [{plans[label]}]" if label in plans else ""
        print(f"{label:{width}}  {seconds:8.2f}  {seconds / unit:7.1f}  {torch:>5}  {others:<40}  {target}{extra}")
    print(f"code(): {uncached / cached:.1f}x faster with the per-process caches, {uncached / kept:.1f}x with the "
          "results kept on disk")


if __name__ == "__main__":
    main()
