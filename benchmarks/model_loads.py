#!/usr/bin/env python
"""Count the model loads a full run of a config plans: per model, and per command (a script, not a test).

    .venv/bin/python benchmarks/model_loads.py                       # config/paper.yaml
    .venv/bin/python benchmarks/model_loads.py --configfile config/config.yaml

Plans the whole workflow from scratch (``snakemake -n -p`` in a scratch copy without ``results/``,
nothing is run, nothing is downloaded) and reads every planned ``driftlib`` command: a job loads
each model named by ``--model`` and every ``model`` of an ``--agents`` list once (``--template``
loads a tokenizer only and is not counted; a dealigned agent is its aligned model with an adapter
merged in, so it counts as the aligned model). Prints the loads per model and per command.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_startup import workflow_copy


def planned_commands(configfile: str) -> list[list[str]]:
    """The argv of every planned ``driftlib`` command (redirections dropped)."""
    with tempfile.TemporaryDirectory(prefix="driftlib-loads-") as tmp:
        work = workflow_copy(Path(tmp))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        snakemake = str(Path(sys.executable).with_name("snakemake"))
        run = subprocess.run([snakemake, "-n", "-p", "--cores", "1", "--configfile", configfile], cwd=work, env=env,
                             capture_output=True, text=True, check=False, timeout=600)
        if run.returncode:
            sys.exit(f"snakemake -n failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    prefix = "Shell command: driftlib"
    return [shlex.split(line[len("Shell command: "):].split(" > ")[0])
            for line in run.stdout.splitlines() if line.startswith(prefix)]


def loads(argv: list[str]) -> set[str]:
    """The models one command loads."""
    models = set()
    for i, arg in enumerate(argv[:-1]):
        if arg == "--model":
            models.add(argv[i + 1])
        elif arg == "--agents":
            models.update(agent["model"] for agent in json.loads(argv[i + 1]))
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/paper.yaml")
    args = parser.parse_args()
    per_model: collections.Counter[str] = collections.Counter()
    per_command: collections.Counter[str] = collections.Counter()
    jobs = 0
    for argv in planned_commands(args.configfile):
        models = loads(argv)
        command = next(a for a in argv[1:] if not a.startswith("-"))
        if models:
            per_command[command] += len(models)
        per_model.update(models)
        jobs += bool(models)
    print(f"{args.configfile}: {jobs} jobs load a model, {sum(per_model.values())} loads in all")
    print("\nloads per model:")
    for model, n in sorted(per_model.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{n:6d}  {model}")
    print("\nloads per command:")
    for command, n in per_command.most_common():
        print(f"{n:6d}  {command}")


if __name__ == "__main__":
    main()
