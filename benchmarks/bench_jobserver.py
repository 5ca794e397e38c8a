"""Benchmark: the job server (driftlib.cli.jobserver) against each command in its own process (a
script, not a test).

    .venv/bin/python benchmarks/bench_jobserver.py [--repeat 5] [--workflow none|small|default]

Side by side in this one run, each row the fastest of ``--repeat`` runs, the two ways interleaved:

- ``driftlib --version``: a command that does nothing (the start-up alone);
- ``driftlib score`` on small generated files (bench_startup's: 80 prompts, 50 resamples): a
  numpy-only job;
- ``driftlib extract`` of 60 prompts from a tiny llama of the embedded default's shape (random
  weights): a model job, whose own process imports torch and transformers and their model module.

With ``--workflow small`` (the tests' two-model config, every phase, about 90 jobs) or ``default``
(the embedded default, about 290 jobs: long), the workflow runs twice from scratch in scratch copies,
``job_server`` off and on, one after the other; the rows give the wall time of each and whether every
output file outside ``results/logs`` and ``results/benchmarks`` has the same bytes (a JSON record's
``seconds``, the job's own run time, left out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_startup import ENV, REPO, workflow_copy, scoring_files  # noqa: E402

BIN = Path(sys.executable).parent
DRIFTLIB = str(BIN / "driftlib")


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        if proc.poll() is not None:
            sys.exit(f"the job server exited with {proc.returncode}")
        time.sleep(0.1)


def tiny_model(folder: Path) -> Path:
    """A tiny llama (random weights) with the tiny family's tokenizer, saved in ``folder/m``."""
    import torch
    from transformers import AutoTokenizer

    from driftlib.model import tiny

    tok_dir = tiny.train_tokenizer(folder / "tok")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    model = tiny.new_model("llama", tok).eval()
    model.save_pretrained(folder / "m")
    tok.save_pretrained(folder / "m")
    return folder / "m"


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(argv)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def digest(path: Path) -> str:
    """A file's sha256; a JSON record's without its ``seconds`` (a job's own run time)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        record = json.loads(data)
        if isinstance(record, dict) and "seconds" in record:
            data = json.dumps({k: v for k, v in record.items() if k != "seconds"}, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def outputs(results: Path) -> dict[str, str]:
    """Every output file's digest, by path under ``results`` (logs, benchmarks and the report left out)."""
    skip = ("logs", "benchmarks")
    return {str(p.relative_to(results)): digest(p)
            for p in sorted(results.rglob("*")) if p.is_file() and p.relative_to(results).parts[0] not in skip}


def workflow_rows(which: str, folder: Path) -> list[tuple[str, float, str]]:
    import yaml

    rows, hashes = [], {}
    for server in (False, True):
        work = folder / f"wf-{'on' if server else 'off'}"
        work.mkdir()
        workflow_copy(work)
        if which == "small":
            sys.path.insert(0, str(REPO / "tests"))
            from snakemake_run import SMALL

            (work / "config" / "config.yaml").write_text(yaml.safe_dump({**SMALL, "job_server": server}))
            config = []
        else:
            config = ["--config", f"job_server={server}"]
        seconds = run([str(BIN / "snakemake"), "--cores", "all", *config], work, ENV)
        hashes[server] = outputs(work / "results")
        rows.append((f"snakemake ({which}), job_server {'on' if server else 'off'}", seconds, ""))
    same = "same outputs" if hashes[False] == hashes[True] else (
        "OUTPUTS DIFFER: " + ", ".join(sorted(k for k in hashes[False] if hashes[False][k] != hashes[True].get(k)))[:500])
    rows[-1] = (*rows[-1][:2], f"{len(hashes[True])} files, {same}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (the fastest counts)")
    parser.add_argument("--workflow", choices=["none", "small", "default"], default="none",
                        help="also run a whole workflow both ways")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-js-") as tmp:
        folder = Path(tmp)
        files = scoring_files(folder)
        tiny_model(folder)
        subprocess.run([DRIFTLIB, "-q", "prepare-prompts", "--per-group", "5", "--out", "p.parquet"], cwd=folder,
                       env=ENV, check=True)
        commands = {
            "driftlib --version": ["--version"],
            "driftlib score (numpy only)": ["-q", "score", "--activations", str(files["hidden"]), "--prompts",
                                            str(files["prompts"]), "--bootstrap", "50", "--permutations", "10",
                                            "--out", "s.parquet"],
            "driftlib extract (tiny llama, 60 prompts)": [
                "-q", "extract", "--model", "m", "--dtype", "float32", "--device", "cpu", "--name", "llama",
                "--variant", "base", "--texts", "p.parquet", "--layers", "1", "--pooling", "last", "--out", "h.st"],
        }
        sock = folder / "s.sock"
        with open(folder / "server.log", "w") as log:
            server = subprocess.Popen([DRIFTLIB + "-jobserver", "--socket", str(sock)], env=ENV, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(sock, server)
            own_env, served_env = {**ENV, "OMP_NUM_THREADS": "1"}, {**ENV, "OMP_NUM_THREADS": "1",
                                                                     "DRIFTLIB_SERVER": str(sock)}
            rows = []
            for label, argv in commands.items():
                best = {"own": float("inf"), "served": float("inf")}
                for _ in range(args.repeat):
                    best["own"] = min(best["own"], run([DRIFTLIB, *argv], folder, own_env))
                    best["served"] = min(best["served"], run([DRIFTLIB, *argv], folder, served_env))
                rows.append((label, best["own"], best["served"]))
            served = (folder / "server.log").read_text().count(" in pid ")
        finally:
            os.killpg(server.pid, 9)
            server.wait()
        if served != args.repeat * len(commands):
            sys.exit(f"the server ran {served} commands, not {args.repeat * len(commands)}")
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; best of {args.repeat}")
        print(f"{'command':45s} {'own process':>12s} {'served':>8s} {'ratio':>6s}")
        for label, own, fork in rows:
            print(f"{label:45s} {own:11.2f}s {fork:7.2f}s {fork / own:6.2f}")
        if args.workflow != "none":
            for label, seconds, note in workflow_rows(args.workflow, folder):
                print(f"{label:45s} {seconds:11.1f}s  {note}")


if __name__ == "__main__":
    main()
